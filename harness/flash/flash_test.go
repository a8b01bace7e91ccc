package flash

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	require.NoError(t, os.WriteFile(path, data, 0o644))
	return path
}

func TestWriteCopiesHashesAndReports(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("jumpstarter"), 100_000) // ~1.1 MB, several buffers
	img := writeFile(t, filepath.Join(dir, "os.img"), data)
	target := writeFile(t, filepath.Join(dir, "disk"), make([]byte, 2<<20))
	var progress []Progress
	rep, err := Write(context.Background(), img, target, Options{BufferSize: 256 << 10, ProgressEvery: 512 << 10, Progress: func(p Progress) { progress = append(progress, p) }})
	require.NoError(t, err)
	sum := sha256.Sum256(data)
	assert.Equal(t, hex.EncodeToString(sum[:]), rep.SHA256)
	assert.Equal(t, int64(len(data)), rep.Bytes)
	assert.Greater(t, rep.MBps(), 0.0)
	got, err := os.ReadFile(target)
	require.NoError(t, err)
	assert.Equal(t, data, got[:len(data)])
	assert.Equal(t, make([]byte, len(got)-len(data)), got[len(data):], "nothing written past the image")
	require.GreaterOrEqual(t, len(progress), 3)
	assert.Equal(t, int64(len(data)), progress[len(progress)-1].Done)
}

func TestWriteRefusesBadInputWithoutWriting(t *testing.T) {
	dir := t.TempDir()
	img := writeFile(t, filepath.Join(dir, "os.img"), bytes.Repeat([]byte{1}, 4096))
	small := writeFile(t, filepath.Join(dir, "small"), bytes.Repeat([]byte{7}, 1024))
	empty := writeFile(t, filepath.Join(dir, "empty.img"), nil)
	cases := []struct {
		name, image, target string
		is                  error
		want                string
	}{
		{"missing image", filepath.Join(dir, "nope.img"), small, ErrImage, "does not exist"},
		{"no image", "", small, ErrImage, "set DUT_IMAGE"},
		{"image is a directory", dir, small, ErrImage, "not a regular file"},
		{"empty image", empty, small, ErrImage, "is empty"},
		{"target too small", img, small, ErrTooBig, "holds 1024 bytes"},
		{"missing target", img, filepath.Join(dir, "nodisk"), ErrTarget, "no such file"},
		{"target is a directory", img, dir, ErrTarget, "neither a block device nor a regular file"},
	}
	if os.Geteuid() != 0 { // root reads anything
		noread := writeFile(t, filepath.Join(dir, "noread.img"), bytes.Repeat([]byte{1}, 4096))
		require.NoError(t, os.Chmod(noread, 0))
		cases = append(cases, struct {
			name, image, target string
			is                  error
			want                string
		}{"unreadable image", noread, small, ErrImage, "permission denied"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Write(context.Background(), c.image, c.target, Options{})
			require.ErrorIs(t, err, c.is)
			assert.Contains(t, err.Error(), c.want)
			got, _ := os.ReadFile(small)
			assert.Equal(t, bytes.Repeat([]byte{7}, 1024), got, "the target is untouched")
		})
	}
}

func TestWriteStopsWhenCancelled(t *testing.T) {
	dir := t.TempDir()
	img := writeFile(t, filepath.Join(dir, "os.img"), make([]byte, 1<<20))
	target := writeFile(t, filepath.Join(dir, "disk"), make([]byte, 1<<20))
	ctx, cancel := context.WithCancel(context.Background())
	rep, err := Write(ctx, img, target, Options{BufferSize: 64 << 10, ProgressEvery: 64 << 10, Progress: func(p Progress) {
		if p.Done >= 256<<10 {
			cancel()
		}
	}})
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "must be flashed again")
	assert.Equal(t, int64(256<<10), rep.Bytes)
}
