package imagecache

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestChunks(t *testing.T) {
	const kib = 1 << 10
	path, want := sparseFile(t, t.TempDir(), "img", 1<<20, map[int64][]byte{
		10:        pattern(100*kib, 1),
		512 * kib: pattern(200*kib+7, 2),
	})
	ranges := dataRanges(t, path)
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()

	got := make([]byte, len(want))
	var pieces [][2]int64
	sum, size, dataBytes, err := Chunks(t.Context(), f, 48*kib, func(off int64, data []byte) error {
		assert.LessOrEqual(t, len(data), 48*kib)
		assert.NotEmpty(t, data)
		if n := len(pieces); n > 0 {
			assert.GreaterOrEqual(t, off, pieces[n-1][1], "ascending, not overlapping")
		}
		pieces = append(pieces, [2]int64{off, off + int64(len(data))})
		copy(got[off:], data)
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, digest(want), sum)
	assert.Equal(t, int64(len(want)), size)
	assert.Equal(t, want, got, "the pieces and zeros between them rebuild the file")

	// The pieces cover the data ranges exactly.
	var merged [][2]int64
	var sent int64
	for _, p := range pieces {
		sent += p[1] - p[0]
		if n := len(merged); n > 0 && merged[n-1][1] == p[0] {
			merged[n-1][1] = p[1]
			continue
		}
		merged = append(merged, p)
	}
	assert.Equal(t, ranges, merged)
	assert.Equal(t, sent, dataBytes)

	s2, err := FileSHA256(t.Context(), f)
	require.NoError(t, err)
	assert.Equal(t, sum, s2)

	// The default piece size is MaxChunk.
	_, _, _, err = Chunks(t.Context(), f, 0, func(_ int64, data []byte) error {
		assert.LessOrEqual(t, len(data), MaxChunk)
		return nil
	})
	require.NoError(t, err)
}

func TestChunksDense(t *testing.T) {
	p := pattern(3*MaxChunk+5, 3)
	path := filepath.Join(t.TempDir(), "dense")
	require.NoError(t, os.WriteFile(path, p, 0o644))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	n := 0
	sum, size, dataBytes, err := Chunks(t.Context(), f, -1, func(off int64, data []byte) error {
		assert.Equal(t, int64(n*MaxChunk), off)
		n++
		return nil
	})
	require.NoError(t, err)
	assert.Equal(t, 4, n)
	assert.Equal(t, digest(p), sum)
	assert.Equal(t, int64(len(p)), size)
	assert.Equal(t, size, dataBytes)
}

func TestChunksEmptyAndHoleOnly(t *testing.T) {
	for _, size := range []int64{0, 3 << 20} {
		path, want := sparseFile(t, t.TempDir(), "f", size, nil)
		f, err := os.Open(path)
		require.NoError(t, err)
		var dataBytes int64
		sum, gotSize, _, err := Chunks(t.Context(), f, 0, func(_ int64, data []byte) error {
			dataBytes += int64(len(data))
			for _, b := range data {
				if b != 0 {
					t.Fatal("data in a file of zeros")
				}
			}
			return nil
		})
		f.Close()
		require.NoError(t, err)
		assert.Equal(t, digest(want), sum)
		assert.Equal(t, size, gotSize)
		if r := dataRanges(t, path); len(r) == 0 {
			assert.Zero(t, dataBytes, "a file of holes sends nothing")
		}
	}
}

func TestChunksStops(t *testing.T) {
	path, _ := sparseFile(t, t.TempDir(), "f", 1<<20, map[int64][]byte{0: pattern(1<<20, 1)})
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()

	boom := errors.New("stream broken")
	calls := 0
	_, _, _, err = Chunks(t.Context(), f, 64<<10, func(int64, []byte) error {
		calls++
		if calls == 3 {
			return boom
		}
		return nil
	})
	require.ErrorIs(t, err, boom)
	assert.Equal(t, 3, calls)

	ctx, cancel := context.WithCancel(t.Context())
	calls = 0
	_, _, _, err = Chunks(ctx, f, 64<<10, func(int64, []byte) error {
		calls++
		if calls == 2 {
			cancel()
		}
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 2, calls)

	_, err = FileSHA256(ctx, f)
	require.ErrorIs(t, err, context.Canceled)

	_, _, _, err = Chunks(t.Context(), f, 0, nil)
	require.Error(t, err)
}

func TestChunksNotRegular(t *testing.T) {
	d, err := os.Open(t.TempDir())
	require.NoError(t, err)
	defer d.Close()
	_, err = FileSHA256(t.Context(), d)
	require.ErrorContains(t, err, "not a regular file")
}

// Ranges passes the same pieces as Chunks, and hashes nothing.
func TestRangesIsChunksWithoutTheHash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(8<<20))
	_, err = f.WriteAt([]byte("data at one MiB"), 1<<20)
	require.NoError(t, err)
	type piece struct {
		off int64
		n   int
	}
	var viaChunks, viaRanges []piece
	_, size, data, err := Chunks(context.Background(), f, 4096, func(off int64, p []byte) error { viaChunks = append(viaChunks, piece{off, len(p)}); return nil })
	require.NoError(t, err)
	size2, data2, err := Ranges(context.Background(), f, 4096, func(off int64, p []byte) error { viaRanges = append(viaRanges, piece{off, len(p)}); return nil })
	require.NoError(t, err)
	assert.Equal(t, viaChunks, viaRanges)
	assert.Equal(t, size, size2)
	assert.Equal(t, data, data2)
	assert.NotEmpty(t, viaRanges)
}
