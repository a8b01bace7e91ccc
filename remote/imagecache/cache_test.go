package imagecache

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRoundTripSparse(t *testing.T) {
	src := t.TempDir()
	const mib = 1 << 20
	path, want := sparseFile(t, src, "os.img", 8*mib+1000, map[int64][]byte{
		0:           pattern(4096, 1),
		1 * mib:     pattern(64<<10, 2),
		5*mib + 123: pattern(300<<10, 3), // unaligned, several chunks of 64 KiB
		8 * mib:     pattern(1000, 4),    // the tail, up to the size
	})
	srcRanges := dataRanges(t, path)
	var srcData int64
	for _, r := range srcRanges {
		srcData += r[1] - r[0]
	}

	c, err := Open(filepath.Join(t.TempDir(), "cache"), 64*mib)
	require.NoError(t, err)
	res, err := uploadFile(t, c, path, nil)
	require.NoError(t, err)

	assert.Equal(t, digest(want), res.SHA256, "the digest is that of the file read plainly")
	assert.Equal(t, int64(len(want)), res.Size)
	assert.Equal(t, "os.img", res.Name)
	assert.False(t, res.AlreadyCached)
	assert.Equal(t, srcData, res.Received, "the data ranges travelled")
	if len(srcRanges) == 1 && srcRanges[0] == [2]int64{0, int64(len(want))} {
		t.Skipf("the file system of %s does not report holes: nothing sparse to check", src)
	}
	assert.Less(t, res.Received, res.Size, "the holes did not travel")

	size, ok := c.Has(res.SHA256)
	require.True(t, ok)
	assert.Equal(t, res.Size, size)
	assert.Equal(t, 1, c.Len())
	assert.Equal(t, res.Size, c.Bytes())

	cached, release, err := c.Acquire(res.SHA256)
	require.NoError(t, err)
	defer release()
	assert.Equal(t, filepath.Join(c.Dir(), res.SHA256), cached)
	got, err := os.ReadFile(cached)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, got), "the cached file's bytes are the original's")

	// Sparse where the source was: the same data ranges, the same blocks.
	assert.Equal(t, srcRanges, dataRanges(t, cached))
	if sb, ok := allocated(t, path); ok {
		cb, _ := allocated(t, cached)
		assert.Equal(t, sb, cb, "allocated bytes, source and cached")
		assert.Less(t, cb, res.Size)
	}

	// No temporary file left.
	assert.Equal(t, []string{res.SHA256}, listDir(t, c.Dir()))
}

func TestEmptyFile(t *testing.T) {
	path, _ := sparseFile(t, t.TempDir(), "empty", 0, nil)
	c, err := Open(t.TempDir(), 100)
	require.NoError(t, err)
	res, err := uploadFile(t, c, path, nil)
	require.NoError(t, err)
	assert.Equal(t, digest(nil), res.SHA256)
	assert.Zero(t, res.Received)
	size, ok := c.Has(res.SHA256)
	assert.True(t, ok)
	assert.Zero(t, size)
}

func TestMismatch(t *testing.T) {
	path, _ := sparseFile(t, t.TempDir(), "os.img", 1<<20, map[int64][]byte{
		0:         pattern(100<<10, 1),
		512 << 10: pattern(100<<10, 2),
	})
	c, err := Open(t.TempDir(), 10<<20)
	require.NoError(t, err)
	// Something cached beforehand, which must stay as it is.
	other, _ := sparseFile(t, t.TempDir(), "other", 5000, map[int64][]byte{0: pattern(5000, 9)})
	prev, err := uploadFile(t, c, other, nil)
	require.NoError(t, err)
	before := listDir(t, c.Dir())

	flipped := false
	_, err = uploadFile(t, c, path, func(off int64, data []byte) {
		if off >= 512<<10 && !flipped {
			data[17] ^= 0x40
			flipped = true
		}
	})
	require.True(t, flipped)
	require.ErrorIs(t, err, ErrMismatch)
	require.ErrorIs(t, err, ErrInvalid, "a mismatch is an invalid argument too")
	assert.NotContains(t, err.Error(), prev.SHA256)
	f, _ := os.Open(path)
	sum, _ := FileSHA256(t.Context(), f)
	f.Close()
	assert.Contains(t, err.Error(), sum, "the message names the header's digest")
	assert.Regexp(t, `hash to [0-9a-f]{64}, not the header's [0-9a-f]{64}`, err.Error())

	assert.Equal(t, 1, c.Len())
	assert.Equal(t, prev.Size, c.Bytes())
	assert.Equal(t, before, listDir(t, c.Dir()), "no new file, no temporary file")
	_, ok := c.Has(sum)
	assert.False(t, ok)
}

func TestRefusals(t *testing.T) {
	data := pattern(10000, 5)
	sum := digest(data)
	padded := append(append([]byte(nil), data...), pattern(5000, 6)...) // for chunks past the end
	ok := Header{SHA256: sum, Size: int64(len(data)), Name: "f"}
	type chunk struct {
		off int64
		n   int // data[off:off+n]
	}
	for _, tc := range []struct {
		name   string
		h      Header
		chunks []chunk
		want   error // at Begin, WriteChunk or Commit
		msg    string
	}{
		{"size larger than the data", Header{sum, int64(len(data)) + 1, "f"}, []chunk{{0, len(data)}}, ErrMismatch, "hash to"},
		{"size smaller than the data", Header{sum, int64(len(data)) - 1, "f"}, []chunk{{0, len(data)}}, ErrInvalid, "past the header's size 9999"},
		{"overlapping chunk", ok, []chunk{{0, 6000}, {5000, 5000}}, ErrInvalid, "chunk at offset 5000 (5000 bytes) starts before the end of the previous chunk at 6000"},
		{"descending chunk", ok, []chunk{{5000, 5000}, {0, 5000}}, ErrInvalid, "chunk at offset 0 (5000 bytes) starts before the end of the previous chunk at 10000"},
		{"chunk past size", ok, []chunk{{0, 5000}, {6000, 5000}}, ErrInvalid, "ends at 11000, past the header's size 10000"},
		{"negative offset", ok, []chunk{{-1, 10}}, ErrInvalid, "offset -1"},
		{"missing chunk", ok, []chunk{{0, 5000}}, ErrMismatch, "(5000 of them data)"},
		{"digest upper-case", Header{strings.ToUpper(sum), ok.Size, "f"}, nil, ErrInvalid, "64 lower-case hex digits"},
		{"digest short", Header{sum[:63], ok.Size, "f"}, nil, ErrInvalid, "is not a SHA-256"},
		{"digest not hex", Header{"g" + sum[1:], ok.Size, "f"}, nil, ErrInvalid, "is not a SHA-256"},
		{"digest empty", Header{"", ok.Size, "f"}, nil, ErrInvalid, "is not a SHA-256"},
		{"negative size", Header{sum, -1, "f"}, nil, ErrInvalid, "negative size"},
		{"too large", Header{sum, 20001, "big.img"}, nil, ErrTooLarge, `upload "big.img": invalid argument: too large for the cache: 20001 bytes, the cache holds at most 20000`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Open(t.TempDir(), 20000)
			require.NoError(t, err)
			err = func() error {
				u, err := c.Begin(tc.h)
				if err != nil {
					return err
				}
				defer u.Abort()
				for _, ch := range tc.chunks {
					p := padded[max(ch.off, 0):][:ch.n]
					if err := u.WriteChunk(ch.off, p); err != nil {
						// The upload is over: Commit says the same.
						_, err2 := u.Commit()
						require.Equal(t, err, err2)
						return err
					}
				}
				_, err = u.Commit()
				return err
			}()
			require.ErrorIs(t, err, tc.want)
			require.ErrorIs(t, err, ErrInvalid)
			assert.Contains(t, err.Error(), tc.msg)
			assert.Zero(t, c.Len())
			assert.Zero(t, c.Bytes())
			assert.Empty(t, listDir(t, c.Dir()), "nothing cached, no temporary file")
		})
	}
	t.Run("the same chunks in order pass", func(t *testing.T) {
		c, err := Open(t.TempDir(), 20000)
		require.NoError(t, err)
		u, err := c.Begin(ok)
		require.NoError(t, err)
		require.NoError(t, u.WriteChunk(0, data[:5000]))
		require.NoError(t, u.WriteChunk(5000, data[5000:5000]))
		require.NoError(t, u.WriteChunk(5000, data[5000:]))
		res, err := u.Commit()
		require.NoError(t, err)
		assert.Equal(t, Result{SHA256: sum, Size: 10000, Name: "f", Received: 10000}, res)
		_, err = u.Commit()
		assert.ErrorContains(t, err, "already committed")
		assert.Error(t, u.WriteChunk(10000, nil))
		u.Abort() // does nothing after Commit
		assert.Equal(t, 1, c.Len())
	})
}

func TestAbort(t *testing.T) {
	data := pattern(1000, 1)
	c, err := Open(t.TempDir(), 1<<20)
	require.NoError(t, err)
	u, err := c.Begin(Header{SHA256: digest(data), Size: 1000, Name: "f"})
	require.NoError(t, err)
	require.NoError(t, u.WriteChunk(0, data[:500]))
	require.Len(t, listDir(t, c.Dir()), 1, "the temporary file")
	assert.True(t, strings.HasPrefix(listDir(t, c.Dir())[0], tempPrefix))
	u.Abort()
	u.Abort()
	assert.Empty(t, listDir(t, c.Dir()))
	assert.Error(t, u.WriteChunk(500, data[500:]))
	_, err = u.Commit()
	assert.ErrorContains(t, err, "aborted")
	assert.Zero(t, c.Len())
}

// TestAlreadyCached: an upload of a digest the cache holds only verifies
// the data, holding the cached file against eviction meanwhile.
func TestAlreadyCached(t *testing.T) {
	data := pattern(1000, 1)
	h := Header{SHA256: digest(data), Size: 1000, Name: "f"}
	c, err := Open(t.TempDir(), 1500)
	require.NoError(t, err)
	u, err := c.Begin(h)
	require.NoError(t, err)
	assert.False(t, u.AlreadyCached())
	require.NoError(t, u.WriteChunk(0, data))
	_, err = u.Commit()
	require.NoError(t, err)
	before := listDir(t, c.Dir())

	// Right data: verified, AlreadyCached, nothing written.
	u, err = c.Begin(h)
	require.NoError(t, err)
	assert.True(t, u.AlreadyCached())
	assert.Equal(t, before, listDir(t, c.Dir()), "no temporary file for a verify-only upload")
	require.NoError(t, u.WriteChunk(100, data[100:]))
	_, err = u.Commit()
	require.ErrorIs(t, err, ErrMismatch, "the first 100 bytes were not zeros")

	u, err = c.Begin(h)
	require.NoError(t, err)
	require.NoError(t, u.WriteChunk(0, data[:400]))
	// Meanwhile the verified file is pinned: another upload that would
	// evict it cannot.
	other := pattern(1000, 2)
	u2, err := c.Begin(Header{SHA256: digest(other), Size: 1000, Name: "g"})
	require.NoError(t, err)
	require.NoError(t, u2.WriteChunk(0, other))
	_, err = u2.Commit()
	require.NoError(t, err)
	_, ok := c.Has(h.SHA256)
	assert.True(t, ok, "the file a verify-only upload reads against is pinned")
	assert.Equal(t, int64(2000), c.Bytes(), "over the bound while pinned")

	require.NoError(t, u.WriteChunk(400, data[400:]))
	res, err := u.Commit()
	require.NoError(t, err)
	assert.Equal(t, Result{SHA256: h.SHA256, Size: 1000, Name: "f", Received: 1000, AlreadyCached: true}, res)
	// The pin released, the cache trims to its bound: the verified file,
	// touched at its Begin, is older than the other one uploaded since.
	assert.Equal(t, 1, c.Len())
	assert.LessOrEqual(t, c.Bytes(), c.MaxBytes())
	_, ok = c.Has(digest(other))
	assert.True(t, ok)
}

func TestEviction(t *testing.T) {
	c, err := Open(t.TempDir(), 2500) // fits 2 of 3 images of 1000 bytes
	require.NoError(t, err)
	img := map[string][]byte{"a": pattern(1000, 'a'), "b": pattern(1000, 'b'), "c": pattern(1000, 'c')}
	sum := map[string]string{}
	for k, p := range img {
		sum[k] = digest(p)
	}
	put := func(k string) Result {
		t.Helper()
		u, err := c.Begin(Header{SHA256: sum[k], Size: 1000, Name: k})
		require.NoError(t, err)
		require.NoError(t, u.WriteChunk(0, img[k]))
		res, err := u.Commit()
		require.NoError(t, err)
		return res
	}
	has := func(keys ...string) {
		t.Helper()
		var got []string
		for _, k := range []string{"a", "b", "c"} {
			if _, ok := c.Has(sum[k]); ok {
				got = append(got, k)
			}
		}
		assert.Equal(t, keys, got)
		var onDisk []string
		for _, name := range listDir(t, c.Dir()) {
			for k, s := range sum {
				if name == s {
					onDisk = append(onDisk, k)
				}
			}
		}
		assert.ElementsMatch(t, keys, onDisk, "the directory holds what the index does")
		assert.Equal(t, int64(1000*len(keys)), c.Bytes())
		assert.Len(t, listDir(t, c.Dir()), len(keys))
	}

	put("a")
	put("b")
	has("a", "b")
	// Using a makes b the least recently used.
	_, release, err := c.Acquire(sum["a"])
	require.NoError(t, err)
	release()
	release() // idempotent
	put("c")
	has("a", "c")

	// a, the least recently used, is pinned: c is evicted instead.
	_, release, err = c.Acquire(sum["a"])
	require.NoError(t, err)
	// (Acquire touched a: make c the most recent again to keep a the LRU.)
	_, r2, err := c.Acquire(sum["c"])
	require.NoError(t, err)
	r2()
	put("b") // order b, c, a(pinned): over by 500, c goes
	has("a", "b")

	// Everything pinned but the upload just made: the cache goes over its
	// bound, and trims when the pins are released.
	_, releaseB, err := c.Acquire(sum["b"]) // order b, a
	require.NoError(t, err)
	_, releaseB2, err := c.Acquire(sum["b"]) // b pinned twice
	require.NoError(t, err)
	put("c") // c, b, a: c is not evicted by its own upload
	has("a", "b", "c")
	assert.Greater(t, c.Bytes(), c.MaxBytes())
	releaseB() // b still pinned once: nothing trimmed
	has("a", "b", "c")
	release() // a unpinned, the least recently used: trimmed
	has("b", "c")
	releaseB2()
	has("b", "c")

	// Gone files fail Acquire with ErrNotCached.
	_, _, err = c.Acquire(sum["a"])
	require.ErrorIs(t, err, ErrNotCached)
	assert.Contains(t, err.Error(), "upload it first")
	_, _, err = c.Acquire("nope")
	require.ErrorIs(t, err, ErrInvalid)
	_, ok := c.Has("nope")
	assert.False(t, ok)

	// A file removed behind the cache's back is forgotten at Acquire.
	require.NoError(t, os.Remove(filepath.Join(c.Dir(), sum["b"])))
	_, _, err = c.Acquire(sum["b"])
	require.ErrorIs(t, err, ErrNotCached)
	has("c")
}

func TestOpenAfterCrash(t *testing.T) {
	dir := t.TempDir()
	data := pattern(1234, 1)
	good := digest(data)
	write := func(name string, p []byte) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), p, 0o644))
	}
	write(".upload-x", []byte("half an upload"))
	write(".upload-123456", nil)
	write(good, data)
	junk := []string{
		"notes.txt",
		good[:63],
		strings.ToUpper(digest([]byte("x"))),
		digest([]byte("y")) + ".part",
		".hidden",
	}
	for _, name := range junk {
		write(name, []byte("junk"))
	}
	subdir := digest([]byte("a directory"))
	require.NoError(t, os.Mkdir(filepath.Join(dir, subdir), 0o755))
	link := digest([]byte("a link"))
	require.NoError(t, os.Symlink(good, filepath.Join(dir, link)))

	c, err := Open(dir, 1<<20)
	require.NoError(t, err)
	assert.Equal(t, 1, c.Len())
	assert.Equal(t, int64(1234), c.Bytes())
	size, ok := c.Has(good)
	assert.True(t, ok)
	assert.Equal(t, int64(1234), size)
	for _, name := range []string{subdir, link, digest([]byte("x"))} {
		_, ok := c.Has(name)
		assert.False(t, ok, name)
	}
	left := listDir(t, dir)
	assert.NotContains(t, left, ".upload-x")
	assert.NotContains(t, left, ".upload-123456")
	want := append([]string{good, subdir, link}, junk...)
	assert.ElementsMatch(t, want, left, "junk is ignored, not removed")

	// Opening a directory that does not exist creates it.
	c, err = Open(filepath.Join(dir, "new", "cache"), 10)
	require.NoError(t, err)
	assert.Zero(t, c.Len())
	assert.DirExists(t, c.Dir())

	_, err = Open(t.TempDir(), -1)
	assert.Error(t, err)
}

// TestOpenTrims: files present beyond the bound are evicted, the least
// recently modified first.
func TestOpenTrims(t *testing.T) {
	dir := t.TempDir()
	var sums []string
	base := time.Now().Add(-time.Hour)
	for i := range 3 {
		p := pattern(1000, byte(i))
		s := digest(p)
		sums = append(sums, s)
		path := filepath.Join(dir, s)
		require.NoError(t, os.WriteFile(path, p, 0o644))
		mt := base.Add(time.Duration(i) * time.Minute)
		require.NoError(t, os.Chtimes(path, mt, mt))
	}
	// sums[1] entered most recently.
	mt := base.Add(10 * time.Minute)
	require.NoError(t, os.Chtimes(filepath.Join(dir, sums[1]), mt, mt))

	c, err := Open(dir, 2000)
	require.NoError(t, err)
	assert.Equal(t, 2, c.Len())
	_, ok := c.Has(sums[0])
	assert.False(t, ok, "the least recently modified is evicted")
	assert.NoFileExists(t, filepath.Join(dir, sums[0]))

	// Reopened with room for one, the most recently modified stays: use
	// (Acquire) changes no file, so it orders only within a run.
	_, release, err := c.Acquire(sums[2])
	require.NoError(t, err)
	release()
	c, err = Open(dir, 1000)
	require.NoError(t, err)
	_, ok = c.Has(sums[1])
	assert.True(t, ok)
	_, ok = c.Has(sums[2])
	assert.False(t, ok)
}

func TestConcurrent(t *testing.T) {
	for _, tc := range []struct {
		name string
		max  int64
	}{{"fits all", 1 << 20}, {"fits one", 150 << 10}} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Open(t.TempDir(), tc.max)
			require.NoError(t, err)
			const images, uploaders = 4, 4
			var data [][]byte
			var sums []string
			for i := range images {
				p := pattern(100<<10+i*1000, byte(i))
				p[i] ^= 0xff
				data = append(data, p)
				sums = append(sums, digest(p))
			}
			var wg sync.WaitGroup
			results := make([][]Result, images)
			errs := make(chan error, images*uploaders)
			var mu sync.Mutex
			for i := range images {
				for j := range uploaders {
					wg.Go(func() {
						res, err := func() (Result, error) {
							u, err := c.Begin(Header{SHA256: sums[i], Size: int64(len(data[i])), Name: fmt.Sprint(i, j)})
							if err != nil {
								return Result{}, err
							}
							defer u.Abort()
							p := data[i]
							for off := 0; off < len(p); off += 8 << 10 {
								if err := u.WriteChunk(int64(off), p[off:min(off+8<<10, len(p))]); err != nil {
									return Result{}, err
								}
							}
							return u.Commit()
						}()
						if err != nil {
							errs <- err
							return
						}
						mu.Lock()
						results[i] = append(results[i], res)
						mu.Unlock()
					})
				}
			}
			stop := make(chan struct{})
			var readers sync.WaitGroup
			for r := range 4 {
				readers.Go(func() {
					for n := 0; ; n++ {
						select {
						case <-stop:
							return
						default:
						}
						i := (n + r) % images
						if size, ok := c.Has(sums[i]); ok {
							assert.Equal(t, int64(len(data[i])), size)
						}
						path, release, err := c.Acquire(sums[i])
						if errors.Is(err, ErrNotCached) {
							continue
						}
						if !assert.NoError(t, err) {
							return
						}
						got, err := os.ReadFile(path)
						assert.NoError(t, err, "a pinned file is not evicted")
						assert.True(t, bytes.Equal(data[i], got))
						release()
						_ = c.Len()
						_ = c.Bytes()
					}
				})
			}
			wg.Wait()
			close(stop)
			readers.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			for i := range images {
				require.Len(t, results[i], uploaders)
				fresh := 0
				for _, res := range results[i] {
					assert.Equal(t, sums[i], res.SHA256)
					assert.Equal(t, int64(len(data[i])), res.Received)
					if !res.AlreadyCached {
						fresh++
					}
				}
				assert.GreaterOrEqual(t, fresh, 1, "image %d stored at least once", i)
				if tc.max >= 1<<20 {
					assert.Equal(t, 1, fresh, "image %d stored once, the others found it", i)
				}
			}
			// Consistent at rest: within the bound, index and directory agree,
			// no temporary file left.
			assert.LessOrEqual(t, c.Bytes(), c.MaxBytes())
			names := listDir(t, c.Dir())
			assert.Len(t, names, c.Len())
			var total int64
			for _, name := range names {
				require.True(t, ValidSHA256(name), name)
				size, ok := c.Has(name)
				require.True(t, ok, name)
				total += size
			}
			assert.Equal(t, c.Bytes(), total)
			if tc.max >= 1<<20 {
				assert.Equal(t, images, c.Len())
			}
		})
	}
}

// A flash reads a cached file while others use the cache: nothing may
// change the file, not even its modification time (the flash engine
// refuses an image that changed while it was flashed).
func TestUsingAFileLeavesItUnchanged(t *testing.T) {
	c, err := Open(t.TempDir(), 1<<20)
	require.NoError(t, err)
	data := pattern(1000, 'u')
	h := Header{SHA256: digest(data), Size: 1000, Name: "u"}
	u, err := c.Begin(h)
	require.NoError(t, err)
	require.NoError(t, u.WriteChunk(0, data))
	_, err = u.Commit()
	require.NoError(t, err)
	path, release, err := c.Acquire(h.SHA256)
	require.NoError(t, err)
	defer release()
	before, err := os.Stat(path)
	require.NoError(t, err)
	_, release2, err := c.Acquire(h.SHA256)
	require.NoError(t, err)
	release2()
	again, err := c.Begin(h) // an upload of a file the cache has
	require.NoError(t, err)
	require.NoError(t, again.WriteChunk(0, data))
	_, err = again.Commit()
	require.NoError(t, err)
	after, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, before.ModTime(), after.ModTime())
	assert.Equal(t, before.Size(), after.Size())
}
