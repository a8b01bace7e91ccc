package console

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// spool is an append-only byte stream that keeps a bounded tail in memory
// and spills older bytes to an unlinked temporary file, so that a console
// printing a gigabyte costs disk, not RAM. Offsets are stream offsets: byte
// off lives in the file when off < base, else in memory.
//
// The memory is a list of fixed-size blocks, filled in turn and never
// moved. When the bytes after a full block reach the limit, the block is
// queued for a background goroutine that writes it to the file (never
// under the console's lock); it stays in memory, and readable, until the
// writer has persisted it, and is dropped (and reused) after that.
//
// A spool is not safe for concurrent use: the console's lock guards it,
// except for sendPending and closeSpill, which only the goroutine that
// appends calls, without the lock. Bytes never change once appended.
type spool struct {
	blocks []*block // in memory, oldest first; the last one is appended to
	last   *block   // the last of blocks (an empty one before the first)
	check  int      // maybeSpill has work when the stream is this long
	n      int      // the stream's length
	base   int      // stream offset of the first byte in memory: bytes before it are in the file only
	limit  int      // memory tail: blocks are spilled once this many bytes follow them; <= 0: never
	bsize  int      // capacity of a block (a multiple of rec)
	rec    int      // record size: a write never straddles two blocks
	dir    string   // where the temporary file goes ("": os.TempDir)

	queued  int          // how many of blocks (from the first) were handed to the writer
	pending []*block     // queued, not yet sent to the writer (see sendPending)
	w       *spiller     // the background writer, started by the first spill
	sent    atomic.Int64 // end of the last block sent to the writer (read by tests)
	free    []*block     // dropped blocks, for reuse

	// joined is a contiguous copy of the stream bytes [jlo, jlo+len(joined))
	// for views that span blocks; a view that starts at or after jlo grows
	// it by the new bytes only.
	joined []byte
	jlo    int
}

type block struct {
	start int    // stream offset of data[0]
	data  []byte // fixed capacity; never moved
}

func (b *block) end() int { return b.start + len(b.data) }

// spiller writes the blocks it receives to the spill file, in order.
type spiller struct {
	ch        chan *block
	dir       string
	f         *os.File     // set before persisted first moves
	persisted atomic.Int64 // stream offset up to which the file holds the bytes
	failed    atomic.Bool
	errMu     sync.Mutex
	err       error
	idle      chan struct{} // closed when the goroutine ends
}

// spillQueue bounds how many blocks wait for the writer: past it, the
// goroutine that appends waits (outside the console's lock), so a disk
// slower than the console slows the reader, not the memory bound.
const spillQueue = 8

// newSpool returns a spool with a memory tail of limit bytes, for records
// of rec bytes, spilling to a file in dir. Its blocks are of bsize bytes,
// or (0) 1 MiB, at most a quarter of the limit.
func newSpool(limit, rec int, dir string, bsize int) spool {
	rec = max(rec, 1)
	if bsize <= 0 {
		bsize = 1 << 20
		if limit > 0 {
			bsize = min(bsize, max(limit/4, 4<<10))
		}
	}
	bsize = max(bsize/rec*rec, rec)
	// last starts as an empty block of no room, so that reserve need not
	// check for none.
	return spool{limit: limit, rec: rec, bsize: bsize, dir: dir, last: &block{}}
}

// len returns the stream's length.
func (s *spool) len() int { return s.n }

// inMemory returns how many bytes of the stream are in memory.
func (s *spool) inMemory() int { return s.n - s.base }

// reserve returns the last block's bytes, with room for at least n more
// in place, for an append: store the result with commit. The n bytes go
// into one block.
func (s *spool) reserve(n int) []byte {
	if len(s.last.data)+n <= cap(s.last.data) {
		return s.last.data // the common case, inlined
	}
	return s.addBlock(n)
}

// addBlock starts a block with room for n bytes and returns its bytes.
func (s *spool) addBlock(n int) []byte {
	b := s.newBlock(max(s.bsize, (n+s.rec-1)/s.rec*s.rec))
	b.start = s.n
	s.blocks = append(s.blocks, b)
	s.last = b
	s.check = 0 // a block may be due for the file
	return b.data
}

// commit stores the last block's bytes after an append to what reserve
// returned.
func (s *spool) commit(p []byte) {
	s.n += len(p) - len(s.last.data)
	s.last.data = p
}

func (s *spool) write(p []byte) {
	s.commit(append(s.reserve(len(p)), p...))
}

func (s *spool) newBlock(size int) *block {
	for i := len(s.free) - 1; i >= 0; i-- {
		if b := s.free[i]; cap(b.data) >= size {
			s.free = append(s.free[:i], s.free[i+1:]...)
			b.data = b.data[:0]
			return b
		}
	}
	return &block{data: make([]byte, 0, size)}
}

// maybeSpill drops the blocks the writer has persisted and queues those
// followed by at least limit bytes. The caller sends the queued blocks with
// sendPending once it has released the console's lock.
func (s *spool) maybeSpill() {
	if s.n >= s.check { // inlined: usually nothing queued, nothing to queue
		s.spill()
	}
}

func (s *spool) spill() {
	defer s.setCheck()
	if s.queued > 0 {
		s.reclaim()
	}
	if s.limit <= 0 || (s.w != nil && s.w.failed.Load()) {
		return
	}
	for s.queued < len(s.blocks)-1 && s.n-s.blocks[s.queued].end() >= s.limit {
		s.pending = append(s.pending, s.blocks[s.queued])
		s.queued++
	}
}

// setCheck sets when maybeSpill next has work: at once while blocks wait
// for the writer, else when the first full block not queued is followed by
// limit bytes (or when a block is added).
func (s *spool) setCheck() {
	switch {
	case s.queued > 0:
		s.check = 0
	case s.limit > 0 && len(s.blocks) > 1:
		s.check = s.blocks[0].end() + s.limit
	default:
		s.check = math.MaxInt
	}
}

// reclaim drops the blocks the writer has persisted.
func (s *spool) reclaim() {
	if s.w == nil || s.queued == 0 {
		return
	}
	done := int(s.w.persisted.Load())
	k := 0
	for k < s.queued && s.blocks[k].end() <= done {
		k++
	}
	if k == 0 {
		return
	}
	s.base = s.blocks[k-1].end()
	for _, b := range s.blocks[:k] {
		if len(s.free) < 2 && cap(b.data) == s.bsize {
			s.free = append(s.free, b)
		}
	}
	s.blocks = append(s.blocks[:0], s.blocks[k:]...)
	clear(s.blocks[len(s.blocks) : len(s.blocks)+k])
	s.queued -= k
	if s.jlo+len(s.joined) <= s.base {
		s.joined = nil
	}
}

// sendPending hands the queued blocks to the writer, starting it on the
// first spill. It may wait for the writer; call it without the console's
// lock, from the goroutine that appends.
func (s *spool) sendPending() {
	if len(s.pending) == 0 {
		return
	}
	if s.w == nil {
		s.w = &spiller{ch: make(chan *block, spillQueue), dir: s.dir, idle: make(chan struct{})}
		s.w.persisted.Store(int64(s.pending[0].start))
		go s.w.run()
	}
	for _, b := range s.pending {
		s.w.ch <- b
		s.sent.Store(int64(b.end()))
	}
	clear(s.pending)
	s.pending = s.pending[:0]
}

// closeSpill ends the writer once it has written what was sent to it. The
// goroutine that appends calls it, without the lock, when it is done.
func (s *spool) closeSpill() {
	s.sendPending()
	if s.w != nil {
		close(s.w.ch)
	}
}

// waitSpilled waits until the writer has written (or failed to write) all
// it was sent, for tests; reclaim then drops the blocks.
func (s *spool) waitSpilled() {
	for s.w != nil && s.w.persisted.Load() < s.sent.Load() && !s.w.failed.Load() {
		time.Sleep(time.Millisecond)
	}
}

// spillErr returns why spilling stopped, or nil.
func (s *spool) spillErr() error {
	if s.w == nil || !s.w.failed.Load() {
		return nil
	}
	s.w.errMu.Lock()
	defer s.w.errMu.Unlock()
	return s.w.err
}

func (w *spiller) run() {
	defer close(w.idle)
	for b := range w.ch {
		if w.failed.Load() {
			continue // the rest stays in memory
		}
		if err := w.write(b); err != nil {
			w.errMu.Lock()
			w.err = fmt.Errorf("console: spool: %w", err)
			w.errMu.Unlock()
			w.failed.Store(true)
			continue
		}
		w.persisted.Store(int64(b.end()))
	}
}

func (w *spiller) write(b *block) error {
	if w.f == nil {
		f, err := os.CreateTemp(w.dir, "jumpstarter-console-*")
		if err != nil {
			return err
		}
		// Unlinked at once: the kernel frees the space when the file is
		// closed, by its finalizer or when the process ends in any way.
		_ = os.Remove(f.Name())
		w.f = f
	}
	_, err := w.f.WriteAt(b.data, int64(b.start))
	return err
}

// blockAt returns the index of the block holding stream byte off (which
// must be in memory).
func (s *spool) blockAt(off int) int {
	if last := len(s.blocks) - 1; off >= s.blocks[last].start {
		return last
	}
	return sort.Search(len(s.blocks), func(i int) bool { return s.blocks[i].end() > off })
}

// stepEnd returns how far from pos a search step may go in one contiguous
// view: to the end of pos's block (the stream's end for the last one).
func (s *spool) stepEnd(pos int) int {
	if pos < s.base || pos >= s.n {
		return s.n
	}
	return s.blocks[s.blockAt(pos)].end()
}

// readAt copies stream bytes [off, off+len(p)) into p; the range must be
// within the stream.
func (s *spool) readAt(p []byte, off int) error {
	if off < s.base {
		n := min(len(p), s.base-off)
		if _, err := s.w.f.ReadAt(p[:n], int64(off)); err != nil && !(err == io.EOF && n == len(p)) {
			return fmt.Errorf("console: spool: read back %d bytes at %d: %w", n, off, err)
		}
		p, off = p[n:], off+n
	}
	if len(p) == 0 {
		return nil
	}
	for i := s.blockAt(off); len(p) > 0; i++ {
		b := s.blocks[i]
		n := copy(p, b.data[off-b.start:])
		p, off = p[n:], off+n
	}
	return nil
}

// view returns stream bytes [lo, hi): a block's memory itself when they
// are all in one, else a copy (valid until the next append or view). A
// read failure of the file yields the memory part only, with its start.
func (s *spool) view(lo, hi int) ([]byte, int) {
	if lo >= hi {
		return nil, lo
	}
	if lo >= s.base {
		if b := s.blocks[s.blockAt(hi-1)]; lo >= b.start {
			return b.data[lo-b.start : hi-b.start], lo
		}
		return s.joinedView(lo, hi), lo
	}
	b := make([]byte, hi-lo)
	if err := s.readAt(b, lo); err != nil {
		lo = max(lo, s.base)
		return s.view(lo, hi)
	}
	return b, lo
}

// joinedView returns [lo, hi) (in memory, across blocks) from the joined
// copy, extending it by the bytes it lacks: a long line that grows across a
// block boundary costs the new bytes per view, not the line.
func (s *spool) joinedView(lo, hi int) []byte {
	jhi := s.jlo + len(s.joined)
	if s.joined == nil || lo < s.jlo || lo > jhi {
		// A fresh copy: earlier views stay valid.
		s.joined, s.jlo = make([]byte, hi-lo, max(2*(hi-lo), 64<<10)), lo
		_ = s.readAt(s.joined, lo)
		return s.joined
	}
	if hi > jhi {
		k := len(s.joined)
		s.joined = append(s.joined, make([]byte, hi-jhi)...)
		_ = s.readAt(s.joined[k:], jhi)
	}
	return s.joined[lo-s.jlo : hi-s.jlo]
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
