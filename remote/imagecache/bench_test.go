package imagecache

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// BenchmarkUpload measures WriteChunk+Commit of a dense 256 MiB file in
// 4 MiB chunks: writing, hashing, the final fsync and rename.
func BenchmarkUpload(b *testing.B) {
	const size = 256 << 20
	chunk := pattern(MaxChunk, 1)
	h := sha256.New()
	for range size / MaxChunk {
		h.Write(chunk)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	b.SetBytes(size)
	for b.Loop() {
		c, err := Open(b.TempDir(), size)
		if err != nil {
			b.Fatal(err)
		}
		u, err := c.Begin(Header{SHA256: sum, Size: size, Name: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < size; off += MaxChunk {
			if err := u.WriteChunk(off, chunk); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := u.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}
