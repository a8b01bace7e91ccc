package flash

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// chunk is a buffer of the unpacked image: buf[:n] is the image's bytes
// [off, off+n). err, when set, ends the stream after this chunk (io.EOF for
// a clean end).
type chunk struct {
	buf []byte
	n   int
	off int64
	err error
}

// spanGap is the largest gap between two mapped ranges of a raw image that
// the producer reads through rather than seeking: reading a short hole costs
// less than another read call.
const spanGap = 256 << 10

// producer yields the image's data in increasing offsets, in buffers of the
// pipeline's size, and checks each bmap range's checksum as it passes. It
// streams a compressed (or whole raw) image from r, or, for a raw image with
// mapped ranges, reads just those ranges (merged across short gaps) from
// file.
type producer struct {
	r      io.Reader // stream; nil when reading spans of file
	file   *os.File
	direct *os.File // file opened with O_DIRECT, or nil
	// noDirect says the file system refused an O_DIRECT read: the rest
	// go through the page cache.
	noDirect atomic.Bool
	size     int64    // raw image size (span mode)
	spans    []extent // what to read in span mode
	exts     []extent // the mapped ranges, nil when everything is written
	newSum   func() hash.Hash
	// mismatch formats a bmap checksum mismatch of extent e.
	mismatch func(e extent, got string) error
	// tee, when set, is offered a copy of each chunk (the image's hash).
	tee *teeHasher
}

// mergeSpans returns the ranges to read for exts: neighbours closer than
// spanGap are read in one go.
func mergeSpans(exts []extent) []extent {
	var out []extent
	for _, e := range exts {
		if n := len(out); n > 0 && e.start-out[n-1].end <= spanGap {
			out[n-1].end = max(out[n-1].end, e.end)
			continue
		}
		out = append(out, extent{start: e.start, end: e.end})
	}
	if out == nil {
		out = []extent{}
	}
	return out
}

// readsInFlight is how many reads of a raw image's spans may run at once:
// a read of each buffer while the one before is still on its way keeps a
// disk's queue busy, where one read at a time waits out every round trip.
const readsInFlight = 4

// pending is a chunk being read: done closes when c is filled.
type pending struct {
	c    chunk
	done chan struct{}
}

// run fills free buffers and queues them on full until the image ends, an
// error occurs or ctx ends. It closes full when it returns. Two stages: the
// reader fills buffers in image order (the spans of a raw image several at
// once), the checker takes them in that order, checks the bmap checksums
// and offers each to the tee, so hashing one buffer overlaps reading the
// next.
func (p *producer) run(ctx context.Context, free <-chan []byte, full chan<- chunk) {
	var reads sync.WaitGroup
	defer reads.Wait()
	defer close(full)
	read := make(chan *pending, readsInFlight)
	reads.Go(func() { p.read(ctx, free, read, &reads) })
	p.check(ctx, read, full)
}

// read fills free buffers in image order and queues them on out, which it
// closes when the stream's last chunk (or an error) is queued or ctx ends.
// Span reads run in goroutines of wg, at most readsInFlight at once.
func (p *producer) read(ctx context.Context, free <-chan []byte, out chan<- *pending, wg *sync.WaitGroup) {
	defer close(out)
	slots := make(chan struct{}, readsInFlight)
	var (
		off int64 // stream offset
		si  int   // span cursor
		sp  int64 // position in spans[si]
	)
	for {
		var b []byte
		select {
		case b = <-free:
		case <-ctx.Done():
			return
		}
		pd := &pending{done: make(chan struct{})}
		var last bool // the stream ends with this chunk (known before it is queued)
		switch {
		case p.spans == nil:
			n, err := fill(p.r, b)
			pd.c = chunk{buf: b, n: n, off: off, err: err}
			off += int64(n)
			last = err != nil
			close(pd.done)
		case si == len(p.spans):
			pd.c = chunk{buf: b, off: p.size, err: io.EOF}
			last = true
			close(pd.done)
		default:
			s := p.spans[si]
			sp = max(sp, s.start)
			want := int(min(int64(len(b)), s.end-sp))
			pd.c = chunk{buf: b, off: sp}
			sp += int64(want)
			if sp == s.end {
				si++
			}
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Go(func() {
				defer func() { <-slots }()
				p.readSpan(pd, want)
			})
		}
		select {
		case out <- pd:
		case <-ctx.Done():
			return
		}
		if last {
			return // a failed span read ends the stream in check
		}
	}
}

// readSpan reads want bytes of the image at pd.c.off into pd.c.buf and
// closes pd.done; a short read is an error of the image.
func (p *producer) readSpan(pd *pending, want int) {
	defer close(pd.done)
	c := &pd.c
	n, err := p.readAt(c.buf, want, c.off)
	c.n = n
	if n < want {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		c.err = fmt.Errorf("%w: the image shrank while it was read (offset %d): %w", ErrImage, c.off+int64(n), err)
	}
}

// check takes the read chunks in order, checks the bmap checksums of the
// mapped ranges each covers, offers it to the tee and queues it on full,
// until a chunk that ends the stream.
func (p *producer) check(ctx context.Context, in <-chan *pending, full chan<- chunk) {
	if p.tee != nil {
		defer p.tee.end()
	}
	var (
		ri  int // extent cursor for checksums
		sum hash.Hash
	)
	for pd := range in {
		select {
		case <-pd.done:
		case <-ctx.Done():
			return
		}
		c := pd.c
		for pos, end := c.off, c.off+int64(c.n); p.newSum != nil && pos < end && ri < len(p.exts); {
			e := p.exts[ri]
			if e.start >= end {
				break
			}
			a, z := max(pos, e.start), min(end, e.end)
			if e.sum != "" {
				if sum == nil {
					sum = p.newSum()
				}
				sum.Write(c.buf[a-c.off : z-c.off])
			}
			if z == e.end {
				if e.sum != "" {
					if got := hex.EncodeToString(sum.Sum(nil)); got != e.sum {
						c.err = p.mismatch(e, got)
						c.n = int(a - c.off) // the rest of the bad range is not written
						break
					}
					sum = nil
				}
				ri++
			}
			pos = z
		}
		if p.tee != nil {
			p.tee.offer(c)
		}
		select {
		case full <- c:
		case <-ctx.Done():
			return
		}
		if c.err != nil {
			return
		}
	}
}

// readAt reads want bytes at off into b, past the page cache when it can.
func (p *producer) readAt(b []byte, want int, off int64) (int, error) {
	if p.direct != nil && !p.noDirect.Load() && off%align == 0 && isAligned(b) {
		// O_DIRECT needs an aligned length; past the end it reads short.
		k := min((want+align-1)&^(align-1), len(b))
		n, err := p.direct.ReadAt(b[:k], off)
		if n >= want {
			return want, nil
		}
		if !errors.Is(err, syscall.EINVAL) {
			return n, err
		}
		p.noDirect.Store(true) // the file system wants another alignment
	}
	return p.file.ReadAt(b[:want], off)
}
