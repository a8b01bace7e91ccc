package flash

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync/atomic"
	"time"
)

// copier is the stage of a [Write] that takes the producer's chunks and
// puts the plan's extents on the target: it writes the mapped bytes
// (several writes in flight), zeroes the holes of ModeFull, syncs every
// Options.SyncEvery bytes and hands each synced range to the verifier. It
// keeps the [Report]'s counts.
type copier struct {
	p      plan
	o      Options
	rep    *Report
	image  string // the image's path, in messages
	target string
	wr     *writers
	ver    *verifier // nil: no read-back
	// dst and direct are the target's descriptors (direct nil without
	// O_DIRECT); capacity its size, growable when it is an empty file.
	dst, direct *os.File
	capacity    int64
	growable    bool
	free        chan<- []byte // where a written chunk's buffer goes back
	// file is the image's descriptor, before its stat when the write began.
	file   *os.File
	before os.FileInfo
	// position says how far into the image file a decoder has read, for
	// the progress of a compressed image of unknown size.
	position func() int64
	start    time.Time

	total     int64     // the unpacked size, -1 until known
	ri        int       // the extent being written
	done      []written // closed segments, in order
	handed    int       // how many of done the verifier has
	cur       *written
	lastCover int64 // MappedBytes+ZeroedBytes at the last sync
	zpos      int64 // with zeroHoles: the target is settled up to here
	nextPrint int64
}

// copyAll copies the chunks of full until the stream's clean end, and
// checks that the image ended where the plan says. On error the returned
// error says how far the write got and the Report what reached the target.
func (c *copier) copyAll(ctx context.Context, full <-chan chunk) error {
	c.nextPrint = c.o.ProgressEvery
	for {
		if err := ctx.Err(); err != nil {
			return c.stopped(err)
		}
		var ch chunk
		var ok bool
		select {
		case ch, ok = <-full:
		case <-ctx.Done():
			return c.stopped(ctx.Err())
		}
		if !ok {
			if err := ctx.Err(); err != nil {
				return c.stopped(err)
			}
			return c.stopped(errors.New("the decompressor stopped"))
		}
		end, err := c.take(ctx, ch)
		if err != nil {
			return err
		}
		if end {
			break
		}
	}
	return c.atEnd(ctx)
}

// take writes one chunk; end says it was the stream's last.
func (c *copier) take(ctx context.Context, ch chunk) (end bool, err error) {
	ref := newBufRef(ch.buf, c.free)
	defer ref.release()
	if ch.n > 0 {
		if err := c.writeChunk(ctx, ch, ref); err != nil {
			return false, err
		}
	}
	c.rep.Bytes = max(c.rep.Bytes, ch.off+int64(ch.n))
	if c.rep.Bytes >= c.nextPrint {
		c.progress(false)
		c.nextPrint = (c.rep.Bytes/c.o.ProgressEvery + 1) * c.o.ProgressEvery
	}
	switch {
	case ch.err == nil:
		return false, nil
	case ch.err == io.EOF:
		return true, nil
	}
	return false, c.streamFailed(ctx, ch.err)
}

// bufRef counts the holds on a chunk's buffer: the copier's own and one
// per write in flight of a part of it. The buffer goes back to free when
// the last one lets go.
type bufRef struct {
	n    atomic.Int32
	buf  []byte
	free chan<- []byte
}

// newBufRef returns buf held once (by the copier).
func newBufRef(buf []byte, free chan<- []byte) *bufRef {
	r := &bufRef{buf: buf, free: free}
	r.n.Store(1)
	return r
}

// hold takes one more hold and returns its release.
func (r *bufRef) hold() func() {
	r.n.Add(1)
	return r.release
}

// release lets go of one hold.
func (r *bufRef) release() {
	if r.n.Add(-1) == 0 {
		r.free <- r.buf
	}
}

// writeChunk writes the parts of ch that the plan's extents cover (all of
// it without extents) and zeroes the holes before them.
func (c *copier) writeChunk(ctx context.Context, ch chunk, ref *bufRef) error {
	off, end := ch.off, ch.off+int64(ch.n)
	if !c.growable && end > c.capacity {
		return c.fail(tooBig(c.target, c.capacity, fmt.Sprintf("the %s image %s unpacks to more (stopped at offset %d, the target is incomplete)", describeFormat(c.p.format), c.image, c.rep.Bytes)))
	}
	if b := c.p.bmap; b != nil && end > b.ImageSize {
		return c.fail(fmt.Errorf("%w: %w: the %s image %s unpacks to more than the %d bytes its bmap %s says (stopped at offset %d): the bmap belongs to another image", ErrImage, ErrBmap, describeFormat(c.p.format), c.image, b.ImageSize, c.p.bmapPath, c.rep.Bytes))
	}
	if c.p.exts == nil {
		if err := c.put(ch.buf[:ch.n], off, "", ref); err != nil {
			return c.fail(err)
		}
	}
	for pos := off; c.p.exts != nil && pos < end && c.ri < len(c.p.exts); {
		e := c.p.exts[c.ri]
		if e.start >= end {
			break
		}
		a, b := max(pos, e.start), min(end, e.end)
		if c.p.zeroHoles {
			if err := c.zeroTo(ctx, a); err != nil {
				return c.fail(err)
			}
			c.zpos = b
		}
		if err := c.put(ch.buf[a-off:b-off], a, e.name, ref); err != nil {
			return c.fail(err)
		}
		if b == e.end {
			c.ri++
		}
		pos = b
	}
	if err := c.maybeSync(ctx); err != nil {
		return c.fail(err)
	}
	return nil
}

// record adds p, written at offset at of extent name, to the segments the
// read-back checks (their CRC-32C, segments up to verifySegment long).
func (c *copier) record(p []byte, at int64, name string) {
	for q, a := p, at; len(q) > 0; {
		if c.cur != nil && (c.cur.end != a || c.cur.name != name || c.cur.end-c.cur.start >= verifySegment) {
			c.closeSegment()
		}
		if c.cur == nil {
			c.cur = &written{start: a, end: a, name: name}
		}
		k := min(int64(len(q)), verifySegment-(c.cur.end-c.cur.start))
		c.cur.sum = crc32.Update(c.cur.sum, castagnoli, q[:k])
		c.cur.end += k
		q, a = q[k:], a+k
	}
}

// closeSegment ends the open read-back segment.
func (c *copier) closeSegment() {
	if c.cur != nil {
		c.done = append(c.done, *c.cur)
		c.cur = nil
	}
}

// put writes p at offset at of the target (asynchronously: p's buffer is
// held until the write is done) and records it for the read-back.
func (c *copier) put(p []byte, at int64, name string, ref *bufRef) error {
	c.record(p, at, name)
	if err := c.o.faults.onWrite(at, len(p)); err != nil {
		return writeFailed(c.target, at, err)
	}
	if err := c.wr.failed(); err != nil {
		return err
	}
	c.wr.submit(p, at, ref.hold())
	c.rep.MappedBytes += int64(len(p))
	return nil
}

// zeroTo zeroes the target from zpos up to end (a hole of the image), in
// pieces that the read-back checks apart.
func (c *copier) zeroTo(ctx context.Context, end int64) error {
	for c.zpos < end {
		if err := ctx.Err(); err != nil {
			return c.stopped(err)
		}
		if err := c.wr.failed(); err != nil {
			return err
		}
		n := min(end-c.zpos, verifySegment)
		c.closeSegment()
		c.done = append(c.done, written{start: c.zpos, end: c.zpos + n, zero: true, name: "a hole of the image"})
		c.wr.submitZero(c.zpos, n)
		c.rep.ZeroedBytes += n
		c.zpos += n
		if err := c.maybeSync(ctx); err != nil {
			return err
		}
	}
	return nil
}

// maybeSync syncs when Options.SyncEvery bytes were covered since the
// last sync.
func (c *copier) maybeSync(ctx context.Context) error {
	if c.o.SyncEvery > 0 && c.rep.MappedBytes+c.rep.ZeroedBytes-c.lastCover >= c.o.SyncEvery {
		return c.sync(ctx)
	}
	return nil
}

// sync waits for the writes in flight, makes them durable and hands what
// is durable to the read-back.
func (c *copier) sync(ctx context.Context) error {
	if err := c.wr.drain(); err != nil {
		return err
	}
	if c.direct != nil {
		if err := c.direct.Sync(); err != nil {
			return fmt.Errorf("%w: sync %s: %w", ErrTarget, c.target, err)
		}
	}
	if err := c.dst.Sync(); err != nil {
		return fmt.Errorf("%w: sync %s: %w", ErrTarget, c.target, err)
	}
	c.lastCover = c.rep.MappedBytes + c.rep.ZeroedBytes
	c.o.faults.onSync(c.rep.MappedBytes)
	if err := ctx.Err(); err != nil {
		// Cancelled while syncing: say how far the write got, not that
		// the read-back stopped.
		return c.stopped(err)
	}
	if c.ver == nil {
		return nil
	}
	// Everything written so far is durable: hand it to the read-back,
	// the open segment too.
	c.closeSegment()
	c.ver.add(c.done[c.handed:], false)
	c.handed = len(c.done)
	return c.ver.failed()
}

// atEnd checks, at the stream's clean end, that the image had the size the
// plan expects, and zeroes its last hole.
func (c *copier) atEnd(ctx context.Context) error {
	c.closeSegment()
	if c.p.format == Raw && c.rep.Bytes != c.p.fileSize {
		return c.fail(fmt.Errorf("%w: %s changed while it was flashed: read %d bytes, expected %d", ErrImage, c.image, c.rep.Bytes, c.p.fileSize))
	}
	if c.p.zeroHoles {
		if err := c.zeroTo(ctx, c.p.fileSize); err != nil { // the last hole, or all of a blank image
			return c.fail(err)
		}
	}
	if b := c.p.bmap; b != nil && c.rep.Bytes != b.ImageSize {
		return c.fail(fmt.Errorf("%w: %w: the %s image %s unpacks to %d bytes, its bmap %s says %d: the bmap belongs to another image; the target is incomplete", ErrImage, ErrBmap, describeFormat(c.p.format), c.image, c.rep.Bytes, c.p.bmapPath, b.ImageSize))
	}
	return nil
}

// streamFailed describes a stream that ended with err: cancelled, an
// image that changed, a bmap mismatch, or a corrupt or truncated stream.
func (c *copier) streamFailed(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		// The decoder command was killed by the cancel: not the image's
		// fault.
		return c.stopped(cerr)
	}
	if c.imageChanged() {
		return c.fail(errChanged(c.image))
	}
	if errors.Is(err, ErrImage) {
		return c.fail(err)
	}
	c.settle()
	return fmt.Errorf("%w: %s: the %s stream is corrupt or truncated at image offset %d (%d bytes written to the target); the target is incomplete: %w", ErrImage, c.image, describeFormat(c.p.format), c.rep.Bytes, c.rep.MappedBytes, err)
}

// imageChanged says the image file is no longer the one the write began
// with.
func (c *copier) imageChanged() bool {
	st, err := c.file.Stat()
	return err == nil && !sameFile(c.before, st)
}

// settle waits for the writes in flight and sets the Report's counts to
// what reached the target.
func (c *copier) settle() {
	_ = c.wr.drain()
	c.rep.MappedBytes, c.rep.ZeroedBytes, c.rep.ZeroedBy = c.wr.ok.Load(), c.wr.zeroed.Load(), c.wr.zeroedBy()
	c.rep.Direct = c.direct != nil && !c.wr.noDir.Load()
}

// fail settles the Report and returns err.
func (c *copier) fail(err error) error {
	c.settle()
	return err
}

// stopped settles the Report and says how far the write got.
func (c *copier) stopped(err error) error {
	c.settle()
	of := fmt.Sprintf(" of %d", c.total)
	if c.total < 0 {
		of = " (unpacked)"
	}
	return fmt.Errorf("flash %s to %s stopped at image offset %d%s (%d bytes written to the target); the target is incomplete and must be flashed again: %w", c.image, c.target, c.rep.Bytes, of, c.rep.MappedBytes, err)
}

// progress calls Options.Progress; final says the write is done.
func (c *copier) progress(final bool) {
	if c.o.Progress == nil {
		return
	}
	p := Progress{Done: c.rep.Bytes, Total: c.total, Elapsed: time.Since(c.start)}
	switch {
	case c.total > 0:
		p.Fraction = float64(c.rep.Bytes) / float64(c.total)
	case final:
		p.Fraction = 1
	default:
		// The decoder (or the xz command, which shares the descriptor)
		// has read this far into the file.
		if pos := c.position(); pos >= 0 && c.p.fileSize > 0 {
			p.Fraction = min(float64(pos)/float64(c.p.fileSize), 1)
		}
	}
	c.o.Progress(p)
}
