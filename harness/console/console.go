// Package console is the expect engine of jumpstarter-go: a lossless,
// timestamped transcript of a device's serial console with an expect cursor
// over it, watchers, marker-framed commands with exit codes, and a login
// helper.
//
// One goroutine drains the port into an append-only transcript from the
// moment [New] is called, so no output is lost while nobody waits for it.
// [Console.Expect] is a cursor over that transcript: a match moves the cursor
// to the end of the match; a timeout moves nothing and its error carries the
// unmatched tail. Timeouts are deadlines taken from the context (a console
// that never stops printing still times out on time), never inactivity
// timeouts. Watchers ([Console.Watch]) see every byte and fail a pending
// expect at once when, for instance, the kernel panics.
//
// Patterns match a cleaned copy of the output: ANSI escape sequences removed
// and every line break variant turned into "\n", unless [Options] asks to keep
// them. The raw bytes are kept too, for logs that must be byte-exact.
//
// Matching is linear in the bytes read, whatever the port's chunking (one
// byte per read on a slow UART): the reader goroutine itself searches each
// read's new bytes for the pending expect's patterns and the watchers, and
// wakes the expect only when it has a result (see [Pattern] for what each
// kind of pattern looks at). The transcript's memory is bounded: the last
// [Options.MemoryTail] bytes of the raw and the cleaned output stay in
// memory, in blocks that never move; older blocks (and their timestamps)
// are written by a background goroutine, never under the console's lock,
// to an unlinked temporary file, from which [Console.Text], [Console.Raw]
// and the logs read them back. [Console.WriteLog] and [Console.WriteRaw]
// stream in bounded chunks.
//
// Error messages quote at most 20 lines (2 KiB) of output and say how much
// they left out; the errors' fields keep more, and the console log has all.
//
// The package imports only the standard library and knows nothing of drivers
// or tests: anything that reads and writes bytes ([io.ReadWriteCloser]) is a
// console.
package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"time"
)

// Options configure a [Console]. The zero value is ready to use.
type Options struct {
	// Name names the console in errors and logs (e.g. the device name).
	Name string
	// KeepANSI keeps ANSI escape sequences in the text patterns match.
	KeepANSI bool
	// KeepCR keeps carriage returns: "\r\n" stays two bytes.
	KeepCR bool
	// DefaultTimeout bounds calls whose context has no deadline. Zero means
	// 30 seconds.
	DefaultTimeout time.Duration
	// Window is how far back, in bytes, a regexp looks into text it has
	// already searched: the longest line an unbounded eager regexp sees
	// whole, and the longest match of one that can span lines. It keeps
	// matching linear in the bytes read. Zero means 4 KiB.
	Window int
	// CharDelay paces [Console.Send]: it waits this long after each byte, for
	// UARTs without flow control whose receive buffers overflow. Zero sends
	// whole strings at once.
	CharDelay time.Duration
	// LineEnding ends the lines that [Console.SendLine] sends. Empty means
	// "\n".
	LineEnding string
	// MaxLine is the longest line, in bytes, that the device's shell
	// accepts: [Console.Run] refuses (with [ErrCommandTooLong], before
	// sending anything) a command whose framed line, markers and
	// [Options.LineEnding] included, is longer. Zero means 1024, what
	// busybox ash's line editor takes; a Linux tty in canonical mode takes
	// 4095, bash with readline more. Negative means no limit.
	MaxLine int
	// MemoryTail is how many bytes of the raw and of the cleaned transcript
	// (each) stay in memory; older bytes and their timestamps are spilled to
	// an unlinked temporary file in TempDir and read back when needed, so
	// that a console flood costs disk, not RAM. Zero means 8 MiB; negative
	// keeps everything in memory. If the file cannot be created or written,
	// the transcript stays in memory. The file is written in blocks (1 MiB,
	// at most a quarter of the tail) by a goroutine of its own; while it
	// catches up, up to 10 more blocks of each stay in memory, and a disk
	// slower than the console slows the reading of the port.
	MemoryTail int
	// MaxBefore bounds [Match.Before]: of longer text between the cursor and
	// a match (a flood before a login prompt) Before keeps the end, and
	// [Match.BeforeCut] says how much it left out; [Console.Text] has all
	// of it. [Console.Run]'s output is never cut. Zero means 64 KiB (a
	// copy of the text before every match is what an expect costs beyond
	// the search); negative means no limit.
	MaxBefore int
	// TempDir is where the spill file goes. Empty means [os.TempDir].
	TempDir string
	// Log, when set, receives every complete line of cleaned output as it
	// arrives, prefixed with its arrival time ([Console.WriteLog] format).
	Log io.Writer
	// Now replaces time.Now for timestamps (tests).
	Now func() time.Time

	// blockSize is the size of the transcript's blocks in memory (tests,
	// to cross block boundaries often); zero means the default.
	blockSize int
}

// Match is the result of a successful [Console.Expect].
type Match struct {
	Index  int      // which of the patterns matched
	Text   string   // the matched text
	Groups []string // capture groups of a regexp; Groups[0] == Text
	Before string   // the text between the cursor and the match (its end, see BeforeCut)
	// BeforeCut is how many bytes of the text between the cursor and the
	// match Before leaves out at its start, when that text is longer than
	// [Options.MaxBefore]; the cursor was at Start-len(Before)-BeforeCut.
	BeforeCut int
	Start     int       // offset of the match in the cleaned transcript
	End       int       // offset just after the match; the new cursor
	At        time.Time // when the match's last byte arrived
}

// Mark is a position in both forms of the transcript, for slicing logs
// ([Console.WriteLog], [Console.WriteRaw]).
type Mark struct {
	Raw   int // offset in the raw bytes
	Clean int // offset in the cleaned text
}

type watcher struct {
	name  string
	s     scan
	after int       // searches start here: the end of the last hit
	pos   int       // the text before pos has been searched
	hit   *watchHit // its earliest hit at or after the cursor not yet passed
}

type watchHit struct {
	name       string
	start, end int
}

// waiter is a pending [Console.Expect]: the reader goroutine searches new
// text for its patterns and settles it.
type waiter struct {
	scans   []scan
	strings bool // all scans are of strings
	pos     int  // the text before pos has been searched
	done    chan struct{}
	settled bool
	m       *Match
	err     error
}

// Console is the transcript and expect cursor of one console port. Its
// methods are safe for concurrent use, but expects share one cursor, so one
// goroutine at a time should drive a conversation.
type Console struct {
	opts   Options
	port   io.ReadWriteCloser
	opened time.Time

	mu       sync.Mutex
	raw      spool
	clean    spool
	stamps   spool // stampSize records of all stamps but the last
	last     stamp // the last stamp, extended by each read until the next one starts
	nstamps  int
	lastMono time.Duration // when the last stamp started, since opened (real clock only)
	// realClock: Options.Now is time.Now, so a read within a millisecond
	// of the last stamp needs only a monotonic clock reading.
	realClock bool
	loc       *time.Location // of the timestamps read back from the spool
	cl        cleaner
	readErr   error // set once the reader stops
	cursor    int
	watchers  []*watcher
	waiters   []*waiter
	logged    int // clean offset up to which Options.Log has lines
	logSeen   int // clean offset up to which the text was searched for a newline

	sendMu  sync.Mutex
	writes  chan writeReq
	stop    chan struct{} // closed by Close: ends the writer
	readerD chan struct{}
	closeMu sync.Mutex
	closed  bool
}

// stepMax bounds how much text one search step looks at: an expect that
// starts behind a long backlog catches up in steps, letting the reader in
// between them.
const stepMax = 1 << 20

// New starts draining port into a transcript and returns its console. The
// console owns port: [Console.Close] closes it.
func New(port io.ReadWriteCloser, opts Options) *Console {
	if opts.DefaultTimeout <= 0 {
		opts.DefaultTimeout = 30 * time.Second
	}
	if opts.Window <= 0 {
		opts.Window = 4 << 10
	}
	if opts.LineEnding == "" {
		opts.LineEnding = "\n"
	}
	if opts.MaxLine == 0 {
		opts.MaxLine = 1024
	}
	if opts.MaxBefore == 0 {
		opts.MaxBefore = 64 << 10
	}
	if opts.MemoryTail == 0 {
		opts.MemoryTail = 8 << 20
	}
	if opts.MemoryTail > 0 {
		// The tail kept after a spill must hold what a search looks back.
		opts.MemoryTail = max(opts.MemoryTail, 8*opts.Window+2*stepMax)
	}
	realClock := opts.Now == nil
	if realClock {
		opts.Now = time.Now
	}
	if opts.Name == "" {
		opts.Name = "console"
	}
	c := &Console{
		opts:      opts,
		realClock: realClock,
		port:      port,
		opened:    opts.Now(),
		raw:       newSpool(opts.MemoryTail, 1, opts.TempDir, opts.blockSize),
		clean:     newSpool(opts.MemoryTail, 1, opts.TempDir, opts.blockSize),
		stamps:    newSpool(stampLimit(opts.MemoryTail), stampSize, opts.TempDir, opts.blockSize),
		cl:        cleaner{stripANSI: !opts.KeepANSI, newlines: !opts.KeepCR},
		readerD:   make(chan struct{}),
		writes:    make(chan writeReq),
		stop:      make(chan struct{}),
	}
	c.loc = c.opened.Location()
	go c.read()
	go c.writer()
	return c
}

// stampLimit is the memory tail of the stamps: they are few (one per
// millisecond of output at most) but a console printing for days makes many.
func stampLimit(memoryTail int) int {
	if memoryTail < 0 {
		return -1
	}
	return max(memoryTail/64, 64*stampSize)
}

// Name returns the console's name.
func (c *Console) Name() string { return c.opts.Name }

func (c *Console) read() {
	defer close(c.readerD)
	// The port reads straight into the raw transcript's last block, past
	// its end: nobody else looks there, and the block never moves.
	c.mu.Lock()
	buf := c.raw.reserve(readSize)
	c.mu.Unlock()
	for {
		n, err := c.port.Read(buf[len(buf) : len(buf)+readSize])
		if n > 0 {
			buf = c.append(buf[:len(buf)+n], n)
			// Spilled blocks go to the file writers outside the lock.
			c.raw.sendPending()
			c.clean.sendPending()
			c.stamps.sendPending()
		}
		if err != nil {
			c.mu.Lock()
			if c.readErr == nil {
				c.readErr = err
			}
			c.flushLogLocked(true)
			c.settleAllLocked()
			c.mu.Unlock()
			c.raw.closeSpill()
			c.clean.closeSpill()
			c.stamps.closeSpill()
			return
		}
	}
}

// readSize is how much one read of the port asks for.
const readSize = 32 << 10

// append adds the n bytes that the port read to the end of raw, the raw
// transcript's last block, and returns the block to read into next.
func (c *Console) append(raw []byte, n int) []byte {
	p := raw[len(raw)-n:]
	// One stamp per millisecond at most keeps the index small however the
	// port chunks its output: a read within a millisecond of the last
	// stamp extends it, and costs one monotonic clock reading.
	var now time.Time
	var mono time.Duration
	var fresh bool
	if c.realClock {
		mono = time.Since(c.opened)
		if fresh = c.nstamps == 0 || mono-c.lastMono >= time.Millisecond; fresh {
			now = time.Now()
			mono = now.Sub(c.opened)
		}
	} else {
		now = c.opts.Now()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.realClock {
		fresh = c.nstamps == 0 || now.Sub(c.last.t) >= time.Millisecond
	}
	c.raw.commit(raw)
	// A CR held back from the last read may add a byte.
	c.clean.commit(c.cl.feed(c.clean.reserve(len(p)+1), p))
	if fresh {
		if c.nstamps > 0 {
			var rec [stampSize]byte
			putStamp(rec[:], c.last)
			c.stamps.write(rec[:])
		}
		c.last = stamp{t: now}
		c.nstamps++
		c.loc = now.Location()
		c.lastMono = mono
	}
	c.last.clean, c.last.raw = c.clean.len(), c.raw.len()
	c.scanWatchersLocked()
	c.settleAllLocked()
	c.flushLogLocked(false)
	c.raw.maybeSpill()
	c.clean.maybeSpill()
	c.stamps.maybeSpill()
	return c.raw.reserve(readSize)
}

// stepEndLocked returns where a search step from pos ends (at most end):
// at most stepMax bytes on, and within pos's block of the transcript, so
// that the step's text is contiguous in memory; a step that starts close
// after a block boundary stops soon, so that only the text it looks back at
// across the boundary is copied.
func (c *Console) stepEndLocked(pos, end int) int {
	stepEnd := min(end, pos+stepMax)
	if pos < c.clean.base || pos >= end {
		return stepEnd
	}
	if last := c.clean.blocks[len(c.clean.blocks)-1]; pos-last.start >= 4*c.opts.Window {
		return stepEnd // the common case: well inside the last block
	}
	b := c.clean.blocks[c.clean.blockAt(pos)]
	stepEnd = min(stepEnd, b.end())
	if b.start > 0 && pos-b.start < 4*c.opts.Window {
		stepEnd = min(stepEnd, pos+4*c.opts.Window)
	}
	return stepEnd
}

// settleAllLocked searches the new text for the pending expects and wakes
// those that have a result.
func (c *Console) settleAllLocked() {
	if len(c.waiters) == 0 {
		return
	}
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !c.settleLocked(w, -1) {
			kept = append(kept, w)
		}
	}
	clear(c.waiters[len(kept):])
	c.waiters = kept
}

// viewLocked returns the cleaned text from lo (or later, see below) to hi,
// and where it starts. Text still in memory comes without a copy; text
// read back from the spill file is limited to what one search step may
// look at: a line longer than that is seen in its end only.
func (c *Console) viewLocked(lo, hi, back int) ([]byte, int) {
	lo = max(lo, 0)
	if lo < c.clean.base {
		lo = max(lo, hi-stepMax-back)
	}
	return c.clean.view(lo, hi)
}

// searchLocked runs one scan up to end.
func (c *Console) searchLocked(s *scan, cursor, end int, final bool) []int {
	back := lookBack(&s.p, c.opts.Window)
	text, base := c.viewLocked(max(cursor, min(s.from, end)-back), end, back)
	return s.find(text, base, cursor, end, c.opts.Window, final)
}

// scanWatchersLocked records the watchers' hits in the text that arrived.
func (c *Console) scanWatchersLocked() {
	end := c.clean.len()
	for _, w := range c.watchers {
		// A watcher may fire several times; each search resumes after its
		// last hit. Only its first hit at or after the cursor can fail an
		// expect (no match moves the cursor past it), so that is all it
		// keeps.
		for w.pos < end {
			stepEnd := c.stepEndLocked(w.pos, end)
			loc := c.searchLocked(&w.s, w.after, stepEnd, stepEnd == end)
			if loc == nil {
				w.pos = stepEnd
				continue
			}
			if loc[0] >= c.cursor && w.hit == nil {
				w.hit = &watchHit{name: w.name, start: loc[0], end: loc[1]}
			}
			w.after, w.s.from, w.s.seen, w.pos = loc[1], loc[1], loc[1], loc[1]
			if loc[1] == loc[0] {
				w.pos = stepEnd // an empty match: do not find it again
			}
		}
	}
}

// firstHitLocked returns the earliest watcher hit at or after the cursor.
func (c *Console) firstHitLocked() *watchHit {
	var first *watchHit
	for _, w := range c.watchers {
		if h := w.hit; h != nil && h.start >= c.cursor && (first == nil || h.start < first.start) {
			first = h
		}
	}
	return first
}

// settleLocked searches the text after w.pos, in steps of at most stepMax
// bytes and at most budget of them (negative: all), and settles w when one
// of its patterns matched, a watcher fired, or the port closed. It reports
// whether w is settled; w.done is closed then.
func (c *Console) settleLocked(w *waiter, budget int) bool {
	if c.noStringMatchLocked(w) {
		return false
	}
	for {
		end := c.clean.len()
		if w.pos < end {
			stepEnd := c.stepEndLocked(w.pos, end)
			if m, err := c.searchStepLocked(w, stepEnd, stepEnd == end); m != nil || err != nil {
				c.settle(w, m, err)
				return true
			}
			w.pos = stepEnd
		}
		// Nothing matched before pos: a watcher's hit there wins, because a
		// later match would end after it.
		if h := c.firstHitLocked(); h != nil && h.start < w.pos {
			c.settle(w, nil, c.watchErrorLocked(h))
			return true
		}
		if w.pos >= end {
			if c.readErr != nil {
				c.settle(w, nil, &ClosedError{Console: c.opts.Name, Err: c.readErr, Tail: c.tailLocked(), Unmatched: end - c.cursor})
				return true
			}
			return false
		}
		if budget--; budget == 0 {
			return false
		}
	}
}

// noStringMatchLocked is the reader's common case, the new text of one
// read and an expect of strings without watchers: when none of the strings
// is in the new text (with its overlap), it moves w past it, as the search
// steps would, and reports true. Otherwise it changes nothing.
func (c *Console) noStringMatchLocked(w *waiter) bool {
	end := c.clean.len()
	if !w.strings || len(c.watchers) > 0 || c.readErr != nil || w.pos >= end || end-w.pos > stepMax || w.pos < c.clean.base {
		return false
	}
	b := c.clean.blocks[len(c.clean.blocks)-1]
	for i := range w.scans {
		s := &w.scans[i]
		start := max(c.cursor, min(s.from, end)-len(s.p.lit)+1)
		if start < b.start || bytes.Index(b.data[start-b.start:end-b.start], s.p.lit) >= 0 {
			return false
		}
	}
	for i := range w.scans {
		w.scans[i].from = end
	}
	w.pos = end
	return true
}

func (c *Console) settle(w *waiter, m *Match, err error) {
	w.m, w.err, w.settled = m, err, true
	close(w.done)
}

// searchStepLocked searches the scans up to end and returns the earliest
// match (moving the cursor past it) or a watcher's hit before it.
func (c *Console) searchStepLocked(w *waiter, end int, final bool) (*Match, error) {
	best, bestLoc := -1, []int(nil)
	for i := range w.scans {
		loc := c.searchLocked(&w.scans[i], c.cursor, end, final)
		if loc != nil && (bestLoc == nil || loc[0] < bestLoc[0]) {
			best, bestLoc = i, loc
		}
	}
	if bestLoc == nil {
		return nil, nil
	}
	if h := c.firstHitLocked(); h != nil && h.start < bestLoc[1] {
		return nil, c.watchErrorLocked(h)
	}
	from := c.cursor
	if n := bestLoc[0] - from; c.opts.MaxBefore > 0 && n > c.opts.MaxBefore {
		from = bestLoc[0] - c.opts.MaxBefore
	}
	m := &Match{Index: best, Start: bestLoc[0], End: bestLoc[1], Before: c.textLocked(from, bestLoc[0]), BeforeCut: from - c.cursor, At: c.timeAtLocked(bestLoc[1] - 1)}
	for g := 0; g+1 < len(bestLoc); g += 2 {
		if bestLoc[g] < 0 {
			m.Groups = append(m.Groups, "")
			continue
		}
		m.Groups = append(m.Groups, c.textLocked(bestLoc[g], bestLoc[g+1]))
	}
	m.Text = m.Groups[0]
	c.cursor = bestLoc[1]
	return m, nil
}

func (c *Console) watchErrorLocked(h *watchHit) *WatchError {
	end := c.clean.len()
	lo, hi := max(0, h.start-contextBytes), min(end, h.end+contextBytes)
	return &WatchError{Console: c.opts.Name, Watch: h.name, Text: c.textLocked(h.start, h.end), Offset: h.start, Context: c.textLocked(lo, hi)}
}

// textLocked returns the cleaned text [lo, hi) ("" if it cannot be read
// back).
func (c *Console) textLocked(lo, hi int) string {
	if lo >= c.clean.base {
		v, _ := c.clean.view(lo, hi)
		return string(v)
	}
	b, err := c.clean.copyRange(lo, hi)
	if err != nil {
		return ""
	}
	return string(b)
}

// flushLogLocked writes the complete lines that arrived since the last call
// to Options.Log; with all, also the incomplete last line.
func (c *Console) flushLogLocked(all bool) {
	if c.opts.Log == nil {
		return
	}
	end := c.clean.len()
	if !all {
		look := max(c.logged, c.logSeen)
		text, base := c.clean.view(look, end)
		i := lastIndexNL(text)
		c.logSeen = end
		if i < 0 {
			return
		}
		end = base + i + 1
	}
	if end > c.logged {
		lf := logFormatter{c: c}
		text, base := c.clean.view(c.logged, end)
		b := lf.format(nil, text, base)
		if lf.mid {
			b = append(b, '\n')
		}
		_, _ = c.opts.Log.Write(b)
		c.logged = end
	}
}

func lastIndexNL(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			return i
		}
	}
	return -1
}

// closeWait bounds how long Close waits for the reader after closing the
// port: a port whose Read ignores Close must not hang a test's cleanup.
const closeWait = 10 * time.Second

// Close closes the port and waits (at most 10 s) for the reader to stop.
// Pending and later expects fail with [ErrClosed]; the transcript stays
// readable.
func (c *Console) Close() error {
	c.closeMu.Lock()
	first := !c.closed
	c.closed = true
	c.closeMu.Unlock()
	var err error
	if first {
		close(c.stop)
		if cerr := c.port.Close(); cerr != nil {
			err = fmt.Errorf("console %s: close: %w", c.opts.Name, cerr)
		}
	}
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-c.readerD:
	case <-t.C:
		return errors.Join(err, fmt.Errorf("console %s: the port's Read did not return within %s of Close (a driver bug); the reader is abandoned", c.opts.Name, closeWait))
	}
	return err
}

// Done is closed when the reader has stopped (port closed or failed).
func (c *Console) Done() <-chan struct{} { return c.readerD }

// Err returns why the reader stopped, or nil while it runs.
func (c *Console) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr
}

// Watch adds a watcher: from now on, output matching p fails any pending or
// later [Console.Expect] whose cursor is before it with a [WatchError] named
// name, until [Console.Discard] moves the cursor past it. Typical watchers
// are "Kernel panic" and the firmware's "No bootable device". A regexp
// watcher sees complete lines, each once, so watchers cost little however
// the port chunks a long line.
func (c *Console) Watch(name string, p Pattern) {
	if p.kind == kindRegexp {
		p.lines = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// A watcher sees what the cursor has not passed yet, so one added
	// right after New misses nothing.
	w := &watcher{name: name, s: scan{p: p, from: c.cursor}, after: c.cursor, pos: c.cursor}
	c.watchers = append(c.watchers, w)
	c.scanWatchersLocked()
	c.settleAllLocked()
}

// Unwatch removes the watchers named name, with their hits that no expect
// reported yet.
func (c *Console) Unwatch(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watchers = slices.DeleteFunc(c.watchers, func(w *watcher) bool { return w.name == name })
}

// withDeadline applies the default timeout to a context without a deadline.
func (c *Console) withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.opts.DefaultTimeout)
}

// Expect waits until one of patterns appears after the cursor, moves the
// cursor to the end of the earliest match and returns it. When several
// patterns match, the one that starts first wins, and among those the first
// in the list.
//
// Expect fails with a [*TimeoutError] when ctx ends first (a context without
// deadline gets [Options.DefaultTimeout]), with a [*WatchError] when a watcher
// fires before the match, and with a [*ClosedError] when the port ends. On
// failure the cursor does not move.
func (c *Console) Expect(ctx context.Context, patterns ...Pattern) (*Match, error) {
	if len(patterns) == 0 {
		return nil, fmt.Errorf("console %s: Expect needs at least one pattern", c.opts.Name)
	}
	for i, p := range patterns {
		if p.src == "" || (p.kind == kindString && len(p.lit) == 0) {
			return nil, fmt.Errorf("console %s: pattern %d is empty: an empty pattern would match anything", c.opts.Name, i+1)
		}
	}
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	began := time.Now()
	w := &waiter{scans: make([]scan, len(patterns)), done: make(chan struct{})}
	c.mu.Lock()
	w.strings = true
	for i, p := range patterns {
		w.scans[i] = scan{p: p, from: c.cursor}
		w.strings = w.strings && p.kind == kindString
	}
	w.pos = c.cursor
	// Catch up with the text that arrived before, a few steps at a time, so
	// that the reader is never kept waiting long; then leave the rest to the
	// reader.
	for !c.settleLocked(w, 4) && w.pos < c.clean.len() {
		c.mu.Unlock()
		if ctx.Err() != nil {
			c.mu.Lock()
			break
		}
		c.mu.Lock()
	}
	if !w.settled {
		c.waiters = append(c.waiters, w)
	}
	c.mu.Unlock()
	select {
	case <-w.done:
		return w.m, w.err
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if w.settled {
		// The result came together with the deadline: it counts, since the
		// cursor may have moved.
		return w.m, w.err
	}
	c.waiters = slices.DeleteFunc(c.waiters, func(x *waiter) bool { return x == w })
	err := &TimeoutError{Console: c.opts.Name, Waited: time.Since(began), Tail: c.tailLocked(), Unmatched: c.clean.len() - c.cursor, Err: ctx.Err()}
	for _, p := range patterns {
		err.Patterns = append(err.Patterns, p.String())
		err.Sources = append(err.Sources, p.Source())
	}
	return nil, err
}

func (c *Console) tailLocked() string {
	end := c.clean.len()
	return c.textLocked(max(c.cursor, end-tailMax), end)
}

// stampAtLocked returns the i-th stamp.
func (c *Console) stampAtLocked(i int) stamp {
	if i == c.nstamps-1 {
		return c.last
	}
	off := i * stampSize
	var rec [stampSize]byte
	if err := c.stamps.readAt(rec[:], off); err != nil {
		return c.last
	}
	return getStamp(rec[:], c.loc)
}

// stampIndexLocked returns the index of the first stamp covering the clean
// byte at off (nstamps if none yet).
func (c *Console) stampIndexLocked(off int) int {
	return sort.Search(c.nstamps, func(i int) bool { return c.stampAtLocked(i).clean > off })
}

// timeAtLocked returns when the clean byte at offset off arrived.
func (c *Console) timeAtLocked(off int) time.Time {
	i := c.stampIndexLocked(off)
	if i == c.nstamps {
		if i == 0 {
			return c.opened
		}
		return c.last.t
	}
	return c.stampAtLocked(i).t
}

// lastActivity returns when the last byte arrived, or when the console
// opened.
func (c *Console) lastActivity() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nstamps > 0 {
		return c.last.t
	}
	return c.opened
}

// Cursor returns the cursor's offset in the cleaned transcript.
func (c *Console) Cursor() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cursor
}

// Discard moves the cursor to the end of what has arrived, so that later
// expects (and watchers' earlier hits) see only newer output.
func (c *Console) Discard() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cursor = c.clean.len()
	for _, w := range c.watchers {
		w.hit = nil
	}
	for _, w := range c.waiters {
		w.pos = max(w.pos, c.cursor)
	}
}

// Mark returns the current end of the transcript.
func (c *Console) Mark() Mark {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Mark{Raw: c.raw.len(), Clean: c.clean.len()}
}

// copyChunk is how much of the transcript the readers copy per hold of the
// console's lock.
const copyChunk = 256 << 10

// Text returns a copy of the cleaned transcript between two marks; a zero
// "to" means the end.
func (c *Console) Text(from, to Mark) string {
	b, _ := c.copyOut(&c.clean, from.Clean, to.Clean)
	return string(b)
}

// Raw returns a copy of the raw bytes between two marks; a zero "to" means
// the end.
func (c *Console) Raw(from, to Mark) []byte {
	b, _ := c.copyOut(&c.raw, from.Raw, to.Raw)
	return b
}

// copyOut copies [lo, hi) of s in chunks, taking the lock per chunk.
func (c *Console) copyOut(s *spool, lo, hi int) ([]byte, error) {
	c.mu.Lock()
	lo, hi = boundsOf(lo, hi, s.len())
	c.mu.Unlock()
	out := make([]byte, hi-lo)
	for off := lo; off < hi; off += copyChunk {
		n := min(copyChunk, hi-off)
		c.mu.Lock()
		err := s.readAt(out[off-lo:off-lo+n], off)
		c.mu.Unlock()
		if err != nil {
			return out[:off-lo], err
		}
	}
	return out, nil
}

func boundsOf(lo, hi, n int) (int, int) {
	if hi <= 0 || hi > n {
		hi = n
	}
	return min(max(lo, 0), hi), hi
}

// WriteRaw writes the raw bytes between two marks to w; a zero "to" means
// the end. It copies a bounded chunk at a time and does not hold the
// console's lock while w writes.
func (c *Console) WriteRaw(w io.Writer, from, to Mark) error {
	c.mu.Lock()
	lo, hi := boundsOf(from.Raw, to.Raw, c.raw.len())
	c.mu.Unlock()
	buf := make([]byte, min(copyChunk, hi-lo))
	for off := lo; off < hi; off += copyChunk {
		n := min(copyChunk, hi-off)
		c.mu.Lock()
		err := c.raw.readAt(buf[:n], off)
		c.mu.Unlock()
		if err != nil {
			return fmt.Errorf("console %s: %w", c.opts.Name, err)
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
	}
	return nil
}

// WriteLog writes the cleaned text between two marks to w, one line per line
// of output, each prefixed with the time its first byte arrived
// ("15:04:05.000000 | text"); a zero "to" means the end. It formats a
// bounded chunk at a time and does not hold the console's lock while w
// writes, so a log of any size costs little memory.
func (c *Console) WriteLog(w io.Writer, from, to Mark) error {
	c.mu.Lock()
	lo, hi := boundsOf(from.Clean, to.Clean, c.clean.len())
	c.mu.Unlock()
	lf := logFormatter{c: c}
	chunk := make([]byte, min(copyChunk, hi-lo))
	var out []byte
	for off := lo; off < hi; off += copyChunk {
		n := min(copyChunk, hi-off)
		c.mu.Lock()
		err := c.clean.readAt(chunk[:n], off)
		if err == nil {
			out = lf.format(out[:0], chunk[:n], off)
		}
		c.mu.Unlock()
		if err != nil {
			return fmt.Errorf("console %s: %w", c.opts.Name, err)
		}
		if _, err := w.Write(out); err != nil {
			return err
		}
	}
	if lf.mid {
		_, err := io.WriteString(w, "\n")
		return err
	}
	return nil
}

// logFormatter turns cleaned text into timestamped log lines, piece by
// piece: a line may span pieces.
type logFormatter struct {
	c   *Console
	mid bool // the last piece ended inside a line
	si  int  // stamp index search hint: stamps before it end at or before the text formatted
	ok  bool // si is valid
}

const logLayout = "15:04:05.000000"

// format appends the log lines of text, the cleaned transcript from base,
// to dst. The console's lock must be held.
func (lf *logFormatter) format(dst, text []byte, base int) []byte {
	for i := 0; i < len(text); {
		if !lf.mid {
			dst = lf.timeAt(base+i).AppendFormat(dst, logLayout)
			dst = append(dst, " | "...)
		}
		j := indexNL(text[i:])
		if j < 0 {
			dst = append(dst, text[i:]...)
			lf.mid = true
			break
		}
		dst = append(dst, text[i:i+j+1]...)
		lf.mid = false
		i += j + 1
	}
	return dst
}

// timeAt is timeAtLocked for offsets that only grow: it walks the stamps
// instead of searching them.
func (lf *logFormatter) timeAt(off int) time.Time {
	c := lf.c
	if !lf.ok {
		lf.si, lf.ok = c.stampIndexLocked(off), true
	}
	for lf.si < c.nstamps && c.stampAtLocked(lf.si).clean <= off {
		lf.si++
	}
	if lf.si == c.nstamps {
		if lf.si == 0 {
			return c.opened
		}
		return c.last.t
	}
	return c.stampAtLocked(lf.si).t
}

func indexNL(b []byte) int {
	for i, ch := range b {
		if ch == '\n' {
			return i
		}
	}
	return -1
}

// Send writes s to the console, paced by [Options.CharDelay]. It fails when
// ctx ends first (a context without deadline gets [Options.DefaultTimeout]),
// which can leave part of s sent.
func (c *Console) Send(ctx context.Context, s string) error {
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if c.opts.CharDelay <= 0 {
		return c.write(ctx, []byte(s))
	}
	t := time.NewTimer(c.opts.CharDelay)
	defer t.Stop()
	for i := 0; i < len(s); i++ {
		if err := c.write(ctx, []byte{s[i]}); err != nil {
			return err
		}
		t.Reset(c.opts.CharDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("console %s: send cancelled after %d of %d bytes: %w", c.opts.Name, i+1, len(s), ctx.Err())
		}
	}
	return nil
}

// SendLine sends s followed by [Options.LineEnding].
func (c *Console) SendLine(ctx context.Context, s string) error {
	return c.Send(ctx, s+c.opts.LineEnding)
}

type writeReq struct {
	p    []byte
	done chan error
}

// writer is the one goroutine that writes to the port, in order: a write
// that outlives its caller's deadline still finishes before the next one.
func (c *Console) writer() {
	for {
		select {
		case req := <-c.writes:
			_, err := c.port.Write(req.p)
			req.done <- err
		case <-c.stop:
			return
		}
	}
}

// write writes p to the port, giving up when ctx ends: a port whose Write
// blocks (a UART without flow) cannot hang the caller.
func (c *Console) write(ctx context.Context, p []byte) error {
	req := writeReq{p: p, done: make(chan error, 1)}
	select {
	case c.writes <- req:
	case <-c.stop:
		return fmt.Errorf("console %s: write: %w", c.opts.Name, ErrClosed)
	case <-ctx.Done():
		return fmt.Errorf("console %s: an earlier write is still blocked at the deadline: %w", c.opts.Name, ctx.Err())
	}
	select {
	case err := <-req.done:
		if err != nil {
			return fmt.Errorf("console %s: write: %w: %w", c.opts.Name, ErrPort, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("console %s: write blocked until the deadline: %w", c.opts.Name, ctx.Err())
	}
}
