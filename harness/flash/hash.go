package flash

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// Hash is the SHA-256 of the image file a [Write] flashed (the file as
// given, compressed or not). Without [Options.DeferHash] it is complete
// when Write returns, and [Report.SHA256] holds it; with DeferHash it may
// still be computed, beside the rest of the test, until [Hash.Wait] says.
// Its result is exact: the bytes hashed are the file's, and a file that
// changed while it was flashed or hashed fails the hash with [ErrImage]
// rather than giving a sum of neither version.
type Hash struct {
	done   chan struct{}
	once   sync.Once
	stop   context.CancelFunc
	cached bool
	start  time.Time
	// workers are the goroutines computing it, which Stop waits for.
	workers sync.WaitGroup

	// Set before done is closed.
	sum  string
	err  error
	took time.Duration
}

// newHash returns a Hash being computed; stop abandons the computation.
func newHash(stop context.CancelFunc) *Hash {
	return &Hash{done: make(chan struct{}), stop: stop, start: time.Now()}
}

// cachedHash returns a complete Hash taken from the hash cache.
func cachedHash(sum string) *Hash {
	h := &Hash{done: make(chan struct{}), cached: true, stop: func() {}}
	h.resolve(sum, nil)
	return h
}

// resolve completes h; only the first call counts.
func (h *Hash) resolve(sum string, err error) {
	h.once.Do(func() {
		h.sum, h.err = sum, err
		if !h.cached {
			h.took = time.Since(h.start)
		}
		close(h.done)
	})
}

// Wait waits until the hash is complete or ctx ends, and returns the hex
// SHA-256 of the image file. An error wraps [ErrImage] when the file could
// not be read or changed, or says the hash was stopped ([Hash.Stop], or the
// [Write] failed); a ctx that ends first returns its error and leaves the
// hash going on.
func (h *Hash) Wait(ctx context.Context) (string, error) {
	select {
	case <-h.done:
		return h.sum, h.err
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for the image's SHA-256: %w", ctx.Err())
	}
}

// Done is closed when the hash is complete.
func (h *Hash) Done() <-chan struct{} { return h.done }

// Cached says the hash came from the hash cache: it was complete before
// the write began.
func (h *Hash) Cached() bool { return h.cached }

// Duration is how long the hash took to compute, from the start of the
// write (0 when it came from the cache, and until it is complete).
func (h *Hash) Duration() time.Duration {
	select {
	case <-h.done:
		return h.took
	default:
		return 0
	}
}

// Stop abandons a hash still being computed and waits until its reader has
// let go of the image; [Hash.Wait] then fails. A complete hash stays.
func (h *Hash) Stop() {
	h.stop()
	<-h.done
	h.workers.Wait()
}

// errHashStopped is the error of a hash abandoned by [Hash.Stop].
var errHashStopped = errors.New("the image's SHA-256 was not computed: stopped")

// imageHasher computes a Hash for one Write: from the stream of a whole
// raw image as it passes (see [imageHasher.stage]), or by reading the
// image file once more on its own descriptor (see [imageHasher.readFile]).
// Either way it proves with the file's stat that the bytes hashed are the
// bytes of the file the write began with, and remembers the sum in the
// hash cache.
type imageHasher struct {
	h *Hash
	// idle runs the hash at the lowest CPU priority (a deferred hash:
	// nothing waits for it).
	idle bool
	// direct reads the file past the page cache (readFile).
	direct bool
	path   string
	before os.FileInfo
	size   int64
	cache  sumCache
	faults *faults
}

// check checks that the file (open as f) is still the one hashed and
// remembers the sum; it returns the Hash's result.
func (ih *imageHasher) check(f *os.File, sum string, err error) (string, error) {
	if err != nil {
		if errors.Is(err, ErrImage) || errors.Is(err, errHashStopped) {
			return "", err
		}
		return "", fmt.Errorf("%w: read %s: %w", ErrImage, ih.path, err)
	}
	ih.faults.onHashed()
	after, serr := f.Stat()
	if serr != nil || !sameFile(ih.before, after) {
		return "", errChanged(ih.path)
	}
	ih.cache.store(f, after, sum)
	return sum, nil
}

// readFile hashes the file on its own descriptor: a compressed one
// through the page cache that its decoder read it through (so that it is
// read from the medium about once), a raw one past it when direct.
func (ih *imageHasher) readFile(ctx context.Context) {
	if ih.idle {
		yieldThread()
	}
	sum, err := ih.hashOwnDescriptor(ctx)
	ih.h.resolve(sum, err)
}

// openImage opens the image file on a descriptor of the hasher's own and
// makes sure it is still the file the write began with.
func (ih *imageHasher) openImage() (*os.File, error) {
	f, err := os.Open(ih.path)
	if err != nil {
		_, err = ih.check(nil, "", err)
		return nil, err
	}
	if st, err := f.Stat(); err != nil || !os.SameFile(st, ih.before) {
		f.Close()
		return nil, fmt.Errorf("%w: %s was replaced while it was flashed", ErrImage, ih.path)
	}
	return f, nil
}

func (ih *imageHasher) hashOwnDescriptor(ctx context.Context) (string, error) {
	f, err := ih.openImage()
	if err != nil {
		return "", err
	}
	defer f.Close()
	sum, err := hashFile(ctx, f, ih.size, ih.direct)
	if ctx.Err() != nil {
		err = fmt.Errorf("%w: %w", errHashStopped, ctx.Err())
	}
	return ih.check(f, sum, err)
}

// stage passes the chunks of in on to the channel it returns, hashing them
// on the way: the stream of a whole raw image, in order, from its first
// byte. The Hash completes at the stream's clean end, or fails when the
// stream stops before it. file is the image's open descriptor, which must
// stay open until the returned channel is closed.
func (ih *imageHasher) stage(ctx context.Context, file *os.File, in <-chan chunk, wg *sync.WaitGroup) <-chan chunk {
	out := make(chan chunk, cap(in))
	wg.Go(func() {
		defer close(out)
		defer ih.h.resolve("", fmt.Errorf("%w: the image was not read to its end", errHashStopped))
		sum := sha256.New()
		var n int64
		for c := range in {
			sum.Write(c.buf[:c.n])
			n += int64(c.n)
			if c.err == io.EOF && n == ih.size {
				ih.h.resolve(ih.check(file, hex.EncodeToString(sum.Sum(nil)), nil))
			}
			select {
			case out <- c:
			case <-ctx.Done():
				return
			}
		}
	})
	return out
}

// hashFile returns the SHA-256 of the first size bytes of f. It feeds the
// holes of a sparse file from memory instead of reading them, and with
// useDirect reads past the page cache where it can (without, it shares the
// page cache with another reader of the file, such as a decoder).
func hashFile(ctx context.Context, f *os.File, size int64, useDirect bool) (string, error) {
	var direct *os.File
	if d, err := openDirect(f.Name(), os.O_RDONLY); useDirect && err == nil && d != nil {
		defer d.Close()
		st, err1 := d.Stat()
		fst, err2 := f.Stat()
		if err1 == nil && err2 == nil && os.SameFile(st, fst) {
			direct = d
		}
	}
	data, ok := dataExtents(f, size)
	if !ok {
		data = [][2]int64{{0, size}}
	}
	h := sha256.New()
	const step = 1 << 20
	buf := alignedBuf(step)
	zeros := make([]byte, step)
	var pos int64
	for _, d := range append(data, [2]int64{size, size}) {
		for pos < d[0] { // a hole reads as zeros
			if err := ctx.Err(); err != nil {
				return "", err
			}
			n := min(int64(step), d[0]-pos)
			h.Write(zeros[:n])
			pos += n
		}
		for pos < d[1] {
			if err := ctx.Err(); err != nil {
				return "", err
			}
			want := int(min(int64(step), d[1]-pos))
			var n int
			var err error
			if direct != nil && pos%align == 0 {
				n, err = direct.ReadAt(buf[:(want+align-1)&^(align-1)], pos)
				if errors.Is(err, syscall.EINVAL) {
					direct = nil
					continue
				}
			} else {
				n, err = f.ReadAt(buf[:want], pos)
			}
			if n < want {
				if err == nil || err == io.EOF {
					err = fmt.Errorf("%w: the file shrank to %d bytes while it was flashed", ErrImage, pos+int64(n))
				}
				return "", err
			}
			h.Write(buf[:want])
			pos += int64(want)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// teeHasher hashes a raw image from copies of the chunks the producer
// reads anyway, so a sparse image is not read twice. The producer offers
// each chunk without waiting ([teeHasher.offer]): a copy that finds the
// hasher's buffers all busy is dropped, so the hash never slows the write.
// What the hasher was not offered (the gaps between a bmap's ranges, a
// dropped copy) it takes from the file itself: its holes (SEEK_HOLE) as
// zeros from memory, its data read on its own descriptor.
type teeHasher struct {
	ih    *imageHasher
	pool  chan []byte
	queue chan chunk // copies, in increasing offsets
	once  sync.Once
}

// newTeeHasher returns a teeHasher with n buffers of size bytes.
func newTeeHasher(ih *imageHasher, n, size int) *teeHasher {
	t := &teeHasher{ih: ih, pool: make(chan []byte, n), queue: make(chan chunk, n)}
	for range n {
		t.pool <- make([]byte, size)
	}
	return t
}

// offer hands the hasher a copy of c's bytes if it has a free buffer.
func (t *teeHasher) offer(c chunk) {
	if c.n == 0 {
		return
	}
	select {
	case b := <-t.pool:
		n := copy(b, c.buf[:c.n])
		t.queue <- chunk{buf: b, n: n, off: c.off} // never blocks: queue holds the pool
	default:
	}
}

// end says the producer offers nothing more.
func (t *teeHasher) end() { t.once.Do(func() { close(t.queue) }) }

// run hashes the offered chunks and fills what was not offered from the
// file, until the image's end or ctx ends.
func (t *teeHasher) run(ctx context.Context) {
	sum, err := t.hash(ctx)
	t.ih.h.resolve(sum, err)
}

func (t *teeHasher) hash(ctx context.Context) (string, error) {
	ih := t.ih
	f, err := ih.openImage()
	if err != nil {
		return "", err
	}
	defer f.Close()
	data, ok := dataExtents(f, ih.size)
	if !ok {
		data = [][2]int64{{0, ih.size}}
	}
	g := &gapFiller{f: f, data: data, h: sha256.New(), buf: make([]byte, 1<<20)}
	stopped := func() (string, error) {
		return "", fmt.Errorf("%w: %w", errHashStopped, ctx.Err())
	}
	for {
		var c chunk
		var more bool
		select {
		case c, more = <-t.queue:
		case <-ctx.Done():
			return stopped()
		}
		if !more {
			break
		}
		if c.off < g.pos { // cannot happen: the producer reads forwards
			t.pool <- c.buf
			continue
		}
		if err := g.fillTo(ctx, c.off); err != nil {
			if ctx.Err() != nil {
				return stopped()
			}
			return ih.check(f, "", err)
		}
		g.h.Write(c.buf[:c.n])
		g.pos = c.off + int64(c.n)
		t.pool <- c.buf
	}
	if err := g.fillTo(ctx, ih.size); err != nil {
		if ctx.Err() != nil {
			return stopped()
		}
		return ih.check(f, "", err)
	}
	return ih.check(f, hex.EncodeToString(g.h.Sum(nil)), nil)
}

// gapFiller feeds a hash the bytes of a file from pos on, reading its data
// ranges and feeding its holes as zeros.
type gapFiller struct {
	f    *os.File
	data [][2]int64 // the file's data ranges, in order
	di   int        // the first range that may end after pos
	h    hash.Hash
	pos  int64
	buf  []byte
}

// zeros feeds holes.
var zeros = make([]byte, 1<<20)

// fillTo feeds the hash the file's bytes from pos up to end.
func (g *gapFiller) fillTo(ctx context.Context, end int64) error {
	for g.pos < end {
		if err := ctx.Err(); err != nil {
			return err
		}
		for g.di < len(g.data) && g.data[g.di][1] <= g.pos {
			g.di++
		}
		if g.di == len(g.data) || g.data[g.di][0] > g.pos { // a hole up to the next data
			stop := end
			if g.di < len(g.data) {
				stop = min(end, g.data[g.di][0])
			}
			n := min(stop-g.pos, int64(len(zeros)))
			g.h.Write(zeros[:n])
			g.pos += n
			continue
		}
		n := min(end, g.data[g.di][1]) - g.pos
		n = min(n, int64(len(g.buf)))
		k, err := g.f.ReadAt(g.buf[:n], g.pos)
		if int64(k) < n {
			if err == nil || err == io.EOF {
				err = fmt.Errorf("%w: the file shrank to %d bytes while it was flashed", ErrImage, g.pos+int64(k))
			}
			return err
		}
		g.h.Write(g.buf[:n])
		g.pos += n
	}
	return nil
}

// FileSHA256 returns the SHA-256 of the file at path (a sparse file's
// holes read as zeros), from the hash cache of o ([Options.NoHashCache],
// [Options.HashCacheDir]) when it knows the file, else computed and
// remembered there: the digest a tool that sends images by content (the
// remote driver) names them by, at no cost for a file flashed before.
func FileSHA256(ctx context.Context, path string, o Options) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrImage, err)
	}
	defer f.Close()
	before, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrImage, err)
	}
	cache := hashCache(o)
	if sum := cache.lookup(f, before); sum != "" {
		return sum, nil
	}
	ih := &imageHasher{h: newHash(func() {}), path: path, before: before, size: before.Size(), cache: cache, faults: o.faults}
	sum, err := hashFile(ctx, f, before.Size(), false)
	if ctx.Err() != nil {
		return "", fmt.Errorf("the SHA-256 of %s: %w", path, ctx.Err())
	}
	return ih.check(f, sum, err)
}
