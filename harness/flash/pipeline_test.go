package flash

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMain keeps the tests' image hashes out of the user's cache.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "flash-test-cache-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CACHE_HOME", dir)
	racyWindow = 0 // the tests' images are written just before they are flashed
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestWriteRemembersTheImageHashUntilTheFileChanges(t *testing.T) {
	dir := t.TempDir()
	data := testImage()
	img := writeFile(t, filepath.Join(dir, "os.img"), data)
	target := writeFile(t, filepath.Join(dir, "disk"), make([]byte, 4<<20))
	o := Options{HashCacheDir: filepath.Join(dir, "cache"), BufferSize: 256 << 10}
	skipWithoutFileKeys(t, img)

	rep, err := Write(context.Background(), img, target, o)
	require.NoError(t, err)
	assert.False(t, rep.SHA256Cached)
	assert.Equal(t, sha(data), rep.SHA256)
	rep, err = Write(context.Background(), img, target, o)
	require.NoError(t, err)
	require.True(t, rep.SHA256Cached, "the second flash of the same file takes the hash from the cache")
	assert.Equal(t, sha(data), rep.SHA256)

	// Changed in place, with size and modification time put back: the
	// status-change time still tells.
	st, err := os.Stat(img)
	require.NoError(t, err)
	data[12345] ^= 0xff
	require.NoError(t, os.WriteFile(img, data, 0o644))
	require.NoError(t, os.Chtimes(img, st.ModTime(), st.ModTime()))
	rep, err = Write(context.Background(), img, target, o)
	require.NoError(t, err)
	assert.False(t, rep.SHA256Cached)
	assert.Equal(t, sha(data), rep.SHA256)
	got, err := os.ReadFile(target)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, got[:len(data)]))

	// Replaced by another file of the same size under the same name.
	other := bytes.Clone(data)
	other[0] ^= 0xff
	require.NoError(t, os.Remove(img))
	writeFile(t, img, other)
	rep, err = Write(context.Background(), img, target, o)
	require.NoError(t, err)
	assert.False(t, rep.SHA256Cached)
	assert.Equal(t, sha(other), rep.SHA256)

	// NoHashCache computes it every time.
	rep, err = Write(context.Background(), img, target, Options{NoHashCache: true, HashCacheDir: o.HashCacheDir})
	require.NoError(t, err)
	assert.False(t, rep.SHA256Cached)
	assert.Equal(t, sha(other), rep.SHA256)
}

// imageAndTarget writes testImage as name (zstd-packed for a .zst name) and
// a 4 MiB target into a new directory.
func imageAndTarget(t *testing.T, name string) (img, target string) {
	dir := t.TempDir()
	data := testImage()
	if strings.HasSuffix(name, ".zst") {
		data = compress(t, Zstd, data)
	}
	return writeFile(t, filepath.Join(dir, name), data), writeFile(t, filepath.Join(dir, "disk"), make([]byte, 4<<20))
}

func TestWriteFailsWhenTheImageChangesWhileFlashed(t *testing.T) {
	for _, name := range []string{"os.img", "os.img.zst"} {
		for _, how := range []string{"grows", "shrinks"} {
			t.Run(name+"/"+how, func(t *testing.T) {
				img, target := imageAndTarget(t, name)
				changed := false
				rep, err := Write(context.Background(), img, target, Options{NoHashCache: true, BufferSize: 64 << 10, ProgressEvery: 64 << 10, Progress: func(p Progress) {
					if changed || p.Done == 0 {
						return
					}
					changed = true
					if how == "shrinks" {
						st, err := os.Stat(img)
						require.NoError(t, err)
						require.NoError(t, os.Truncate(img, st.Size()/2))
						return
					}
					f, err := os.OpenFile(img, os.O_WRONLY|os.O_APPEND, 0)
					require.NoError(t, err)
					_, err = f.WriteString("more")
					require.NoError(t, err)
					require.NoError(t, f.Close())
				}})
				require.True(t, changed)
				require.ErrorIs(t, err, ErrImage)
				assert.Contains(t, err.Error(), "changed while it was flashed")
				assert.Empty(t, rep.SHA256, "no hash is reported for an image that changed")
				assert.False(t, rep.Verified)
			})
		}
	}
}

func TestWriteUnpacksXzWithTheCommandOrBuiltIn(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("no xz command (apt-get install xz-utils)")
	}
	data := testImage()
	dir := t.TempDir()
	img := writeFile(t, filepath.Join(dir, "os.img.xz"), compress(t, Xz, data))
	for _, pureGo := range []bool{false, true} {
		target := writeFile(t, filepath.Join(dir, "disk"), make([]byte, 4<<20))
		rep, err := Write(context.Background(), img, target, Options{PureGo: pureGo})
		require.NoError(t, err)
		if pureGo {
			assert.Equal(t, "built-in", rep.Decoder)
		} else {
			assert.Contains(t, rep.Decoder, "xz -d -T0")
		}
		got, err := os.ReadFile(target)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(data, got[:len(data)]), "pureGo=%v", pureGo)
		assert.True(t, rep.Verified)
	}
	// A truncated stream fails on both paths, the command's one with its
	// own words.
	packed := compress(t, Xz, data)
	bad := writeFile(t, filepath.Join(dir, "truncated.xz"), packed[:len(packed)/2])
	target := writeFile(t, filepath.Join(dir, "disk"), make([]byte, 4<<20))
	_, err := Write(context.Background(), bad, target, Options{})
	require.ErrorIs(t, err, ErrImage)
	assert.Contains(t, err.Error(), "corrupt or truncated")
	assert.Contains(t, err.Error(), "xz said")
	_, err = Write(context.Background(), bad, target, Options{PureGo: true})
	require.ErrorIs(t, err, ErrImage)
	assert.Contains(t, err.Error(), "corrupt or truncated")
}

// children returns the pids of this process's children.
func children(t *testing.T) []string {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/children")
	require.NoError(t, err)
	var pids []string
	for _, c := range tasks {
		b, err := os.ReadFile(c)
		if err == nil {
			pids = append(pids, strings.Fields(string(b))...)
		}
	}
	return pids
}

func TestWriteCancelledWhileDecompressingStopsTheDecoder(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("no xz command (apt-get install xz-utils)")
	}
	if _, err := os.Stat("/proc/self/task"); err != nil {
		t.Skip("needs /proc")
	}
	dir := t.TempDir()
	data := bytes.Repeat(testImage(), 4) // 12 MiB
	cmd := exec.Command("xz", "-c", "-0", "-T0")
	cmd.Stdin = bytes.NewReader(data)
	packed, err := cmd.Output()
	require.NoError(t, err)
	img := writeFile(t, filepath.Join(dir, "os.img.xz"), packed)
	target := writeFile(t, filepath.Join(dir, "disk"), make([]byte, 16<<20))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var during []string
	rep, err := Write(ctx, img, target, Options{BufferSize: 256 << 10, Buffers: 2, ProgressEvery: 1 << 20, Progress: func(p Progress) {
		if during == nil {
			during = children(t)
			cancel()
		}
	}})
	require.ErrorIs(t, err, context.Canceled)
	assert.NotEmpty(t, during, "xz ran as a child process")
	assert.Empty(t, children(t), "the xz process is gone when Write returns")
	assert.Contains(t, err.Error(), fmt.Sprintf("stopped at image offset %d (unpacked)", rep.Bytes))
	assert.Less(t, rep.Bytes, int64(len(data)))
	assert.False(t, rep.Verified)
	assert.Empty(t, rep.SHA256)
}

func TestWriteFailsClearlyWhenTheTargetGoesAway(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"os.img", "os.img.zst"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			img, target := imageAndTarget(t, name)
			gone := func(off int64, n int) error {
				if off >= 1<<20 {
					return &os.PathError{Op: "write", Path: target, Err: syscall.EIO}
				}
				return nil
			}
			rep, err := Write(context.Background(), img, target, Options{BufferSize: 256 << 10, faults: &faults{write: gone}})
			require.ErrorIs(t, err, ErrTarget)
			require.ErrorIs(t, err, syscall.EIO)
			assert.Contains(t, err.Error(), "at offset 1048576 failed: the disk went away or failed")
			assert.Contains(t, err.Error(), "the target is incomplete and must be flashed again")
			assert.False(t, rep.Verified)
			assert.Equal(t, int64(1<<20), rep.MappedBytes, "what reached the target before the failure")
		})
	}
}

func TestReadBackMismatchStopsTheWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := bytes.Repeat(testImage(), 2) // 6 MiB
	img := writeFile(t, filepath.Join(dir, "os.img"), data)
	target := writeFile(t, filepath.Join(dir, "disk"), make([]byte, 8<<20))
	f := &faults{readBack: func(p []byte, off int64) {
		if off <= 1<<20+7 && 1<<20+7 < off+int64(len(p)) {
			p[1<<20+7-off] ^= 1 // the medium lost a bit
		}
	}}
	// Every MiB is synced and handed to the read-back, which finds the
	// bad bit while the write goes on (held at 4 MiB until then); the
	// write then stops at its next sync.
	found := make(chan struct{})
	f.verifyFailed = func(error) { close(found) }
	f.write = func(off int64, n int) error {
		if off >= 4<<20 {
			select {
			case <-found:
			case <-time.After(10 * time.Second): // bound only: found comes first
			}
		}
		return nil
	}
	rep, err := Write(context.Background(), img, target, Options{BufferSize: 256 << 10, SyncEvery: 1 << 20, faults: f})
	require.ErrorIs(t, err, ErrVerify)
	assert.Contains(t, err.Error(), "bytes 1048576-2097151")
	assert.Contains(t, err.Error(), fmt.Sprintf("%08x was written", crcOf(data[1<<20:2<<20])))
	assert.False(t, rep.Verified)
	assert.LessOrEqual(t, rep.MappedBytes, int64(5<<20), "the write stopped at the sync after the mismatch was found")
}

func TestWriteRefusesATargetItsDriverDoesNotRecognise(t *testing.T) {
	img, target := imageAndTarget(t, "os.img")
	before := mustRead(t, target)
	notMine := errors.New("serial 1234 is not this board's disk")
	var checked string
	rep, err := Write(context.Background(), img, target, Options{CheckTarget: func(f *os.File) error {
		checked = f.Name()
		return notMine
	}})
	require.ErrorIs(t, err, ErrTarget)
	require.ErrorIs(t, err, notMine)
	assert.Contains(t, err.Error(), "is not this device's disk")
	assert.Equal(t, target, checked)
	assert.Zero(t, rep.MappedBytes)
	assert.Equal(t, before, mustRead(t, target), "nothing was written")

	_, err = Write(context.Background(), img, target, Options{CheckTarget: func(*os.File) error { return nil }})
	require.NoError(t, err)
}

func TestAFileChangedJustNowIsNotRemembered(t *testing.T) {
	t.Parallel()
	img, target := imageAndTarget(t, "os.img")
	hour := time.Hour
	o := Options{HashCacheDir: filepath.Join(t.TempDir(), "cache"), faults: &faults{racyWindow: &hour}}
	for range 2 {
		rep, err := Write(context.Background(), img, target, o)
		require.NoError(t, err)
		assert.False(t, rep.SHA256Cached, "times within a clock tick of a rewrite prove nothing")
	}
}

// skipWithoutFileKeys skips a test of the hash cache on a file system that
// cannot tell an inode's generation (overlayfs, as in containers and this
// project's new-machine CI chroot): the cache then remembers nothing, by
// design.
func skipWithoutFileKeys(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	fi, err := f.Stat()
	require.NoError(t, err)
	if fileKey(f, fi) == "" {
		t.Skipf("the file system of %s gives no inode generation, so the hash cache remembers nothing here", path)
	}
}

// A truncated stream with a bmap stops past its mapped ranges: the error
// must tell the image offset reached from the bytes that reached the
// target, and say the latter is what was written.
func TestATruncatedStreamWithABmapSaysWhatReachedTheTarget(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(7, 8))
	img := make([]byte, 8<<20) // incompressible: the cut is about half-way into the image
	for i := range img {
		img[i] = byte(r.IntN(256))
	}
	packed := compress(t, Zstd, img)
	path := writeFile(t, filepath.Join(dir, "os.img.zst"), packed[:len(packed)/2])
	bmap := writeFile(t, filepath.Join(dir, "os.img.bmap"), []byte(bmapDoc(img, 4096, [][2]int64{{0, 255}}, "2.0", "")))
	target := writeFile(t, filepath.Join(dir, "disk"), make([]byte, 8<<20))
	rep, err := Write(context.Background(), path, target, Options{Bmap: bmap, NoHashCache: true, BufferSize: 256 << 10})
	require.ErrorIs(t, err, ErrImage)
	assert.Contains(t, err.Error(), "corrupt or truncated")
	assert.Equal(t, int64(1<<20), rep.MappedBytes, "the mapped MiB was written")
	assert.Greater(t, rep.Bytes, rep.MappedBytes, "the stream went on past it")
	assert.Contains(t, err.Error(), fmt.Sprintf("at image offset %d (%d bytes written to the target)", rep.Bytes, rep.MappedBytes))
}
