package flash

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
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
	h      *Hash
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

// readFile hashes the file on its own descriptors; the holes of a sparse
// file are fed from memory instead of being read.
func (ih *imageHasher) readFile(ctx context.Context) {
	sum, err := ih.hashOwnDescriptor(ctx)
	ih.h.resolve(sum, err)
}

func (ih *imageHasher) hashOwnDescriptor(ctx context.Context) (string, error) {
	f, err := os.Open(ih.path)
	if err != nil {
		return ih.check(nil, "", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !os.SameFile(st, ih.before) {
		return "", fmt.Errorf("%w: %s was replaced while it was flashed", ErrImage, ih.path)
	}
	sum, err := hashFile(ctx, f, ih.size)
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

// hashFile returns the SHA-256 of the first size bytes of f. It reads past
// the page cache where it can and feeds the holes of a sparse file from
// memory instead of reading them.
func hashFile(ctx context.Context, f *os.File, size int64) (string, error) {
	var direct *os.File
	if d, err := openDirect(f.Name(), os.O_RDONLY); err == nil && d != nil {
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
