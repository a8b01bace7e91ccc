package flash

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The hole rule: without a bmap the target ends byte-identical to the image
// (holes zeroed), SkipHoles or a bmap leave the target's bytes where the
// image has none.

// filled writes n bytes of b at path.
func filled(t *testing.T, path string, n int, b byte) string {
	t.Helper()
	return writeFile(t, path, bytes.Repeat([]byte{b}, n))
}

// holeyImage writes the case: a 3 MiB raw image, data in its first
// and last MiB, a 1 MiB hole between, plus tail extra bytes of hole at the
// end (to make its size unaligned). It skips where the file system keeps no
// holes.
func holeyImage(t *testing.T, dir string, tail int64) (path string, img []byte) {
	t.Helper()
	path = filepath.Join(dir, "os.img")
	img = sparseImage(t, path, 3<<20+tail, [][2]int64{{0, 1 << 20}, {2 << 20, 3 << 20}})
	holesSupported(t, path)
	return path, img
}

// requireImage checks, byte for byte, that the file or device at target
// starts with want, and that the rest of it is after. A difference is
// reported by its first offset and how many bytes differ.
func requireImage(t *testing.T, target string, want []byte, after byte) {
	t.Helper()
	got := mustRead(t, target)
	require.GreaterOrEqual(t, len(got), len(want), "%s is shorter than the image", target)
	first, n := -1, 0
	for i := range got {
		w := after
		if i < len(want) {
			w = want[i]
		}
		if got[i] != w {
			if first < 0 {
				first = i
			}
			n++
		}
	}
	if n > 0 {
		w := after
		if first < len(want) {
			w = want[first]
		}
		t.Fatalf("%s differs in %d of %d bytes, first at byte %d: %#02x, want %#02x", target, n, len(got), first, got[first], w)
	}
}

func TestWriteWithoutBmapMakesTheTargetTheImage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path, img := holeyImage(t, dir, 0)
	for _, c := range []struct {
		name     string
		o        Options
		zeroedBy string
	}{
		{"default", Options{}, "punch-hole"},
		{"NoDirect", Options{NoDirect: true}, "punch-hole"},
		{"small buffers and syncs", Options{BufferSize: 64 << 10, SyncEvery: 256 << 10}, "punch-hole"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			target := filled(t, filepath.Join(t.TempDir(), "disk"), 4<<20, 0xff)
			var readBack atomic.Int64
			o := c.o
			o.faults = &faults{readBack: func(p []byte, off int64) { readBack.Add(int64(len(p))) }}
			rep, err := Write(context.Background(), path, target, o)
			require.NoError(t, err)
			requireImage(t, target, img, 0xff) // and nothing past the image touched
			// The punched hole is a hole of the target file: known zeros,
			// checked without reading them.
			assert.Equal(t, rep.MappedBytes, readBack.Load())
			assert.Equal(t, ModeFull, rep.Mode)
			assert.False(t, rep.Sparse)
			assert.Equal(t, int64(3<<20), rep.Bytes)
			assert.Equal(t, int64(2<<20), rep.MappedBytes)
			assert.Equal(t, int64(1<<20), rep.ZeroedBytes)
			assert.InDelta(t, 2.0/3, rep.MappedFraction, 1e-9)
			assert.Equal(t, c.zeroedBy, rep.ZeroedBy)
			assert.True(t, rep.Verified)
		})
	}
}

func TestZeroingFallsBackToWritingZeros(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path, img := holeyImage(t, dir, 0)
	for _, c := range []struct {
		refuse   []zeroMethod
		zeroedBy string
	}{
		{[]zeroMethod{zeroPunch}, "zero-range"},
		{[]zeroMethod{zeroPunch, zeroZeroRange}, "write"},
	} {
		t.Run(c.zeroedBy, func(t *testing.T) {
			t.Parallel()
			refuse := func(m zeroMethod) bool { return slices.Contains(c.refuse, m) }
			target := filled(t, filepath.Join(t.TempDir(), "disk"), 3<<20, 0xff)
			rep, err := Write(context.Background(), path, target, Options{BufferSize: 256 << 10, faults: &faults{refuseZero: refuse}})
			require.NoError(t, err)
			requireImage(t, target, img, 0xff)
			assert.Equal(t, c.zeroedBy, rep.ZeroedBy)
			assert.Equal(t, int64(1<<20), rep.ZeroedBytes)
			assert.True(t, rep.Verified)
		})
	}
}

func TestABlankImageBlanksTheTarget(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "blank.img")
	require.NoError(t, os.WriteFile(path, nil, 0o644))
	require.NoError(t, os.Truncate(path, 5<<20)) // all hole
	f, err := os.Open(path)
	require.NoError(t, err)
	ext, ok := dataExtents(f, 5<<20)
	f.Close()
	if !ok || len(ext) != 0 {
		t.Skip("the file system does not report holes")
	}
	target := filled(t, filepath.Join(dir, "disk"), 5<<20, 0xff)
	rep, err := Write(context.Background(), path, target, Options{SyncEvery: 1 << 20})
	require.NoError(t, err)
	requireImage(t, target, make([]byte, 5<<20), 0)
	assert.Equal(t, ModeFull, rep.Mode)
	assert.Zero(t, rep.MappedBytes)
	assert.Equal(t, int64(5<<20), rep.ZeroedBytes)
	assert.Equal(t, int64(5<<20), rep.Bytes)
	assert.True(t, rep.Verified)

	// SkipHoles asks for what a blank image did before: nothing.
	filled(t, target, 5<<20, 0xff)
	rep, err = Write(context.Background(), path, target, Options{SkipHoles: true})
	require.NoError(t, err)
	requireImage(t, target, nil, 0xff)
	assert.Equal(t, ModeSkipHoles, rep.Mode)
	assert.Zero(t, rep.MappedBytes+rep.ZeroedBytes)
}

func TestSkipHolesKeepsTheOldBytes(t *testing.T) {
	dir := t.TempDir()
	path, img := holeyImage(t, dir, 0)
	target := filled(t, filepath.Join(dir, "disk"), 3<<20, 0xff)
	rep, err := Write(context.Background(), path, target, Options{SkipHoles: true})
	require.NoError(t, err)
	want := bytes.Clone(img)
	copy(want[1<<20:2<<20], bytes.Repeat([]byte{0xff}, 1<<20))
	requireImage(t, target, want, 0)
	assert.Equal(t, ModeSkipHoles, rep.Mode)
	assert.True(t, rep.Sparse)
	assert.Equal(t, int64(2<<20), rep.MappedBytes)
	assert.Zero(t, rep.ZeroedBytes)

	// A raw image without holes is written whole: SkipHoles changes
	// nothing, and the report says the target is the image.
	dense := writeFile(t, filepath.Join(dir, "dense.img"), img)
	rep, err = Write(context.Background(), dense, target, Options{SkipHoles: true})
	require.NoError(t, err)
	requireImage(t, target, img, 0)
	assert.Equal(t, ModeFull, rep.Mode)
}

func TestNoBmapRefusesTheBmapBesideTheImage(t *testing.T) {
	dir := t.TempDir()
	path, img := holeyImage(t, dir, 0)
	// The bmap maps the first MiB only: with it, the rest is left alone.
	writeFile(t, path+".bmap", []byte(bmapDoc(img, 4096, [][2]int64{{0, 255}}, "2.0", "")))
	target := filled(t, filepath.Join(dir, "disk"), 3<<20, 0xff)
	rep, err := Write(context.Background(), path, target, Options{})
	require.NoError(t, err)
	assert.Equal(t, ModeBmap, rep.Mode)
	assert.Equal(t, path+".bmap", rep.Bmap)
	assert.Zero(t, rep.ZeroedBytes)
	requireImage(t, target, append(bytes.Clone(img[:1<<20]), bytes.Repeat([]byte{0xff}, 2<<20)...), 0)

	filled(t, target, 3<<20, 0xff)
	rep, err = Write(context.Background(), path, target, Options{NoBmap: true})
	require.NoError(t, err)
	assert.Equal(t, ModeFull, rep.Mode)
	assert.Empty(t, rep.Bmap)
	assert.Equal(t, int64(1<<20), rep.ZeroedBytes)
	requireImage(t, target, img, 0)

	// NoBmap wins over a bmap given in Options too.
	filled(t, target, 3<<20, 0xff)
	rep, err = Write(context.Background(), path, target, Options{NoBmap: true, Bmap: path + ".bmap"})
	require.NoError(t, err)
	assert.Empty(t, rep.Bmap)
	requireImage(t, target, img, 0)
}

func TestZeroedRangesAreVerified(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path, _ := holeyImage(t, dir, 0)
	// A device that claims to have zeroed the hole but did nothing.
	lie := &faults{zero: func(off, n int64) (bool, error) { return true, nil }}
	target := filled(t, filepath.Join(dir, "disk"), 3<<20, 0xff)
	rep, err := Write(context.Background(), path, target, Options{faults: lie})
	require.ErrorIs(t, err, ErrVerify)
	require.ErrorIs(t, err, ErrTarget)
	assert.Contains(t, err.Error(), "byte 1048576 reads back as 0xff")
	assert.Contains(t, err.Error(), "does not zero reliably")
	assert.False(t, rep.Verified)

	// NoVerify does not look.
	_, err = Write(context.Background(), path, target, Options{NoVerify: true})
	require.NoError(t, err)
}

func TestAFailedZeroingFailsTheFlash(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path, _ := holeyImage(t, dir, 0)
	eio := &faults{zero: func(off, n int64) (bool, error) {
		return false, &os.PathError{Op: "fallocate", Path: "disk", Err: syscall.EIO}
	}}
	target := filled(t, filepath.Join(dir, "disk"), 3<<20, 0xff)
	rep, err := Write(context.Background(), path, target, Options{faults: eio})
	require.ErrorIs(t, err, ErrTarget)
	require.ErrorIs(t, err, syscall.EIO)
	assert.Contains(t, err.Error(), "zeroing 1048576 bytes of "+target+" at offset 1048576 (a hole of the image) failed: the disk went away or failed")
	assert.Contains(t, err.Error(), "must be flashed again")
	assert.False(t, rep.Verified)
	assert.Zero(t, rep.ZeroedBytes)
}

func TestANewFileTargetGetsTheImagesHoles(t *testing.T) {
	dir := t.TempDir()
	path, img := holeyImage(t, dir, 1000) // an unaligned size, the end a hole
	target := writeFile(t, filepath.Join(dir, "new"), nil)
	rep, err := Write(context.Background(), path, target, Options{})
	require.NoError(t, err)
	requireImage(t, target, img, 0)
	assert.Len(t, mustRead(t, target), len(img))
	assert.Equal(t, ModeFull, rep.Mode)
	assert.True(t, rep.Verified)
}
