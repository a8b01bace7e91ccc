package console

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"slices"
	"time"
)

// spool is an append-only byte stream that keeps a bounded tail in memory
// and spills older bytes to an unlinked temporary file, so that a console
// printing a gigabyte costs disk, not RAM. Offsets are stream offsets: byte
// off lives in the file when off < base, else in mem[off-base].
//
// A spool is not safe for concurrent use: the console's lock guards it.
// Bytes below base never change, so they may be read from the file while
// later bytes are appended.
type spool struct {
	mem   []byte
	base  int    // stream offset of mem[0]: bytes in the file
	limit int    // spill when mem grows past this; <= 0: never
	rec   int    // record size: spills cut on multiples of it
	dir   string // where the temporary file goes ("": os.TempDir)
	f     *os.File
	err   error // the first spill failure; everything stays in memory after it
}

func newSpool(limit, rec int, dir string) spool {
	return spool{limit: limit, rec: max(rec, 1), dir: dir}
}

// len returns the stream's length.
func (s *spool) len() int { return s.base + len(s.mem) }

// tail returns the memory part, for appending in place; set it back with
// setTail.
func (s *spool) tail() []byte { return s.mem }

// setTail stores the memory part after an in-place append. The caller
// spills with maybeSpill when it is done with the new bytes: a pending
// expect is woken before the file is written.
func (s *spool) setTail(b []byte) { s.mem = b }

// maybeSpill spills when the memory part grew past the limit.
func (s *spool) maybeSpill() {
	if s.limit > 0 && s.err == nil && len(s.mem) > s.limit {
		s.spill()
	}
}

// grow makes room for n more bytes in memory, doubling the capacity: a
// stream of N bytes costs at most 2N of allocations in all, not the 5N of
// append's growth for large slices.
func (s *spool) grow(n int) {
	if cap(s.mem)-len(s.mem) >= n {
		return
	}
	c := max(2*cap(s.mem), len(s.mem)+n, 64<<10)
	if s.limit > 0 {
		c = max(min(c, s.limit+64<<10), len(s.mem)+n) // spills keep it below the limit
	}
	s.mem = slices.Grow(s.mem, c-len(s.mem)) // no zeroing of what is copied
}

func (s *spool) write(p []byte) {
	s.grow(len(p))
	s.mem = append(s.mem, p...)
}

// spill moves all but the last half of the limit to the file.
func (s *spool) spill() {
	keep := s.limit / 2
	n := (len(s.mem) - keep) / s.rec * s.rec
	if n <= 0 {
		return
	}
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, "jumpstarter-console-*")
		if err != nil {
			s.err = fmt.Errorf("console: spool: %w", err)
			return
		}
		// Unlinked at once: the kernel frees the space when the file is
		// closed, by its finalizer or when the process ends in any way.
		_ = os.Remove(f.Name())
		s.f = f
	}
	if _, err := s.f.WriteAt(s.mem[:n], int64(s.base)); err != nil {
		s.err = fmt.Errorf("console: spool: %w", err)
		return
	}
	s.base += n
	m := copy(s.mem, s.mem[n:])
	s.mem = s.mem[:m]
	// Give back a buffer that grew far past the limit (a huge single write).
	if cap(s.mem) > 4*s.limit {
		s.mem = append(make([]byte, 0, 2*s.limit), s.mem...)
	}
}

// readAt copies stream bytes [off, off+len(p)) into p; the range must be
// within the stream.
func (s *spool) readAt(p []byte, off int) error {
	if off < s.base {
		n := min(len(p), s.base-off)
		if _, err := s.f.ReadAt(p[:n], int64(off)); err != nil && !(err == io.EOF && n == len(p)) {
			return fmt.Errorf("console: spool: read back %d bytes at %d: %w", n, off, err)
		}
		p, off = p[n:], off+n
	}
	if len(p) > 0 {
		copy(p, s.mem[off-s.base:])
	}
	return nil
}

// view returns stream bytes [lo, hi): the memory itself when they are all
// in memory (valid until the next append), else a copy read back from the
// file. A read failure yields the memory part only, with its start.
func (s *spool) view(lo, hi int) ([]byte, int) {
	if lo >= s.base {
		return s.mem[lo-s.base : hi-s.base], lo
	}
	b := make([]byte, hi-lo)
	if err := s.readAt(b, lo); err != nil {
		lo = max(lo, s.base)
		return s.mem[lo-s.base : hi-s.base], lo
	}
	return b, lo
}

// copyRange returns a copy of stream bytes [lo, hi).
func (s *spool) copyRange(lo, hi int) ([]byte, error) {
	b := make([]byte, hi-lo)
	return b, s.readAt(b, lo)
}

// stamp says how far the transcript had got at time t.
type stamp struct {
	clean, raw int // ends of the text that had arrived at t
	t          time.Time
}

// stampSize is a stamp's record in the stamps spool: clean end, raw end and
// time (Unix nanoseconds), little-endian.
const stampSize = 24

func putStamp(b []byte, s stamp) {
	binary.LittleEndian.PutUint64(b, uint64(s.clean))
	binary.LittleEndian.PutUint64(b[8:], uint64(s.raw))
	binary.LittleEndian.PutUint64(b[16:], uint64(s.t.UnixNano()))
}

func getStamp(b []byte, loc *time.Location) stamp {
	return stamp{
		clean: int(binary.LittleEndian.Uint64(b)),
		raw:   int(binary.LittleEndian.Uint64(b[8:])),
		t:     time.Unix(0, int64(binary.LittleEndian.Uint64(b[16:]))).In(loc),
	}
}
