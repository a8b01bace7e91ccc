package imagecache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// sparseFile writes a file of size bytes holding data at the given offsets
// and holes elsewhere, and returns its path and its whole content.
func sparseFile(t testing.TB, dir, name string, size int64, data map[int64][]byte) (string, []byte) {
	t.Helper()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, f.Truncate(size))
	want := make([]byte, size)
	for off, p := range data {
		_, err := f.WriteAt(p, off)
		require.NoError(t, err)
		copy(want[off:], p)
	}
	require.NoError(t, f.Close())
	return path, want
}

// pattern returns n pseudo-random bytes, the same for the same seed.
func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(seed), 0x1ca5e))
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// digest returns the hex SHA-256 of p.
func digest(p []byte) string {
	s := sha256.Sum256(p)
	return hex.EncodeToString(s[:])
}

// uploadFile sends the file at path into c as a client would: FileSHA256,
// Begin, Chunks into WriteChunk, Commit. tamper, when set, may change a
// chunk's data before it is sent.
func uploadFile(t testing.TB, c *Cache, path string, tamper func(off int64, data []byte)) (Result, error) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	ctx := context.Background()
	sum, err := FileSHA256(ctx, f)
	require.NoError(t, err)
	fi, err := f.Stat()
	require.NoError(t, err)
	u, err := c.Begin(Header{SHA256: sum, Size: fi.Size(), Name: filepath.Base(path)})
	if err != nil {
		return Result{}, err
	}
	defer u.Abort()
	sum2, _, _, err := Chunks(ctx, f, 64<<10, func(off int64, data []byte) error {
		if tamper != nil {
			tamper(off, data)
		}
		return u.WriteChunk(off, data)
	})
	if err != nil {
		return Result{}, err
	}
	require.Equal(t, sum, sum2, "the file changed between FileSHA256 and Chunks")
	return u.Commit()
}

// dataRanges returns the data ranges of the file at path as the cache's
// reader sees them.
func dataRanges(t testing.TB, path string) [][2]int64 {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	fi, err := f.Stat()
	require.NoError(t, err)
	var r [][2]int64
	for off := int64(0); off < fi.Size(); {
		s, e, err := nextData(f, off, fi.Size())
		require.NoError(t, err)
		if s < e {
			r = append(r, [2]int64{s, e})
		}
		off = e
	}
	return r
}

// listDir returns the names in dir, sorted.
func listDir(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	slices.Sort(names)
	return names
}
