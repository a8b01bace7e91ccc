package flash

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
	"syscall"
)

// castagnoli is the CRC-32C table: the checksum of the read-back, the one
// storage stacks use to catch corruption, computed at memory speed.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// reader reads ranges of the target back from the medium: O_DIRECT, or
// through the page cache after dropping the range from it.
type reader struct {
	target string
	rd     *os.File
	direct *os.File
	buf    []byte
	faults *faults
}

func openReader(target string, o Options) (*reader, error) {
	rd, err := os.Open(target)
	if err != nil {
		return nil, fmt.Errorf("%w: verify: open %s: %w", ErrTarget, target, err)
	}
	r := &reader{target: target, rd: rd, faults: o.faults}
	if !o.NoDirect {
		if r.direct, err = openDirect(target, os.O_RDONLY); err != nil {
			rd.Close()
			return nil, fmt.Errorf("%w: verify: open %s: %w", ErrTarget, target, err)
		}
	}
	size := min(o.BufferSize, 4<<20) // reads back at disk speed with less memory
	if size <= 0 {
		size = 4 << 20
	}
	r.buf = alignedBuf((size + align - 1) &^ (align - 1))
	return r, nil
}

func (r *reader) close() {
	r.rd.Close()
	if r.direct != nil {
		r.direct.Close()
	}
}

// check reads w back and compares its CRC-32C with what was written, or
// for a zeroed range checks that it reads as zeros. With O_DIRECT it reads
// whole aligned blocks around the range (an unaligned range must not fall
// back to the page cache the writer just filled); without, it first drops
// the target's cached pages.
func (r *reader) check(ctx context.Context, w written) error {
	for {
		var err error
		if w.zero {
			err = r.checkZero(ctx, w)
		} else {
			err = r.checkSum(ctx, w)
		}
		if errors.Is(err, errNoDirect) {
			r.direct.Close()
			r.direct = nil // the device wants another alignment: go buffered
			continue
		}
		return err
	}
}

func (r *reader) checkSum(ctx context.Context, w written) error {
	var sum uint32
	if err := r.scan(ctx, w.start, w.end, func(p []byte, _ int64) error {
		sum = crc32.Update(sum, castagnoli, p)
		return nil
	}); err != nil {
		return err
	}
	if sum != w.sum {
		where := fmt.Sprintf("bytes %d-%d", w.start, w.end-1)
		if w.name != "" {
			where += " of " + w.name
		}
		return fmt.Errorf("%w: %w: %s %s read back with crc32c %08x, but %08x was written: the medium or its adapter corrupts data", ErrTarget, ErrVerify, r.target, where, sum, w.sum)
	}
	return nil
}

// checkZero checks that a zeroed range reads as zeros. Of a regular file it
// reads only what the file system reports as data (SEEK_DATA): a hole reads
// as zeros by the file system's own guarantee, so a punched range costs no
// read at all. Everything else (all of it on a block device) is read back
// from the medium like a written range and compared with zeros.
func (r *reader) checkZero(ctx context.Context, w written) error {
	parts, ok := dataIn(r.rd, w.start, w.end)
	if !ok {
		parts = [][2]int64{{w.start, w.end}}
	}
	for _, d := range parts {
		if err := r.scan(ctx, d[0], d[1], func(p []byte, at int64) error {
			if i := nonZero(p); i >= 0 {
				return fmt.Errorf("%w: %w: %s byte %d reads back as %#02x, but bytes %d-%d (a hole of the image) were zeroed: the device does not zero reliably; flash with a bmap or Options.SkipHoles, or check the medium", ErrTarget, ErrVerify, r.target, at+int64(i), p[i], w.start, w.end-1)
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// nonZero returns the index of p's first byte that is not zero, or -1.
func nonZero(p []byte) int {
	var z [4096]byte
	for off := 0; off < len(p); off += len(z) {
		q := p[off:min(off+len(z), len(p))]
		if bytes.Equal(q, z[:len(q)]) {
			continue
		}
		for i, b := range q {
			if b != 0 {
				return off + i
			}
		}
	}
	return -1
}

// errNoDirect says an O_DIRECT read was refused (EINVAL).
var errNoDirect = errors.New("O_DIRECT read refused")

// scan reads [start, end) of the target back from the medium and hands it
// to fn in order, a buffer at a time, with the target offset of each part.
func (r *reader) scan(ctx context.Context, start, end int64, fn func(p []byte, at int64) error) error {
	f := r.direct
	pos := start
	if f != nil {
		pos &^= align - 1
	} else {
		// The whole file: the kernel keeps partly covered (and large)
		// folios when asked for a range. What was synced is clean, so
		// dropping it costs a re-read at most.
		dropCache(r.rd, 0, 0)
		f = r.rd
	}
	for pos < end {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("verify of %s stopped at offset %d: %w", r.target, max(pos, start), err)
		}
		stop := min(pos+int64(len(r.buf)), end) // the bytes wanted from this read
		size := int(stop - pos)
		if r.direct != nil {
			size = min((size+align-1)&^(align-1), len(r.buf))
		}
		n, err := f.ReadAt(r.buf[:size], pos)
		if r.direct != nil && errors.Is(err, syscall.EINVAL) {
			return errNoDirect
		}
		if int64(n) < stop-pos {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("%w: %w: read %s at offset %d: %w", ErrTarget, ErrVerify, r.target, pos, err)
		}
		lo := max(start, pos) - pos
		p := r.buf[lo : stop-pos]
		r.faults.onReadBack(p, pos+lo)
		if err := fn(p, pos+lo); err != nil {
			return err
		}
		pos = stop
	}
	return nil
}

// verify reads the written ranges back and compares them with what was
// written.
func verify(ctx context.Context, target string, ranges []written, o Options) error {
	r, err := openReader(target, o)
	if err != nil {
		return err
	}
	defer r.close()
	for _, w := range ranges {
		if err := r.check(ctx, w); err != nil {
			return err
		}
	}
	return nil
}

// verifier reads written ranges back while the write goes on: the writer
// hands it each range once a sync has made it durable, so by the end of the
// write most of the image has been checked already.
type verifier struct {
	r     *reader
	mu    sync.Mutex
	ready []written
	last  bool
	err   error
	wake  chan struct{}
	done  chan struct{}
}

func startVerifier(ctx context.Context, target string, o Options) (*verifier, error) {
	r, err := openReader(target, o)
	if err != nil {
		return nil, err
	}
	v := &verifier{r: r, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go v.run(ctx)
	return v, nil
}

func (v *verifier) run(ctx context.Context) {
	defer close(v.done)
	defer v.r.close()
	for {
		v.mu.Lock()
		batch, last := v.ready, v.last
		v.ready = nil
		v.mu.Unlock()
		for _, w := range batch {
			if err := v.r.check(ctx, w); err != nil {
				v.mu.Lock()
				v.err = err
				v.mu.Unlock()
				v.r.faults.onVerifyFailed(err)
				return
			}
		}
		if last && len(batch) == 0 {
			return
		}
		if len(batch) == 0 {
			select {
			case <-v.wake:
			case <-ctx.Done():
				v.mu.Lock()
				v.err = fmt.Errorf("verify of %s stopped: %w", v.r.target, ctx.Err())
				v.mu.Unlock()
				v.r.faults.onVerifyFailed(v.err)
				return
			}
		}
	}
}

// add queues durable ranges; last says no more will come.
func (v *verifier) add(ws []written, last bool) {
	v.mu.Lock()
	v.ready = append(v.ready, ws...)
	v.last = v.last || last
	v.mu.Unlock()
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

// failed returns the verifier's error so far, without waiting.
func (v *verifier) failed() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.err
}

// wait waits for the verifier to end and returns its error.
func (v *verifier) wait() error {
	<-v.done
	return v.failed()
}
