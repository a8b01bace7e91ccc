package dutlink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

// Port is an open tty.
type Port = io.ReadWriteCloser

// PortOpener opens the tty at path in raw mode at 115200 8N1 (the DUT UART's
// fixed setting). Close must end a pending Read.
type PortOpener func(path string) (Port, error)

// lockedPort is a port plus the flock that keeps other processes off it.
type lockedPort struct {
	Port
	lockFD int
	once   sync.Once
}

// SetWriteDeadline passes a write deadline to the port when it takes one.
func (p *lockedPort) SetWriteDeadline(t time.Time) error {
	if d, ok := p.Port.(deadliner); ok {
		return d.SetWriteDeadline(t)
	}
	return nil
}

func (p *lockedPort) Close() error {
	var err error
	p.once.Do(func() {
		err = p.Port.Close()
		_ = unix.Close(p.lockFD)
	})
	return err
}

// ttyOpenError says why opening the tty at path failed: ErrGone for a
// missing one, ErrBusy for one another program holds exclusively.
func ttyOpenError(path string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
		return fmt.Errorf("%w: tty %s is missing; check the board's USB cable and power: %w", ErrGone, path, err)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%w: tty %s is open in another program: %w", ErrBusy, path, err)
	}
	return fmt.Errorf("tty %s: %w", path, err)
}

// openLocked takes an exclusive, non-blocking flock on the tty (the lock
// the earlier DUTlink tools used per tty) and opens it. A tty another
// process holds is an error wrapping ErrBusy; a missing one wraps ErrGone.
func openLocked(open PortOpener, path string) (Port, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, ttyOpenError(path, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: tty %s is held by another process (a console or another test); wait for it or close it", ErrBusy, path)
		}
		return nil, fmt.Errorf("tty %s: flock: %w", path, err)
	}
	p, err := open(path)
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("opening tty %s: %w", path, err)
	}
	return &lockedPort{Port: p, lockFD: fd}, nil
}

// ttyMux owns a board's tty: one reader goroutine hands what arrives either
// to a running shell exchange or to the open console. The port is open while
// anyone (the console, an exchange) needs it and closed otherwise, so that
// other processes can use the board in between.
type ttyMux struct {
	path string
	open PortOpener

	ex chan struct{} // a token: held by a shell exchange and by a console write

	mu        sync.Mutex
	port      Port
	gen       int // bumped at every open
	refs      int
	done      chan struct{} // closed when the reader of the current port returns
	dead      error         // why the reader of generation gen stopped
	capturing bool
	capBuf    []byte
	notify    chan struct{}
	con       *consoleView
	swallow   int // CR/LF bytes to drop after returning to console mode
}

func newTTYMux(path string, open PortOpener) *ttyMux {
	return &ttyMux{path: path, open: open, notify: make(chan struct{}, 1), ex: make(chan struct{}, 1)}
}

// lockEx takes the tty for a shell exchange or a console write, waiting
// at most until ctx ends.
func (m *ttyMux) lockEx(ctx context.Context) error {
	select {
	case m.ex <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the tty %s, which another exchange of this process uses: %w", m.path, ctx.Err())
	}
}

func (m *ttyMux) unlockEx() { <-m.ex }

// writeTimeout bounds one write to the tty: a board that takes no byte for
// that long has stopped reading its USB serial.
const writeTimeout = ShellTimeout

// consoleChunk is how much of a console write goes out at a time, so that
// a long paste lets a shell exchange in between.
const consoleChunk = 64

// consoleWriteWait bounds how long a console write waits for a shell
// exchange to end: the longest one, a power command, and its way in and
// out.
const consoleWriteWait = ShellPowerTimeout + 2*ShellTimeout + 2*escapeReplyTimeout

// deadliner is a port whose writes can time out (the tty opened through
// Go's poller).
type deadliner interface{ SetWriteDeadline(time.Time) error }

// acquire opens the port when it is closed and returns its generation.
func (m *ttyMux) acquire(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.port != nil {
		m.refs++
		return m.gen, nil
	}
	p, err := openLocked(m.open, m.path)
	if err != nil {
		return 0, err
	}
	m.gen++
	m.port, m.refs, m.dead = p, 1, nil
	m.done = make(chan struct{})
	go m.reader(p, m.gen, m.done)
	return m.gen, nil
}

// release drops one reference of generation gen and closes the port with
// the last one.
func (m *ttyMux) release(gen int) {
	m.mu.Lock()
	if gen != m.gen || m.port == nil {
		m.mu.Unlock()
		return
	}
	m.refs--
	if m.refs > 0 {
		m.mu.Unlock()
		return
	}
	p, done := m.port, m.done
	m.port = nil
	m.mu.Unlock()
	_ = p.Close()
	<-done
}

func (m *ttyMux) reader(p Port, gen int, done chan struct{}) {
	defer close(done)
	buf := make([]byte, 4096)
	for {
		n, err := p.Read(buf)
		if n > 0 {
			m.dispatch(buf[:n])
		}
		if err == nil {
			continue
		}
		m.mu.Lock()
		if m.gen == gen && m.port == p {
			// Not closed by us: the tty went away under us.
			m.port = nil
			m.dead = fmt.Errorf("%w: tty %s failed (unplugged, or the board rebooted); check its USB cable and power: %w", ErrGone, m.path, err)
			if m.con != nil {
				m.con.end(m.dead)
			}
			m.poke()
			m.mu.Unlock()
			_ = p.Close()
			return
		}
		m.mu.Unlock()
		return
	}
}

func (m *ttyMux) poke() {
	select {
	case m.notify <- struct{}{}:
	default:
	}
}

func (m *ttyMux) dispatch(p []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.capturing {
		m.capBuf = append(m.capBuf, p...)
		m.poke()
		return
	}
	for m.swallow > 0 && len(p) > 0 && (p[0] == '\r' || p[0] == '\n') {
		p = p[1:]
		m.swallow--
	}
	if len(p) > 0 {
		m.swallow = 0
	}
	if m.con != nil && len(p) > 0 {
		m.con.push(p)
	}
}

// write writes to the port of generation gen.
func (m *ttyMux) write(gen int, p []byte) (int, error) {
	m.mu.Lock()
	port, cur, dead := m.port, m.gen, m.dead
	m.mu.Unlock()
	if cur != gen || port == nil {
		if dead != nil && cur == gen {
			return 0, dead
		}
		return 0, fmt.Errorf("tty %s: %w", m.path, os.ErrClosed)
	}
	if d, ok := port.(deadliner); ok {
		_ = d.SetWriteDeadline(time.Now().Add(writeTimeout))
		defer func() { _ = d.SetWriteDeadline(time.Time{}) }()
	}
	// A tty may take part of a write (its buffer holds a few hundred
	// bytes): write the rest too, or a long command loses its line end.
	n := 0
	for n < len(p) {
		k, err := port.Write(p[n:])
		n += k
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return n, fmt.Errorf("%w: the board took no byte on its tty %s for %v: it stopped reading; replug or power-cycle the DUTlink: %w", ErrGone, m.path, writeTimeout, err)
		}
		if err != nil {
			return n, fmt.Errorf("%w: writing tty %s: %w", ErrGone, m.path, err)
		}
		if k == 0 {
			return n, fmt.Errorf("%w: writing tty %s: %w", ErrGone, m.path, io.ErrShortWrite)
		}
	}
	return n, nil
}

// openConsole returns the console view of the tty; only one can be open.
func (m *ttyMux) openConsole(ctx context.Context) (*consoleView, error) {
	gen, err := m.acquire(ctx)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.con != nil {
		m.mu.Unlock()
		m.release(gen)
		return nil, fmt.Errorf("%w: the console of %s is already open in this process; close it first", driver.ErrConsoleBusy, m.path)
	}
	m.con = &consoleView{m: m, gen: gen, ready: make(chan struct{}, 1)}
	m.mu.Unlock()
	return m.con, nil
}

// consoleView is the DUT console on the board's tty. It survives shell
// exchanges and power cycles; it ends when closed or when the tty fails.
type consoleView struct {
	m   *ttyMux
	gen int

	mu     sync.Mutex
	buf    []byte
	err    error
	closed bool
	ready  chan struct{}
	once   sync.Once
}

func (c *consoleView) wake() {
	select {
	case c.ready <- struct{}{}:
	default:
	}
}

func (c *consoleView) push(p []byte) {
	c.mu.Lock()
	c.buf = append(c.buf, p...)
	c.mu.Unlock()
	c.wake()
}

func (c *consoleView) end(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.wake()
}

// Read returns DUT output; it blocks until there is some, the console is
// closed (driver.ErrClosed and os.ErrClosed) or the tty failed (ErrGone).
func (c *consoleView) Read(p []byte) (int, error) {
	for {
		c.mu.Lock()
		switch {
		case c.closed:
			c.mu.Unlock()
			return 0, fmt.Errorf("console %s: %w (%w)", c.m.path, driver.ErrClosed, os.ErrClosed)
		case len(c.buf) > 0:
			n := copy(p, c.buf)
			c.buf = c.buf[n:]
			c.mu.Unlock()
			return n, nil
		case c.err != nil:
			err := c.err
			c.mu.Unlock()
			return 0, err
		}
		c.mu.Unlock()
		<-c.ready
	}
}

// Write sends bytes to the DUT; it waits while a shell exchange runs.
func (c *consoleView) Write(p []byte) (int, error) {
	c.mu.Lock()
	closed, err := c.closed, c.err
	c.mu.Unlock()
	if closed {
		return 0, fmt.Errorf("console %s: %w (%w)", c.m.path, driver.ErrClosed, os.ErrClosed)
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for n < len(p) {
		k, err := c.writeChunk(p[n:min(len(p), n+consoleChunk)])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// writeChunk sends one piece of a console write, between shell exchanges.
func (c *consoleView) writeChunk(p []byte) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), consoleWriteWait)
	defer cancel()
	if err := c.m.lockEx(ctx); err != nil {
		return 0, fmt.Errorf("console %s: %w", c.m.path, err)
	}
	defer c.m.unlockEx()
	return c.m.write(c.gen, p)
}

// Close ends the console and a pending Read.
func (c *consoleView) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.wake()
		c.m.mu.Lock()
		if c.m.con == c {
			c.m.con = nil
		}
		c.m.mu.Unlock()
		c.m.release(c.gen)
	})
	return nil
}

// shell runs fn at the board's shell: it leaves console mode (waiting for
// the firmware's answer to the escape before it sends anything else), turns
// the monitor off, runs fn and returns to console mode, whatever happened
// before: a failed exchange must not leave the board at its shell, where
// the DUT's output is discarded. A nil fn only makes sure that the board is
// in console mode.
func (m *ttyMux) shell(ctx context.Context, fn func(s *shellConn) error) error {
	gen, err := m.acquire(ctx)
	if err != nil {
		return err
	}
	defer m.release(gen)
	if err := m.lockEx(ctx); err != nil {
		return err
	}
	defer m.unlockEx()
	m.mu.Lock()
	m.capturing, m.capBuf = true, nil
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.capturing, m.capBuf, m.swallow = false, nil, 2
		m.mu.Unlock()
	}()
	s := &shellConn{m: m, gen: gen}
	err = s.enter(ctx)
	if err == nil && fn != nil {
		err = fn(s)
	}
	if cerr := s.backToConsole(ctx); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if err != nil && !errors.Is(err, ErrGone) {
		if hint := ttyUsersHint(m.path); hint != "" {
			err = fmt.Errorf("%w%s", err, hint)
		}
	}
	return err
}

// escapeReply is how the firmware answers the console escape.
var escapeReply = []byte("Exiting console mode\r\n#> ")

// escapeReplyTimeout bounds the wait for escapeTaken. A board already at
// its shell (firmware 0.07 after boot, or left there by another program)
// answers the escape only by echoing it; should that echo not come either,
// this is what the exchange waits before it goes on.
const escapeReplyTimeout = time.Second

// escapeTaken reports whether what the board printed shows that it took
// the escape: its answer from console mode, or, at its shell, the echo of
// the five Ctrl-B (its line editor echoes them like any other byte).
func escapeTaken(buf []byte) bool {
	return bytes.Contains(buf, escapeReply) || bytes.Contains(buf, escapeBytes)
}

// escapeBytes are the five Ctrl-B that leave console mode.
var escapeBytes = bytes.Repeat([]byte{0x02}, 5)

// consoleReply is how the firmware answers "console".
var consoleReply = []byte("Entering console mode, type CTRL+B 5 times to exit")

// enter leaves console mode and turns the monitor off. The firmware reads
// the tty one USB packet at a time and, in console mode, forwards a whole
// packet to the DUT: a command written right behind the escape can share
// its packet and reach the DUT's UART instead of the shell. So nothing is
// sent until the escape is answered, or until escapeReplyTimeout says the
// board was at its shell already.
func (s *shellConn) enter(ctx context.Context) error {
	s.clear()
	if _, err := s.m.write(s.gen, escapeBytes); err != nil {
		return err
	}
	s.escaped = true
	if _, err := s.await(ctx, escapeReplyTimeout, escapeTaken); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if err := ctx.Err(); err != nil {
		// The caller gave up before the escape was answered: send nothing
		// that could share its packet (backToConsole waits for the answer).
		return err
	}
	s.answered = true
	if err := s.expect(ctx, "monitor off", "Monitor disabled", ShellTimeout); err != nil {
		if !errors.Is(err, errUnsupported) {
			return err
		}
		// A half-typed line at the shell spoiled the first try.
		return s.expect(ctx, "monitor off", "Monitor disabled", ShellTimeout)
	}
	return nil
}

// backToConsole returns to console mode, even when ctx has ended. When the
// answer does not come and ctx is still live, it tries once more from the
// top: escape (answered only if the first "console" did take effect), then
// "console".
func (s *shellConn) backToConsole(ctx context.Context) error {
	bctx := context.WithoutCancel(ctx)
	if s.escaped && !s.answered {
		// The caller's context ended before the escape was answered: a
		// "console" written now could travel in the escape's packet, which
		// the firmware forwards to the DUT, leaving the board at its shell.
		_, _ = s.await(bctx, escapeReplyTimeout, escapeTaken)
	}
	_, err := s.cmd(bctx, "console", consoleReply, ShellTimeout)
	if err == nil || errors.Is(err, ErrGone) || ctx.Err() != nil {
		// The second try is for a live caller: one whose context ended
		// gets the first only, so that its end stays bounded.
		return wrapConsoleErr(err)
	}
	s.clear()
	if _, werr := s.m.write(s.gen, escapeBytes); werr != nil {
		return wrapConsoleErr(errors.Join(err, werr))
	}
	_, _ = s.await(bctx, escapeReplyTimeout, escapeTaken)
	if _, rerr := s.cmd(bctx, "console", consoleReply, ShellTimeout); rerr != nil {
		return wrapConsoleErr(errors.Join(err, rerr))
	}
	return nil
}

func wrapConsoleErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("returning to console mode (until it does, the board's shell discards the DUT's output): %w", err)
}

var errUnsupported = fmt.Errorf("%w: unsupported command", ErrReply)

// shellConn runs commands at the shell during one exchange.
type shellConn struct {
	m   *ttyMux
	gen int
	// escaped and answered say whether enter sent the escape and whether
	// it then waited for the answer.
	escaped, answered bool
}

var prompt = []byte("#> ")

// clear forgets what the shell printed so far.
func (s *shellConn) clear() {
	s.m.mu.Lock()
	s.m.capBuf = s.m.capBuf[:0]
	s.m.mu.Unlock()
}

// await waits, up to timeout, until done says that what the shell printed
// since the last clear is complete, and returns it. It fails when the tty
// fails, and with an error wrapping context.DeadlineExceeded at the
// timeout.
func (s *shellConn) await(ctx context.Context, timeout time.Duration, done func(buf []byte) bool) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m := s.m
	for {
		m.mu.Lock()
		buf := m.capBuf
		var dead error
		if m.gen != s.gen || m.port == nil {
			dead = m.dead
			if dead == nil {
				dead = fmt.Errorf("tty %s: %w", m.path, os.ErrClosed)
			}
		}
		if done(buf) {
			out := bytes.Clone(buf)
			m.mu.Unlock()
			return out, nil
		}
		m.mu.Unlock()
		if dead != nil {
			return nil, dead
		}
		select {
		case <-m.notify:
		case <-ctx.Done():
			return bytes.Clone(buf), ctx.Err()
		}
	}
}

// cmd sends line and returns what the shell printed between the echo of
// line and term (the prompt, by default), CR/LF trimmed.
func (s *shellConn) cmd(ctx context.Context, line string, term []byte, timeout time.Duration) (string, error) {
	if term == nil {
		term = prompt
	}
	s.clear()
	if _, err := s.m.write(s.gen, []byte(line+lineEnd(line))); err != nil {
		return "", err
	}
	echo := []byte(line)
	var out []byte
	got, err := s.await(ctx, timeout, func(buf []byte) bool {
		i := bytes.Index(buf, echo)
		if i < 0 {
			return false
		}
		rest := buf[i+len(echo):]
		j := bytes.Index(rest, term)
		if j < 0 {
			return false
		}
		out = rest[:j]
		if !bytes.Equal(term, prompt) {
			out = rest[:j+len(term)]
		}
		out = bytes.Clone(out)
		return true
	})
	if err != nil {
		return "", s.noReply(line, timeout, got, err)
	}
	return string(bytes.Trim(out, "\r\n")), nil
}

// lineEnd returns what ends line: a CR, which is what runs a command in
// the firmware's shell (ushell). An LF behind it would not end anything: it
// would be taken as the first character of the next line, or, behind
// "console", reach the DUT as an empty line (which U-Boot takes as "repeat
// the last command").
func lineEnd(string) string { return "\r" }

// noReply explains a shell command that got no complete answer.
func (s *shellConn) noReply(line string, timeout time.Duration, got []byte, err error) error {
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("shell command %q: %w", line, err)
	}
	return fmt.Errorf("%w: no complete reply to %q from the DUTlink shell on %s within %v (got %q): check that this is a DUTlink and that nothing else uses its tty: %w", ErrReply, line, s.m.path, timeout, got, err)
}

// expect runs line and checks that the last line of the reply is want.
func (s *shellConn) expect(ctx context.Context, line, want string, timeout time.Duration) error {
	reply, err := s.cmd(ctx, line, nil, timeout)
	if err != nil {
		return err
	}
	return checkReply(line, reply, want)
}

func lastLine(reply string) string {
	lines := strings.Split(strings.ReplaceAll(reply, "\r", ""), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return ""
}

func checkReply(line, reply, want string) error {
	got := lastLine(reply)
	if got == strings.TrimSpace(want) {
		return nil
	}
	if got == "unsupported command" {
		return fmt.Errorf("%w: the firmware does not know %q; update the DUTlink firmware", errUnsupported, line)
	}
	return fmt.Errorf("%w: %q answered %q, want %q", ErrReply, line, got, want)
}
