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
	"strings"
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
	// already searched: the longest line an unbounded regexp sees whole, and
	// the longest match of one that can span lines. It keeps matching linear
	// in the bytes read. Zero means 4 KiB.
	Window int
	// CharDelay paces [Console.Send]: it waits this long after each byte, for
	// UARTs without flow control whose receive buffers overflow. Zero sends
	// whole strings at once.
	CharDelay time.Duration
	// LineEnding ends the lines that [Console.SendLine] sends. Empty means
	// "\n".
	LineEnding string
	// Log, when set, receives every complete line of cleaned output as it
	// arrives, prefixed with its arrival time ([Console.WriteLog] format).
	Log io.Writer
	// Now replaces time.Now for timestamps (tests).
	Now func() time.Time
}

// Errors that callers tell apart with [errors.Is] or [errors.As].
var (
	// ErrTimeout is matched by every [TimeoutError].
	ErrTimeout = errors.New("console: timed out")
	// ErrClosed is returned when the console was closed or its port failed
	// or reached end of file before a pattern matched.
	ErrClosed = errors.New("console: closed")
	// ErrPort is wrapped by errors of the port itself: a write that failed.
	ErrPort = errors.New("console: port failed")
)

// TimeoutError is returned by [Console.Expect] when the deadline passes
// before any pattern matches. It wraps the context's error.
type TimeoutError struct {
	Console  string        // the console's name
	Patterns []string      // what was awaited
	Waited   time.Duration // how long
	Tail     string        // the unmatched text after the cursor (its end, at most 2 KiB)
	Err      error         // context.DeadlineExceeded or context.Canceled
}

func (e *TimeoutError) Error() string {
	what := "timed out"
	if errors.Is(e.Err, context.Canceled) {
		what = "cancelled"
	}
	return fmt.Sprintf("console %s: %s after %s waiting for %s; %s", e.Console, what, e.Waited.Round(time.Millisecond), strings.Join(e.Patterns, " or "), describeTail(e.Tail))
}

// Unwrap returns the context's error.
func (e *TimeoutError) Unwrap() error { return e.Err }

// Is reports whether target is [ErrTimeout].
func (e *TimeoutError) Is(target error) bool { return target == ErrTimeout }

// WatchError is returned by [Console.Expect] when a watcher's pattern appeared
// after the cursor before any awaited pattern did.
type WatchError struct {
	Console string
	Watch   string // the watcher's name
	Text    string // the text the watcher matched
	Context string // the transcript around it
	Offset  int    // where in the cleaned transcript it matched
}

func (e *WatchError) Error() string {
	return fmt.Sprintf("console %s: watcher %q fired on %q at offset %d; output around it:\n%s", e.Console, e.Watch, e.Text, e.Offset, indent(e.Context))
}

// ClosedError is returned when the console ends before a pattern matches.
type ClosedError struct {
	Console string
	Err     error // the port's error, or io.EOF
	Tail    string
}

func (e *ClosedError) Error() string {
	return fmt.Sprintf("console %s: port closed (%v) while waiting; %s", e.Console, e.Err, describeTail(e.Tail))
}

// Unwrap returns the port's error and [ErrClosed].
func (e *ClosedError) Unwrap() []error { return []error{ErrClosed, e.Err} }

func describeTail(tail string) string {
	if tail == "" {
		return "nothing arrived after the cursor"
	}
	return "unmatched output after the cursor:\n" + indent(tail)
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	return "\t| " + strings.ReplaceAll(s, "\n", "\n\t| ")
}

// Match is the result of a successful [Console.Expect].
type Match struct {
	Index  int       // which of the patterns matched
	Text   string    // the matched text
	Groups []string  // capture groups of a regexp; Groups[0] == Text
	Before string    // the text between the cursor and the match
	Start  int       // offset of the match in the cleaned transcript
	End    int       // offset just after the match; the new cursor
	At     time.Time // when the match's last byte arrived
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
	after int // searches start here: the end of the last hit
}

type watchHit struct {
	name       string
	start, end int
}

type stamp struct {
	clean, raw int // ends of the text that had arrived at t
	t          time.Time
}

// Console is the transcript and expect cursor of one console port. Its
// methods are safe for concurrent use, but expects share one cursor, so one
// goroutine at a time should drive a conversation.
type Console struct {
	opts   Options
	port   io.ReadWriteCloser
	opened time.Time

	mu       sync.Mutex
	raw      []byte
	clean    []byte
	cl       cleaner
	stamps   []stamp
	changed  chan struct{} // closed and replaced on an append that someone waits for
	waited   bool          // someone took changed to wait on it
	readErr  error         // set once the reader stops
	cursor   int
	watchers []*watcher
	hits     []watchHit
	logged   int // clean offset up to which Options.Log has lines
	logSeen  int // clean offset up to which the text was searched for a newline

	sendMu  sync.Mutex
	writes  chan writeReq
	stop    chan struct{} // closed by Close: ends the writer
	readerD chan struct{}
	closeMu sync.Mutex
	closed  bool
}

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
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Name == "" {
		opts.Name = "console"
	}
	c := &Console{
		opts:    opts,
		port:    port,
		opened:  opts.Now(),
		cl:      cleaner{stripANSI: !opts.KeepANSI, newlines: !opts.KeepCR},
		changed: make(chan struct{}),
		readerD: make(chan struct{}),
		writes:  make(chan writeReq),
		stop:    make(chan struct{}),
	}
	go c.read()
	go c.writer()
	return c
}

// Name returns the console's name.
func (c *Console) Name() string { return c.opts.Name }

func (c *Console) read() {
	defer close(c.readerD)
	buf := make([]byte, 32<<10)
	for {
		n, err := c.port.Read(buf)
		if n > 0 {
			c.append(buf[:n])
		}
		if err != nil {
			c.mu.Lock()
			if c.readErr == nil {
				c.readErr = err
			}
			c.flushLogLocked(true)
			c.waited = true
			c.notifyLocked()
			c.mu.Unlock()
			return
		}
	}
}

func (c *Console) append(p []byte) {
	now := c.opts.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.raw = append(grow(c.raw, len(p)), p...)
	c.clean = c.cl.feed(grow(c.clean, len(p)), p)
	// One stamp per millisecond at most keeps the index small however the
	// port chunks its output.
	if n := len(c.stamps); n > 0 && now.Sub(c.stamps[n-1].t) < time.Millisecond {
		c.stamps[n-1].clean, c.stamps[n-1].raw = len(c.clean), len(c.raw)
	} else {
		c.stamps = append(c.stamps, stamp{clean: len(c.clean), raw: len(c.raw), t: now})
	}
	c.scanWatchersLocked()
	c.flushLogLocked(false)
	c.notifyLocked()
}

// scanWatchersLocked records the watchers' hits in the text that arrived.
func (c *Console) scanWatchersLocked() {
	for _, w := range c.watchers {
		// A watcher may fire several times; each search resumes after its last hit.
		for {
			loc := w.s.find(c.clean, w.after, len(c.clean), c.opts.Window)
			if loc == nil {
				break
			}
			c.hits = append(c.hits, watchHit{name: w.name, start: loc[0], end: loc[1]})
			w.after, w.s.from = loc[1], loc[1]
		}
	}
}

// notifyLocked wakes the goroutines waiting for new text, if any.
func (c *Console) notifyLocked() {
	if c.waited {
		close(c.changed)
		c.changed = make(chan struct{})
		c.waited = false
	}
}

// grow makes room for n more bytes, doubling the capacity: a transcript of
// N bytes costs at most 2N of allocations in all, not the 5N of append's
// growth for large slices.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), max(2*cap(b), len(b)+n, 64<<10))
	copy(nb, b)
	return nb
}

// flushLogLocked writes the complete lines that arrived since the last call
// to Options.Log; with all, also the incomplete last line.
func (c *Console) flushLogLocked(all bool) {
	if c.opts.Log == nil {
		return
	}
	end := len(c.clean)
	if !all {
		look := max(c.logged, c.logSeen)
		i := bytes.LastIndexByte(c.clean[look:], '\n')
		c.logSeen = len(c.clean)
		if i < 0 {
			return
		}
		end = look + i + 1
	}
	if end > c.logged {
		c.writeLogLocked(c.opts.Log, c.logged, end)
		c.logged = end
	}
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
	w := &watcher{name: name, s: scan{p: p, from: c.cursor}, after: c.cursor}
	c.watchers = append(c.watchers, w)
	c.scanWatchersLocked()
}

// Unwatch removes the watchers named name.
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
	scans := make([]scan, len(patterns))
	c.mu.Lock()
	for i, p := range patterns {
		scans[i] = scan{p: p, from: c.cursor}
	}
	c.mu.Unlock()
	for {
		m, changed, err := c.poll(scans)
		if m != nil || err != nil {
			return m, err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			// Data may have arrived together with the deadline: look once more.
			if m, _, err := c.poll(scans); m != nil || err != nil {
				return m, err
			}
			c.mu.Lock()
			err := &TimeoutError{Console: c.opts.Name, Waited: time.Since(began), Tail: c.tailLocked(), Err: ctx.Err()}
			c.mu.Unlock()
			for _, p := range patterns {
				err.Patterns = append(err.Patterns, p.String())
			}
			return nil, err
		}
	}
}

// poll evaluates the scans once. Without a result it returns the channel
// that the next append closes.
func (c *Console) poll(scans []scan) (*Match, <-chan struct{}, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, err := c.evalLocked(scans)
	if m != nil || err != nil {
		return m, nil, err
	}
	if c.readErr != nil {
		return nil, nil, &ClosedError{Console: c.opts.Name, Err: c.readErr, Tail: c.tailLocked()}
	}
	c.waited = true
	return nil, c.changed, nil
}

// evalLocked searches the new text for the patterns and the watchers' hits.
func (c *Console) evalLocked(scans []scan) (*Match, error) {
	end := len(c.clean)
	best, bestLoc := -1, []int(nil)
	for i := range scans {
		loc := scans[i].find(c.clean, c.cursor, end, c.opts.Window)
		if loc != nil && (bestLoc == nil || loc[0] < bestLoc[0]) {
			best, bestLoc = i, loc
		}
	}
	for _, h := range c.hits {
		if h.start >= c.cursor && (bestLoc == nil || h.start < bestLoc[1]) {
			lo, hi := max(0, h.start-1024), min(end, h.end+1024)
			return nil, &WatchError{Console: c.opts.Name, Watch: h.name, Text: string(c.clean[h.start:h.end]), Offset: h.start, Context: string(c.clean[lo:hi])}
		}
	}
	if bestLoc == nil {
		return nil, nil
	}
	m := &Match{Index: best, Start: bestLoc[0], End: bestLoc[1], Before: string(c.clean[c.cursor:bestLoc[0]]), Text: string(c.clean[bestLoc[0]:bestLoc[1]]), At: c.timeAtLocked(bestLoc[1] - 1)}
	for g := 0; g+1 < len(bestLoc); g += 2 {
		if bestLoc[g] < 0 {
			m.Groups = append(m.Groups, "")
			continue
		}
		m.Groups = append(m.Groups, string(c.clean[bestLoc[g]:bestLoc[g+1]]))
	}
	c.cursor = bestLoc[1]
	return m, nil
}

const tailMax = 2 << 10

func (c *Console) tailLocked() string {
	t := c.clean[c.cursor:]
	if len(t) > tailMax {
		t = t[len(t)-tailMax:]
	}
	return string(t)
}

// timeAtLocked returns when the clean byte at offset off arrived.
func (c *Console) timeAtLocked(off int) time.Time {
	i := sort.Search(len(c.stamps), func(i int) bool { return c.stamps[i].clean > off })
	if i == len(c.stamps) {
		if i == 0 {
			return c.opened
		}
		return c.stamps[i-1].t
	}
	return c.stamps[i].t
}

// lastActivity returns when the last byte arrived, or when the console
// opened.
func (c *Console) lastActivity() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.stamps); n > 0 {
		return c.stamps[n-1].t
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
	c.cursor = len(c.clean)
}

// Mark returns the current end of the transcript.
func (c *Console) Mark() Mark {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Mark{Raw: len(c.raw), Clean: len(c.clean)}
}

// Text returns a copy of the cleaned transcript between two marks; a zero
// "to" means the end.
func (c *Console) Text(from, to Mark) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	lo, hi := c.boundsLocked(from.Clean, to.Clean, len(c.clean))
	return string(c.clean[lo:hi])
}

// Raw returns a copy of the raw bytes between two marks; a zero "to" means
// the end.
func (c *Console) Raw(from, to Mark) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	lo, hi := c.boundsLocked(from.Raw, to.Raw, len(c.raw))
	return slices.Clone(c.raw[lo:hi])
}

func (c *Console) boundsLocked(lo, hi, n int) (int, int) {
	if hi <= 0 || hi > n {
		hi = n
	}
	return min(max(lo, 0), hi), hi
}

// WriteRaw writes the raw bytes between two marks to w; a zero "to" means
// the end.
func (c *Console) WriteRaw(w io.Writer, from, to Mark) error {
	_, err := w.Write(c.Raw(from, to))
	return err
}

// WriteLog writes the cleaned text between two marks to w, one line per line
// of output, each prefixed with the time its first byte arrived
// ("15:04:05.000000 | text"); a zero "to" means the end.
func (c *Console) WriteLog(w io.Writer, from, to Mark) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	lo, hi := c.boundsLocked(from.Clean, to.Clean, len(c.clean))
	return c.writeLogLocked(w, lo, hi)
}

func (c *Console) writeLogLocked(w io.Writer, lo, hi int) error {
	var b strings.Builder
	for lo < hi {
		end := hi
		if i := bytes.IndexByte(c.clean[lo:hi], '\n'); i >= 0 {
			end = lo + i + 1
		}
		b.WriteString(c.timeAtLocked(lo).Format("15:04:05.000000"))
		b.WriteString(" | ")
		b.Write(c.clean[lo:end])
		if c.clean[end-1] != '\n' {
			b.WriteByte('\n')
		}
		lo = end
	}
	_, err := io.WriteString(w, b.String())
	return err
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
