package flash

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// writers keeps several writes to the target in flight: one O_DIRECT write
// at a time leaves a disk idle between requests, and a deeper queue is what
// lets a fast disk (NVMe, virtio, a UAS adapter) reach its speed. Writes
// go to disjoint ranges, so their order does not matter until a sync, which
// waits for all of them.
type writers struct {
	target string
	dst    *os.File       // buffered descriptor
	direct *os.File       // O_DIRECT descriptor, nil when none
	noDir  atomic.Bool    // the device refused O_DIRECT's alignment: buffered from now on
	jobs   chan wjob      // to the workers
	busy   sync.WaitGroup // writes submitted and not finished
	done   sync.WaitGroup // the workers
	ok     atomic.Int64   // bytes written successfully
	zeroed atomic.Int64   // bytes zeroed successfully
	// method is the zeroMethod tried first now: it only moves on (to
	// zeroWrite at the latest) when the device refuses one.
	method atomic.Int32
	used   atomic.Uint32 // bit m set: zeroMethod m zeroed some range
	zeros  []byte        // aligned zeros for zeroWrite, never written to; made on first use
	zonce  sync.Once
	zsize  int
	faults *faults
	mu     sync.Mutex
	err    error // the first failure
}

// wjob is one write, or with zero set one zeroing of n bytes; release is
// called when it is finished.
type wjob struct {
	p       []byte
	at      int64
	n       int64
	zero    bool
	release func()
}

// startWriters starts n writers. block says the target is a block device:
// it picks how ranges are zeroed (see zeroMethod).
func startWriters(target string, dst, direct *os.File, n int, block bool, bufSize int, fs *faults) *writers {
	w := &writers{target: target, dst: dst, direct: direct, jobs: make(chan wjob, n), faults: fs}
	w.method.Store(int32(zeroPunch))
	if block {
		w.method.Store(int32(zeroBlk))
	}
	w.zsize = bufSize
	for range n {
		w.done.Go(func() {
			for j := range w.jobs {
				var err error
				if j.zero {
					err = w.zero(j.at, j.n)
				} else {
					err = w.write(j.p, j.at)
				}
				if err != nil {
					w.mu.Lock()
					if w.err == nil {
						w.err = err
					}
					w.mu.Unlock()
				} else if j.zero {
					w.zeroed.Add(j.n)
				} else {
					w.ok.Add(int64(len(j.p)))
				}
				if j.release != nil {
					j.release()
				}
				w.busy.Done()
			}
		})
	}
	return w
}

// submit queues a write of p at offset at; release is called when it is
// done (p must stay untouched until then).
func (w *writers) submit(p []byte, at int64, release func()) {
	w.busy.Add(1)
	w.jobs <- wjob{p: p, at: at, release: release}
}

// submitZero queues the zeroing of n bytes of the target at offset at.
func (w *writers) submitZero(at, n int64) {
	w.busy.Add(1)
	w.jobs <- wjob{at: at, n: n, zero: true}
}

// zero makes n bytes of the target at offset at read as zeros: by the
// device's own means where it guarantees zeros (see zeroMethod), else by
// writing zeros. A device that refuses a method is not asked again.
func (w *writers) zero(at, n int64) error {
	skip, err := w.faults.onZero(at, n)
	if err != nil {
		return zeroFailed(w.target, at, n, err)
	}
	if skip {
		w.used.Or(1 << zeroPunch) // claims to have done it
		return nil
	}
	for n > 0 {
		m := zeroMethod(w.method.Load())
		if m == zeroWrite {
			break
		}
		k := n
		if m == zeroBlk {
			k = n &^ (align - 1) // BLKZEROOUT takes whole logical blocks
			if k == 0 {
				break
			}
		}
		var err error
		if w.faults.refuses(m) {
			err = errZeroUnsupported
		} else {
			err = deviceZero(w.dst, m, at, k)
		}
		if errors.Is(err, errZeroUnsupported) {
			next := zeroWrite
			if m == zeroPunch {
				next = zeroZeroRange
			}
			w.method.CompareAndSwap(int32(m), int32(next))
			continue
		}
		if err != nil {
			return zeroFailed(w.target, at, k, err)
		}
		w.used.Or(1 << m)
		at, n = at+k, n-k
	}
	if n == 0 {
		return nil
	}
	w.used.Or(1 << zeroWrite)
	w.zonce.Do(func() { w.zeros = alignedBuf(w.zsize) })
	for n > 0 {
		k := min(n, int64(len(w.zeros)))
		if err := w.write(w.zeros[:k], at); err != nil {
			return err
		}
		at, n = at+k, n-k
	}
	return nil
}

// zeroedBy names the methods that zeroed ranges, "+"-joined, or "".
func (w *writers) zeroedBy() string {
	var names []string
	for m := zeroPunch; m <= zeroWrite; m++ {
		if w.used.Load()&(1<<m) != 0 {
			names = append(names, m.String())
		}
	}
	return strings.Join(names, "+")
}

// write writes p at offset at: its aligned part with O_DIRECT where it can,
// the rest through the page cache.
func (w *writers) write(p []byte, at int64) error {
	if w.direct != nil && !w.noDir.Load() && at%align == 0 && isAligned(p) {
		if k := len(p) &^ (align - 1); k > 0 {
			_, err := w.direct.WriteAt(p[:k], at)
			switch {
			case errors.Is(err, syscall.EINVAL):
				// The device wants another alignment: go on without
				// O_DIRECT (pwrite writes all or fails, so nothing was
				// half-done).
				w.noDir.Store(true)
			case err != nil:
				return writeFailed(w.target, at, err)
			default:
				p, at = p[k:], at+int64(k)
			}
		}
	}
	if len(p) > 0 {
		if _, err := w.dst.WriteAt(p, at); err != nil {
			return writeFailed(w.target, at, err)
		}
	}
	return nil
}

// failed returns the first write failure so far.
func (w *writers) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// drain waits for every submitted write and returns the first failure.
func (w *writers) drain() error {
	w.busy.Wait()
	return w.failed()
}

// stop drains and ends the workers.
func (w *writers) stop() {
	w.busy.Wait()
	close(w.jobs)
	w.done.Wait()
}

// zeroMethod is how a range of the target is made to read as zeros (the
// constants are in sys_*.go).
type zeroMethod int32

// errZeroUnsupported says the target does not offer a zeroMethod.
var errZeroUnsupported = errors.New("zeroing method not supported by the target")

// String returns the name [Report.ZeroedBy] uses.
func (m zeroMethod) String() string {
	switch m {
	case zeroPunch:
		return "punch-hole"
	case zeroZeroRange:
		return "zero-range"
	case zeroBlk:
		return "blkzeroout"
	}
	return "write"
}

// zeroFailed describes a failed zeroing of the target.
func zeroFailed(target string, at, n int64, err error) error {
	return fmt.Errorf("%w: zeroing %d bytes of %s at offset %d (a hole of the image) failed%s; the target is incomplete and must be flashed again: %w", ErrTarget, n, target, at, failHint(err), err)
}
