package flash

import (
	"errors"
	"os"
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
	mu     sync.Mutex
	err    error // the first failure
}

// wjob is one write; release is called when it is finished.
type wjob struct {
	p       []byte
	at      int64
	release func()
}

func startWriters(target string, dst, direct *os.File, n int) *writers {
	w := &writers{target: target, dst: dst, direct: direct, jobs: make(chan wjob, n)}
	for range n {
		w.done.Go(func() {
			for j := range w.jobs {
				err := w.write(j.p, j.at)
				if err != nil {
					w.mu.Lock()
					if w.err == nil {
						w.err = err
					}
					w.mu.Unlock()
				} else {
					w.ok.Add(int64(len(j.p)))
				}
				j.release()
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
	w.jobs <- wjob{p, at, release}
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
