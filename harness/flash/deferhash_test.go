package flash

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A sparse image with a bmap: the hash is taken by a second reader of the
// file, which DeferHash lets Write not wait for.
func deferCase(t *testing.T) (img []byte, path, target string) {
	t.Helper()
	dir := t.TempDir()
	path = filepath.Join(dir, "os.img")
	img = sparseImage(t, path, 4<<20, [][2]int64{{0, 1 << 20}, {3 << 20, 4 << 20}})
	writeFile(t, path+".bmap", []byte(bmapDoc(img, 4096, [][2]int64{{0, 255}, {768, 1023}}, "2.0", "")))
	target = filled(t, filepath.Join(dir, "disk"), 4<<20, 0xff)
	return img, path, target
}

func TestDeferHashReturnsBeforeTheHashAndItIsExact(t *testing.T) {
	t.Parallel()
	img, path, target := deferCase(t)
	release := make(chan struct{})
	hold := &faults{hashed: func() { // the hash is slow
		select {
		case <-release:
		case <-time.After(10 * time.Second): // a bound only, if Write waited
		}
	}}
	rep, err := Write(context.Background(), path, target, Options{NoHashCache: true, DeferHash: true, faults: hold})
	require.NoError(t, err)
	assert.True(t, rep.Verified)
	assert.Equal(t, ModeBmap, rep.Mode)
	want := append([]byte(nil), img...)
	copy(want[1<<20:3<<20], bytes.Repeat([]byte{0xff}, 2<<20)) // not mapped: left as it was
	requireImage(t, target, want, 0xff)
	require.NotNil(t, rep.Hash)
	assert.Empty(t, rep.SHA256, "not complete when Write returned")
	select {
	case <-rep.Hash.Done():
		t.Fatal("Write waited for the hash")
	default:
	}
	assert.False(t, rep.Hash.Cached())
	assert.Zero(t, rep.Hash.Duration(), "no duration before it is complete")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = rep.Hash.Wait(ctx)
	require.ErrorIs(t, err, context.Canceled, "Wait is bounded by its ctx")

	close(release)
	sum, err := rep.Hash.Wait(context.Background())
	require.NoError(t, err)
	assert.Equal(t, sha(img), sum)
	assert.Positive(t, rep.Hash.Duration())
}

func TestDeferredHashFailsWhenTheImageChangesMeanwhile(t *testing.T) {
	t.Parallel()
	_, path, target := deferCase(t)
	release := make(chan struct{})
	hold := &faults{hashed: func() { <-release }}
	cache := filepath.Join(t.TempDir(), "cache")
	rep, err := Write(context.Background(), path, target, Options{HashCacheDir: cache, DeferHash: true, faults: hold})
	require.NoError(t, err)
	// Changed after Write returned, before its hash was complete.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.Write([]byte("more"))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	close(release)
	_, err = rep.Hash.Wait(context.Background())
	require.ErrorIs(t, err, ErrImage)
	assert.Contains(t, err.Error(), "changed while it was flashed")
	entries, _ := os.ReadDir(cache)
	assert.Empty(t, entries, "no hash of neither version is remembered")
}

func TestDeferredHashIsRememberedForTheNextFlash(t *testing.T) {
	t.Parallel()
	img, path, target := deferCase(t)
	skipWithoutFileKeys(t, path)
	o := Options{HashCacheDir: filepath.Join(t.TempDir(), "cache"), DeferHash: true}
	rep, err := Write(context.Background(), path, target, o)
	require.NoError(t, err)
	sum, err := rep.Hash.Wait(context.Background())
	require.NoError(t, err)
	assert.Equal(t, sha(img), sum)

	rep, err = Write(context.Background(), path, target, o)
	require.NoError(t, err)
	require.True(t, rep.SHA256Cached)
	assert.True(t, rep.Hash.Cached())
	assert.Equal(t, sha(img), rep.SHA256, "a cached hash is in the Report at once")
	select {
	case <-rep.Hash.Done():
	default:
		t.Fatal("a cached hash is complete")
	}
}

func TestAFailedWriteStopsItsDeferredHash(t *testing.T) {
	t.Parallel()
	_, path, target := deferCase(t)
	gone := &faults{write: func(off int64, n int) error { return errors.New("unplugged") }}
	rep, err := Write(context.Background(), path, target, Options{NoHashCache: true, DeferHash: true, faults: gone})
	require.ErrorIs(t, err, ErrTarget)
	require.NotNil(t, rep.Hash)
	select {
	case <-rep.Hash.Done(): // Write stopped it and waited
	default:
		t.Fatal("the hasher outlived the failed Write")
	}
}

func TestStopAbandonsADeferredHash(t *testing.T) {
	t.Parallel()
	img, path, target := deferCase(t)
	rep, err := Write(context.Background(), path, target, Options{NoHashCache: true, DeferHash: true})
	require.NoError(t, err)
	rep.Hash.Stop()
	select {
	case <-rep.Hash.Done():
	default:
		t.Fatal("Stop returned before the hash ended")
	}
	sum, err := rep.Hash.Wait(context.Background())
	if err == nil {
		assert.Equal(t, sha(img), sum, "complete before Stop: it stays, exact")
	} else {
		require.ErrorIs(t, err, errHashStopped)
	}
}

func TestWithoutDeferHashTheReportHasTheHash(t *testing.T) {
	t.Parallel()
	img, path, target := deferCase(t)
	rep, err := Write(context.Background(), path, target, Options{NoHashCache: true})
	require.NoError(t, err)
	assert.Equal(t, sha(img), rep.SHA256)
	sum, err := rep.Hash.Wait(context.Background())
	require.NoError(t, err)
	assert.Equal(t, rep.SHA256, sum)
}

func TestTheHashOfAnImageWhoseBmapLeavesDataOutIsTheFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "os.img")
	img := sparseImage(t, path, 4<<20, [][2]int64{{0, 1 << 20}, {3 << 20, 4 << 20}})
	writeFile(t, path+".bmap", []byte(bmapDoc(img, 4096, [][2]int64{{0, 255}}, "2.0", ""))) // not the last MiB
	target := filled(t, filepath.Join(dir, "disk"), 4<<20, 0xff)
	for _, deferred := range []bool{false, true} {
		rep, err := Write(context.Background(), path, target, Options{NoHashCache: true, DeferHash: deferred})
		require.NoError(t, err)
		sum, err := rep.Hash.Wait(context.Background())
		require.NoError(t, err)
		assert.Equal(t, sha(img), sum, "deferred %v", deferred)
		assert.Equal(t, int64(1<<20), rep.MappedBytes)
	}
}
