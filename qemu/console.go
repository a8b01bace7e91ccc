package qemu

import (
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// conSeg is the console connection to one QEMU process.
type conSeg struct {
	stream *consoleStream
	v      *vm
	conn   net.Conn
	eof    bool // the connection ended (QEMU exited)
}

// consoleStream is the device's console as OpenConsole returns it: the
// connections to successive QEMU processes, read one after the other, as
// one stream. Each power-on appends a connection; a connection is read to
// its end (QEMU's exit), so no output of a VM is lost or reordered, and then
// dropped, unless its QEMU died unexpectedly: then Read returns that
// *ExitError until a later power-on appends a connection.
type consoleStream struct {
	d *Device

	mu      sync.Mutex
	segs    []*conSeg // oldest first; Read reads segs[0]
	closed  bool
	changed chan struct{} // closed and replaced when a connection is appended
	done    chan struct{} // closed by Close
}

func newConsoleStream(d *Device) *consoleStream {
	return &consoleStream{d: d, changed: make(chan struct{}), done: make(chan struct{})}
}

// attach appends the console connection to v; it returns nil (and closes
// conn) when the stream is closed.
func (s *consoleStream) attach(v *vm, conn net.Conn) *conSeg {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = conn.Close()
		return nil
	}
	seg := &conSeg{stream: s, v: v, conn: conn}
	s.segs = append(s.segs, seg)
	close(s.changed)
	s.changed = make(chan struct{})
	return seg
}

// detach drops seg (its QEMU failed to start) and closes its connection.
func (s *consoleStream) detach(seg *conSeg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.segs {
		if x == seg {
			s.segs = append(s.segs[:i], s.segs[i+1:]...)
			break
		}
	}
	_ = seg.conn.Close()
}

func (s *consoleStream) errClosed() error {
	return fmt.Errorf("qemu %s: console: %w (%w)", s.d.name, ErrClosed, os.ErrClosed)
}

// Read reads the console output of the running QEMU. While the device is
// off it blocks until a power-on brings output, or Close. When QEMU died
// unexpectedly, Read returns the output it printed, then an error wrapping
// [ErrExited] (an *ExitError: exit status, stderr tail, command line) until
// the next power-on. After Close it fails with an error wrapping
// [ErrClosed] and os.ErrClosed.
func (s *consoleStream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return 0, s.errClosed()
		}
		if len(s.segs) == 0 {
			ch := s.changed
			s.mu.Unlock()
			select {
			case <-ch:
			case <-s.done:
			}
			continue
		}
		seg := s.segs[0]
		if !seg.eof {
			s.mu.Unlock()
			n, err := seg.conn.Read(p)
			if err != nil {
				s.mu.Lock()
				seg.eof = true
				s.mu.Unlock()
			}
			if n > 0 {
				return n, nil
			}
			continue
		}
		newer := len(s.segs) > 1
		s.mu.Unlock()
		// The connection ended: QEMU exited or is exiting. Wait for
		// the verdict.
		select {
		case <-seg.v.exited:
		case <-s.done:
			continue
		}
		if seg.v.exitErr != nil && !newer {
			s.mu.Lock()
			newer = len(s.segs) > 1
			s.mu.Unlock()
			if !newer {
				return 0, seg.v.exitErr
			}
		}
		s.mu.Lock()
		if len(s.segs) > 0 && s.segs[0] == seg {
			s.segs = s.segs[1:]
		}
		s.mu.Unlock()
		_ = seg.conn.Close()
	}
}

// Write sends p to the running QEMU's serial port. While the device is off
// the bytes are dropped and Write succeeds, as on a serial line to a board
// without power; after QEMU died unexpectedly Write fails with its
// *ExitError until the next power-on. After Close it fails with an error
// wrapping [ErrClosed] and os.ErrClosed.
func (s *consoleStream) Write(p []byte) (int, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, s.errClosed()
	}
	var seg *conSeg
	if len(s.segs) > 0 {
		seg = s.segs[len(s.segs)-1]
	}
	s.mu.Unlock()
	if seg == nil {
		return len(p), nil
	}
	if seg.v.hasExited() {
		if seg.v.exitErr != nil {
			return 0, seg.v.exitErr
		}
		return len(p), nil
	}
	n, err := seg.conn.Write(p)
	if err == nil {
		return n, nil
	}
	// The write fails when QEMU exits meanwhile: say why it did.
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case <-seg.v.exited:
		if seg.v.exitErr != nil {
			return n, seg.v.exitErr
		}
		return len(p), nil
	case <-s.done:
		return n, s.errClosed()
	case <-t.C:
		return n, fmt.Errorf("qemu %s: console: %w", s.d.name, err)
	}
}

// Close closes the stream: a pending Read returns, later Reads and Writes
// fail with errors wrapping [ErrClosed] and os.ErrClosed, and the device's console can be
// opened again. Closing twice is not an error.
func (s *consoleStream) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	segs := s.segs
	s.segs = nil
	s.mu.Unlock()
	for _, seg := range segs {
		_ = seg.conn.Close()
	}
	s.d.detachConsole(s)
	return nil
}
