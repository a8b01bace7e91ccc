package flash

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The stages of Write, each alone: the plan (a value), the copier (fed
// chunks by hand), the stream's hasher and the deferred hash.

func TestPlanDecidesModeExtentsAndReads(t *testing.T) {
	t.Parallel()
	const mib = 1 << 20
	bm := &Bmap{ImageSize: 8 * mib, BlockSize: 4096, Ranges: []BmapRange{{First: 0, Last: 255, Checksum: "aa"}, {First: 1024, Last: 1279}}}
	for _, c := range []struct {
		name      string
		in        planInput
		mode      Mode
		imageSize int64
		exts      [][2]int64 // nil: everything
		spans     [][2]int64 // nil: a decoder streams it
		zeroHoles bool
		sparse    bool
	}{
		{"raw without holes", planInput{format: Raw, fileSize: 8 * mib, data: [][2]int64{{0, 8 * mib}}, dataKnown: true},
			ModeFull, 8 * mib, nil, [][2]int64{{0, 8 * mib}}, false, false},
		{"raw, holes unknown", planInput{format: Raw, fileSize: 8 * mib},
			ModeFull, 8 * mib, nil, [][2]int64{{0, 8 * mib}}, false, false},
		{"raw with holes: zeroed", planInput{format: Raw, fileSize: 8 * mib, data: [][2]int64{{0, mib}, {4 * mib, 5*mib - 10}}, dataKnown: true},
			ModeFull, 8 * mib, [][2]int64{{0, mib}, {4 * mib, 5 * mib}}, [][2]int64{{0, mib}, {4 * mib, 5 * mib}}, true, false},
		{"raw with a short hole: read through", planInput{format: Raw, fileSize: 8 * mib, data: [][2]int64{{0, mib}, {mib + 4096, 2 * mib}}, dataKnown: true},
			ModeFull, 8 * mib, [][2]int64{{0, 2 * mib}}, [][2]int64{{0, 2 * mib}}, true, false},
		{"raw, all holes", planInput{format: Raw, fileSize: 8 * mib, dataKnown: true},
			ModeFull, 8 * mib, [][2]int64{}, [][2]int64{}, true, false},
		{"raw, skip holes", planInput{format: Raw, fileSize: 8 * mib, data: [][2]int64{{0, mib}, {4 * mib, 5 * mib}}, dataKnown: true, skipHoles: true},
			ModeSkipHoles, 8 * mib, [][2]int64{{0, mib}, {4 * mib, 5 * mib}}, [][2]int64{{0, mib}, {4 * mib, 5 * mib}}, false, true},
		{"raw with a bmap", planInput{format: Raw, fileSize: 8 * mib, bmap: bm, data: [][2]int64{{0, 8 * mib}}, dataKnown: true},
			ModeBmap, 8 * mib, [][2]int64{{0, mib}, {4 * mib, 5 * mib}}, [][2]int64{{0, mib}, {4 * mib, 5 * mib}}, false, false},
		{"compressed", planInput{format: Zstd, fileSize: mib},
			ModeFull, -1, nil, nil, false, false},
		{"compressed with a bmap", planInput{format: Xz, fileSize: mib, bmap: bm},
			ModeBmap, 8 * mib, [][2]int64{{0, mib}, {4 * mib, 5 * mib}}, nil, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p, err := makePlan(c.in)
			require.NoError(t, err)
			assert.Equal(t, c.mode, p.mode)
			assert.Equal(t, c.imageSize, p.imageSize)
			assert.Equal(t, c.exts, ranges(p.exts), "exts")
			assert.Equal(t, c.spans, ranges(p.spans), "spans")
			assert.Equal(t, c.zeroHoles, p.zeroHoles)
			assert.Equal(t, c.sparse, p.sparse)
			assert.Equal(t, c.in.format == Raw && c.exts == nil, p.wholeStream())
		})
	}
	t.Run("a raw image's bmap of another size", func(t *testing.T) {
		t.Parallel()
		_, err := makePlan(planInput{imagePath: "os.img", format: Raw, fileSize: 4 * mib, bmap: bm, bmapPath: "os.img.bmap"})
		require.ErrorIs(t, err, ErrBmap)
		require.ErrorIs(t, err, ErrImage)
		assert.Contains(t, err.Error(), "it belongs to another image")
	})
	t.Run("fits", func(t *testing.T) {
		t.Parallel()
		p, err := makePlan(planInput{format: Raw, fileSize: 8 * mib})
		require.NoError(t, err)
		require.ErrorIs(t, p.checkFits("os.img", "disk", 4*mib, false), ErrTooBig)
		require.NoError(t, p.checkFits("os.img", "disk", 0, true), "an empty file grows")
		require.NoError(t, p.checkFits("os.img", "disk", 8*mib, false))
		require.ErrorIs(t, p.checkFits("os.img", "disk", 0, false), ErrTarget, "no medium")
		q, err := makePlan(planInput{format: Gzip, fileSize: mib})
		require.NoError(t, err)
		require.NoError(t, q.checkFits("os.img.gz", "disk", 1, false), "unknown size: the stream tells")
	})
}

func ranges(exts []extent) [][2]int64 {
	if exts == nil {
		return nil
	}
	out := [][2]int64{}
	for _, e := range exts {
		out = append(out, [2]int64{e.start, e.end})
	}
	return out
}

// copierOn returns a copier writing plan p onto a new regular file of
// size bytes of 0xff, with writers; free receives the released buffers.
func copierOn(t *testing.T, p plan, size int, o Options) (*copier, string, chan []byte) {
	t.Helper()
	target := filled(t, filepath.Join(t.TempDir(), "disk"), size, 0xff)
	dst, err := os.OpenFile(target, os.O_WRONLY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { dst.Close() })
	o = o.withDefaults()
	wr := startWriters(target, dst, nil, o.InFlight, false, o.BufferSize, o.faults)
	t.Cleanup(wr.stop)
	free := make(chan []byte, 16)
	rep := &Report{}
	c := &copier{p: p, o: o, rep: rep, image: "os.img", target: target, wr: wr, dst: dst,
		capacity: int64(size), free: free, position: func() int64 { return -1 }, start: time.Now(), total: p.imageSize}
	return c, target, free
}

// feed queues img's bytes as chunks of n bytes (the producer of a whole
// stream), the last one with io.EOF.
func feed(img []byte, n int) <-chan chunk {
	ch := make(chan chunk, len(img)/n+2)
	for off := 0; off < len(img); off += n {
		end := min(off+n, len(img))
		c := chunk{buf: append([]byte(nil), img[off:end]...), n: end - off, off: int64(off)}
		if end == len(img) {
			c.err = io.EOF
		}
		ch <- c
	}
	close(ch)
	return ch
}

func TestCopierWritesTheExtentsAndZeroesTheHoles(t *testing.T) {
	t.Parallel()
	const mib = 1 << 20
	img := make([]byte, 4*mib)
	for i := range mib {
		img[i], img[3*mib+i] = byte(i%251+1), byte(i%241+1)
	}
	p, err := makePlan(planInput{format: Raw, fileSize: 4 * mib, data: [][2]int64{{0, mib}, {3 * mib, 4 * mib}}, dataKnown: true})
	require.NoError(t, err)
	var syncs []int64
	c, target, free := copierOn(t, p, 5*mib, Options{SyncEvery: mib, faults: &faults{synced: func(n int64) { syncs = append(syncs, n) }}})
	require.NoError(t, c.copyAll(context.Background(), feed(img, 512<<10)))
	require.NoError(t, c.sync(context.Background()))
	requireImage(t, target, img, 0xff)
	assert.Equal(t, int64(4*mib), c.rep.Bytes)
	assert.Equal(t, int64(2*mib), c.rep.MappedBytes)
	assert.Equal(t, int64(2*mib), c.rep.ZeroedBytes)
	assert.Equal(t, "punch-hole", c.wr.zeroedBy())
	assert.Equal(t, []int64{mib, mib, 2 * mib, 2 * mib}, syncs, "after each MiB covered, written or zeroed")
	assert.Len(t, free, 8, "every buffer went back")
	// What the read-back will check: the written ranges with their
	// CRC-32C, the hole as zeros.
	require.Len(t, c.done, 3)
	assert.Equal(t, written{start: 0, end: mib, sum: crc32.Checksum(img[:mib], castagnoli), name: p.exts[0].name}, c.done[0])
	assert.Equal(t, written{start: mib, end: 3 * mib, zero: true, name: "a hole of the image"}, c.done[1])
	assert.Equal(t, written{start: 3 * mib, end: 4 * mib, sum: crc32.Checksum(img[3*mib:], castagnoli), name: p.exts[1].name}, c.done[2])
}

func TestCopierSaysWhatReachedTheTargetWhenAWriteFails(t *testing.T) {
	t.Parallel()
	img := bytes.Repeat([]byte{7}, 2<<20)
	p, err := makePlan(planInput{format: Raw, fileSize: 2 << 20})
	require.NoError(t, err)
	gone := func(off int64, n int) error {
		if off >= 1<<20 {
			return io.ErrClosedPipe
		}
		return nil
	}
	c, _, _ := copierOn(t, p, 2<<20, Options{faults: &faults{write: gone}})
	err = c.copyAll(context.Background(), feed(img, 256<<10))
	require.ErrorIs(t, err, ErrTarget)
	assert.Equal(t, int64(1<<20), c.rep.MappedBytes)
	assert.Contains(t, err.Error(), "at offset 1048576 failed")
}

func TestCopierRefusesAStreamLongerThanTheTarget(t *testing.T) {
	t.Parallel()
	p, err := makePlan(planInput{format: Gzip, fileSize: 100})
	require.NoError(t, err)
	c, _, _ := copierOn(t, p, 1<<20, Options{})
	err = c.copyAll(context.Background(), feed(make([]byte, 2<<20), 256<<10))
	require.ErrorIs(t, err, ErrTooBig)
	assert.Equal(t, int64(1<<20), c.rep.MappedBytes, "what fitted was written")
}

func TestStreamHasherHashesWhatPasses(t *testing.T) {
	t.Parallel()
	img := testImage()
	path := writeFile(t, filepath.Join(t.TempDir(), "os.img"), img)
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	st, err := f.Stat()
	require.NoError(t, err)
	for _, c := range []struct {
		name string
		cut  int // chunks dropped at the end
	}{{"whole", 0}, {"cut short", 1}} {
		ih := &imageHasher{h: newHash(func() {}), path: path, before: st, size: int64(len(img))}
		in := make(chan chunk, 16)
		var all []chunk
		for c := range feed(img, 1<<20) {
			all = append(all, c)
		}
		for _, ch := range all[:len(all)-c.cut] {
			in <- ch
		}
		close(in)
		var wg sync.WaitGroup
		out := ih.stage(context.Background(), f, in, &wg)
		n := 0
		for range out {
			n++
		}
		wg.Wait()
		assert.Equal(t, len(all)-c.cut, n, "%s: every chunk passes on", c.name)
		sum, err := ih.h.Wait(context.Background())
		if c.cut == 0 {
			require.NoError(t, err)
			assert.Equal(t, sha(img), sum)
			assert.Positive(t, ih.h.Duration())
		} else {
			require.ErrorIs(t, err, errHashStopped, "a stream that stopped short has no hash")
		}
	}
}

func TestHashFileSkipsHolesButHashesTheirZeros(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sparse.img")
	img := sparseImage(t, path, 5<<20+123, [][2]int64{{1000, 1 << 20}, {4 << 20, 4<<20 + 5000}})
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	sum, err := hashFile(context.Background(), f, int64(len(img)), true)
	require.NoError(t, err)
	want := sha256.Sum256(img)
	assert.Equal(t, hex.EncodeToString(want[:]), sum)
}

func TestTeeHasherFillsWhatItWasNotOffered(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sparse.img")
	const mib = 1 << 20
	img := sparseImage(t, path, 6*mib+100, [][2]int64{{0, 2 * mib}, {3 * mib, 4 * mib}, {5 * mib, 5*mib + 10}})
	st, err := os.Stat(path)
	require.NoError(t, err)
	for _, c := range []struct {
		name    string
		offered [][2]int64
	}{
		{"all its data", [][2]int64{{0, mib}, {mib, 2 * mib}, {3 * mib, 4 * mib}, {5 * mib, 5*mib + 10}}},
		{"a bmap that leaves data out", [][2]int64{{0, mib}}},
		{"nothing", nil},
		{"holes too", [][2]int64{{2 * mib, 3 * mib}, {4*mib + 4096, 5 * mib}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ih := &imageHasher{h: newHash(func() {}), path: path, before: st, size: int64(len(img))}
			tee := newTeeHasher(ih, len(c.offered)+1, mib)
			for _, o := range c.offered {
				tee.offer(chunk{buf: img[o[0]:o[1]], n: int(o[1] - o[0]), off: o[0]})
			}
			tee.end()
			tee.run(context.Background())
			sum, err := ih.h.Wait(context.Background())
			require.NoError(t, err)
			assert.Equal(t, sha(img), sum)
		})
	}
	t.Run("a copy finding no free buffer is dropped, not waited for", func(t *testing.T) {
		t.Parallel()
		ih := &imageHasher{h: newHash(func() {}), path: path, before: st, size: int64(len(img))}
		tee := newTeeHasher(ih, 1, mib)
		tee.offer(chunk{buf: img[:mib], n: mib})
		tee.offer(chunk{buf: img[mib : 2*mib], n: mib, off: mib}) // dropped
		assert.Len(t, tee.queue, 1)
		tee.end()
		tee.run(context.Background())
		sum, err := ih.h.Wait(context.Background())
		require.NoError(t, err)
		assert.Equal(t, sha(img), sum, "the dropped MiB was read from the file")
	})
}
