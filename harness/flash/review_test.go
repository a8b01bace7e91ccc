package flash

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Regression tests for what an independent review of the engine found.

func TestEachWrittenByteIsReadBackOnce(t *testing.T) {
	t.Parallel()
	img, target := imageAndTarget(t, "os.img")
	var readBack atomic.Int64
	count := &faults{readBack: func(p []byte, off int64) { readBack.Add(int64(len(p))) }}
	rep, err := Write(context.Background(), img, target, Options{NoHashCache: true, faults: count})
	require.NoError(t, err)
	assert.Equal(t, rep.MappedBytes, readBack.Load(), "the last segment is not verified twice")
}

func TestCancelDuringASyncSaysHowFarTheWriteGot(t *testing.T) {
	t.Parallel()
	img, target := imageAndTarget(t, "os.img")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The verifier notices the cancel first (as it does while a slow fsync
	// runs): the error must still be the write's, saying how far it got.
	noticed := make(chan struct{})
	var once atomic.Bool
	f := &faults{}
	f.verifyFailed = func(error) {
		if once.CompareAndSwap(false, true) {
			close(noticed)
		}
	}
	f.synced = func(n int64) {
		if n >= 1<<20 {
			cancel() // Ctrl-C or the deadline while fsync runs
			select {
			case <-noticed:
			case <-time.After(10 * time.Second): // a bound only
			}
		}
	}
	_, err := Write(ctx, img, target, Options{NoHashCache: true, BufferSize: 256 << 10, SyncEvery: 1 << 20, faults: f})
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "stopped at image offset")
	assert.Contains(t, err.Error(), "must be flashed again")
}

func TestWriteLeavesNoHasherBehind(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sparse.img")
	f, err := os.Create(path)
	require.NoError(t, err)
	_, err = f.WriteAt(bytes.Repeat([]byte{7}, 4096), 0)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(256<<30)) // 256 GiB, all hole but 4 KiB: minutes of hashing
	require.NoError(t, f.Close())
	target := writeFile(t, filepath.Join(dir, "disk"), nil) // growable
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Write(ctx, path, target, Options{NoHashCache: true, NoVerify: true})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 10*time.Second, "the hasher stops on cancel, holes included")
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	assert.NotContains(t, string(buf[:n]), "flash.hashFile", "Write waited for its hasher")
	assert.NotContains(t, string(buf[:n]), "flash.(*teeHasher)", "Write waited for its hasher")
}

// With a bmap of 512-byte blocks a range may start off a 4 KiB boundary; its
// read-back must still come from the medium, not the page cache the write
// filled. The loop device's backing file plays a medium that lost bytes.
func TestReadBackOfAnUnalignedRangeComesFromTheMedium(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		bs       int64
		ranges   [][2]int64
		noDirect bool
	}{
		{"bs512-unaligned-direct", 512, [][2]int64{{1, 40}}, false},
		{"bs512-unaligned-nodirect", 512, [][2]int64{{1, 40}}, true},
		{"bs4096-aligned-direct", 4096, [][2]int64{{1, 5}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dev, backing := loopDevice(t, 2<<20)
			r := rand.New(rand.NewPCG(1, 2))
			img := make([]byte, 1<<20)
			for i := range img {
				img[i] = byte(r.IntN(256))
			}
			dir := t.TempDir()
			path := writeFile(t, filepath.Join(dir, "os.img"), img)
			writeFile(t, filepath.Join(dir, "os.img.bmap"), []byte(bmapDoc(img, tc.bs, tc.ranges, "2.0", "")))
			corrupted := false
			corrupt := func(int64) {
				if corrupted {
					return
				}
				corrupted = true
				bf, err := os.OpenFile(backing, os.O_WRONLY, 0)
				require.NoError(t, err)
				_, err = bf.WriteAt(bytes.Repeat([]byte{0x55}, 100), 10000) // inside the range
				require.NoError(t, err)
				require.NoError(t, bf.Sync())
				require.NoError(t, bf.Close())
			}
			rep, err := Write(context.Background(), path, dev, Options{NoHashCache: true, NoDirect: tc.noDirect, faults: &faults{synced: corrupt}})
			require.ErrorIs(t, err, ErrVerify)
			assert.False(t, rep.Verified)
			assert.True(t, strings.Contains(err.Error(), "read back with crc32c"), err.Error())
		})
	}
}
