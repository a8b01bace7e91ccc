package flash

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/ulikunitz/xz"
)

// image returns 3 MiB that compress well but not trivially.
func testImage() []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 3<<20)
	for i := range b {
		if i%4096 < 512 {
			b[i] = byte(r.IntN(256))
		}
	}
	return b
}

func compress(t testing.TB, f Format, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch f {
	case Raw:
		return data
	case Gzip:
		w := gzip.NewWriter(&buf)
		_, err := w.Write(data)
		require.NoError(t, err)
		require.NoError(t, w.Close())
	case Zstd:
		w, err := zstd.NewWriter(&buf)
		require.NoError(t, err)
		_, err = w.Write(data)
		require.NoError(t, err)
		require.NoError(t, w.Close())
	case Xz:
		w, err := xz.NewWriter(&buf)
		require.NoError(t, err)
		_, err = w.Write(data)
		require.NoError(t, err)
		require.NoError(t, w.Close())
	case Bzip2:
		bz, err := exec.LookPath("bzip2")
		if err != nil {
			t.Skip("bzip2 not installed (apt-get install bzip2): the standard library only decodes bzip2")
		}
		cmd := exec.Command(bz, "-c")
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.Output()
		require.NoError(t, err)
		return out
	}
	return buf.Bytes()
}

func TestWriteUnpacksEveryFormat(t *testing.T) {
	data := testImage()
	for _, f := range []Format{Raw, Gzip, Xz, Zstd, Bzip2} {
		t.Run(string(f), func(t *testing.T) {
			dir := t.TempDir()
			packed := compress(t, f, data)
			// A misleading name: the format comes from the bytes.
			img := writeFile(t, filepath.Join(dir, "image.raw"), packed)
			target := writeFile(t, filepath.Join(dir, "disk"), make([]byte, 4<<20))
			rep, err := Write(context.Background(), img, target, Options{BufferSize: 256 << 10})
			require.NoError(t, err)
			assert.Equal(t, f, rep.Format)
			assert.Equal(t, int64(len(data)), rep.Bytes)
			sum := sha256.Sum256(packed)
			assert.Equal(t, hex.EncodeToString(sum[:]), rep.SHA256, "the SHA-256 is the image file's")
			got, err := os.ReadFile(target)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(data, got[:len(data)]), "unpacked content on the target")
		})
	}
}

func TestWriteFailsOnCorruptOrTruncatedStreams(t *testing.T) {
	data := testImage()
	for _, f := range []Format{Gzip, Xz, Zstd, Bzip2} {
		t.Run(string(f), func(t *testing.T) {
			dir := t.TempDir()
			packed := compress(t, f, data)
			img := writeFile(t, filepath.Join(dir, "truncated"), packed[:len(packed)*2/3])
			target := writeFile(t, filepath.Join(dir, "disk"), make([]byte, 4<<20))
			_, err := Write(context.Background(), img, target, Options{})
			require.ErrorIs(t, err, ErrImage)
			assert.Contains(t, err.Error(), "corrupt or truncated")

			bad := bytes.Clone(packed)
			for i := len(bad) / 2; i < len(bad)/2+64; i++ {
				bad[i] ^= 0x5a
			}
			img = writeFile(t, filepath.Join(dir, "corrupt"), bad)
			_, err = Write(context.Background(), img, target, Options{})
			require.Error(t, err, "a corrupt %s stream must not flash as success", f)
		})
	}
}

func TestWriteRefusesACompressedImageTooBigForTheTarget(t *testing.T) {
	dir := t.TempDir()
	data := testImage()
	img := writeFile(t, filepath.Join(dir, "os.img.zst"), compress(t, Zstd, data))
	target := writeFile(t, filepath.Join(dir, "disk"), make([]byte, 1<<20))
	rep, err := Write(context.Background(), img, target, Options{BufferSize: 256 << 10})
	require.ErrorIs(t, err, ErrImage)
	require.ErrorIs(t, err, ErrTooBig)
	assert.Contains(t, err.Error(), "holds 1048576 bytes, the zstd-compressed image")
	assert.Contains(t, err.Error(), "unpacks to more")
	assert.LessOrEqual(t, rep.Bytes, int64(1<<20))
	st, err := os.Stat(target)
	require.NoError(t, err)
	assert.Equal(t, int64(1<<20), st.Size(), "the target did not grow")
}

func TestDetect(t *testing.T) {
	assert.Equal(t, Gzip, Detect([]byte{0x1f, 0x8b, 8}))
	assert.Equal(t, Xz, Detect([]byte{0xfd, '7', 'z', 'X', 'Z', 0, 0}))
	assert.Equal(t, Zstd, Detect([]byte{0x28, 0xb5, 0x2f, 0xfd, 1}))
	assert.Equal(t, Bzip2, Detect([]byte("BZh91AY")))
	assert.Equal(t, Raw, Detect([]byte("BZh0")))
	assert.Equal(t, Raw, Detect([]byte{0xeb, 0x63, 0x90})) // an MBR's jump
	assert.Equal(t, Raw, Detect(nil))
}

// FuzzDetect checks format detection and the decoders on arbitrary bytes:
// a format is claimed only on its full magic and by its first 8 bytes
// alone; the decoder agrees with Detect; and flashing the bytes as an image
// either fails as a bad image or writes exactly what the decoder unpacks.
func FuzzDetect(f *testing.F) {
	f.Add([]byte{0x1f, 0x8b})
	f.Add([]byte("BZh9"))
	f.Add([]byte{0xfd, '7', 'z', 'X', 'Z', 0})
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd})
	small := bytes.Repeat([]byte("fuzz"), 300)
	for _, fm := range []Format{Gzip, Zstd} {
		f.Add(compress(f, fm, small))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		got := Detect(b)
		if len(b) > 8 {
			require.Equal(t, got, Detect(b[:8]), "detection looks at the first 8 bytes only")
		}
		if got != Raw {
			found := false
			for _, m := range magics {
				found = found || (m.f == got && bytes.HasPrefix(b, m.magic))
			}
			require.True(t, found || (got == Bzip2 && bytes.HasPrefix(b, []byte("BZh"))), "format %s claimed without its magic", got)
		}
		r, format, closeFn, err := decoder(bytes.NewReader(b))
		if err != nil {
			require.NotEqual(t, Raw, got, "a raw image always has a decoder")
			return
		}
		defer closeFn()
		require.Equal(t, got, format)
		want, derr := io.ReadAll(io.LimitReader(r, 1<<20))
		if len(b) == 0 || len(want) >= 1<<20 {
			return // nothing to flash, or a bomb: not for this test
		}
		img := filepath.Join(dir, "img")
		target := filepath.Join(dir, "disk")
		require.NoError(t, os.WriteFile(img, b, 0o644))
		require.NoError(t, os.WriteFile(target, make([]byte, 1<<20), 0o644))
		rep, err := Write(context.Background(), img, target, Options{PureGo: true, NoHashCache: true, NoBmap: true})
		if derr != nil {
			require.ErrorIs(t, err, ErrImage, "a stream the decoder rejects must not flash")
			return
		}
		require.NoError(t, err)
		require.True(t, rep.Verified)
		disk, err := os.ReadFile(target)
		require.NoError(t, err)
		require.Equal(t, want, disk[:len(want)])
	})
}
