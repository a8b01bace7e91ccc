package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
)

// OpenConsole opens the device's console: a stream of the exporter's
// transcript from where the device's last console stopped reading (the
// lease's start for the first), reconnected from the last byte received
// when its connection drops while the lease lives, checked by offset so
// that no byte is lost or doubled. Writes go to the device's console.
func (d *Device) OpenConsole(ctx context.Context) (io.ReadWriteCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open the console of %s: %w", d.info.Name, err)
	}
	if err := d.usable(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	if open := d.console; open != nil {
		d.mu.Unlock()
		if err := open.failed(); err != nil {
			return nil, err // the open console ended: say why (the device gone)
		}
		return nil, fmt.Errorf("%s: %w: its console is open already: close it first", d.info.Name, driver.ErrConsoleBusy)
	}
	c := &console{d: d, off: d.consumed, chunks: make(chan []byte, 64)}
	d.console = c
	d.mu.Unlock()
	cctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	first, err := c.open(ctx, cctx)
	if err != nil {
		cancel()
		d.mu.Lock()
		d.console = nil
		d.mu.Unlock()
		return nil, d.call("open the console of", func() error { return err })
	}
	go c.pump(cctx, first)
	return c, nil
}

// open starts a transcript stream from c.off and waits (bounded by wait)
// for its first message, which says the stream is open.
func (c *console) open(wait, ctx context.Context) (*connect.ServerStreamForClient[dutv1.ReadConsoleResponse], error) {
	c.mu.Lock()
	off := c.off
	c.mu.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(wait, cancel)
	defer stop()
	s, err := c.d.ex.console.ReadConsole(sctx, connect.NewRequest(&dutv1.ReadConsoleRequest{Lease: c.d.ref, Offset: off}))
	if err == nil && !s.Receive() {
		err = s.Err()
		if err == nil {
			err = fmt.Errorf("%w: the exporter ended the transcript stream at once", driver.ErrGone)
		}
	}
	if err != nil {
		cancel()
		if werr := wait.Err(); werr != nil {
			return nil, werr
		}
		return nil, err
	}
	if got := s.Msg().GetOffset(); got != off || len(s.Msg().GetData()) > 0 {
		cancel()
		return nil, fmt.Errorf("%w: the exporter's transcript stream began at offset %d, not %d", driver.ErrGone, got, off)
	}
	if !stop() {
		// wait ended just as the stream opened.
		cancel()
		return nil, wait.Err()
	}
	context.AfterFunc(ctx, cancel)
	return s, nil
}

// console is an open remote console.
type console struct {
	d      *Device
	cancel context.CancelFunc
	chunks chan []byte // what pump received, in order

	mu      sync.Mutex
	off     int64  // transcript offset of the next byte pump wants
	pending []byte // received, not yet read
	err     error  // why pump stopped
	closed  bool
}

// reconnectWait bounds the retries of a dropped transcript stream: the
// first is at once, then at growing intervals up to this.
const reconnectWait = time.Second

// pump reads the transcript into chunks until the console is closed or
// the lease ends.
func (c *console) pump(ctx context.Context, s *connect.ServerStreamForClient[dutv1.ReadConsoleResponse]) {
	defer close(c.chunks)
	backoff := 10 * time.Millisecond
	for {
		err := c.stream(ctx, s)
		s = nil
		if ctx.Err() != nil {
			return
		}
		if lost := c.d.usable(); lost != nil || answered(err) {
			c.stop(fmt.Errorf("console of %s: %w", c.d.info.Name, errors.Join(err, lost)))
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		backoff = min(2*backoff, reconnectWait)
	}
}

// stream reads one transcript stream (s, or a new one from c.off) until
// it fails.
func (c *console) stream(ctx context.Context, s *connect.ServerStreamForClient[dutv1.ReadConsoleResponse]) error {
	if s == nil {
		var err error
		if s, err = c.open(ctx, ctx); err != nil {
			return err
		}
	}
	defer s.Close()
	c.mu.Lock()
	off := c.off
	c.mu.Unlock()
	for s.Receive() {
		m := s.Msg()
		if m.GetOffset() != off {
			return fmt.Errorf("%w: the exporter's transcript jumped from offset %d to %d", driver.ErrGone, off, m.GetOffset())
		}
		off += int64(len(m.GetData()))
		select {
		case c.chunks <- m.GetData():
		case <-ctx.Done():
			return ctx.Err()
		}
		c.mu.Lock()
		c.off = off
		c.mu.Unlock()
	}
	if err := s.Err(); err != nil {
		return err
	}
	return fmt.Errorf("the exporter ended the transcript stream at offset %d", off)
}

// answered says err is the exporter's own answer (it carries the
// exporter's error detail), final for this lease, not a transport failure
// that a new stream may get past.
func answered(err error) bool {
	var ce *connect.Error
	return errors.As(err, &ce) && len(ce.Details()) > 0
}

// failed returns why the console's stream ended, or nil.
func (c *console) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *console) stop(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

// Read returns the console's next bytes, waiting for them.
func (c *console) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, fmt.Errorf("console of %s: %w", c.d.info.Name, driver.ErrClosed)
	}
	if len(c.pending) == 0 {
		c.mu.Unlock()
		b, ok := <-c.chunks
		c.mu.Lock()
		if !ok {
			err := c.err
			switch {
			case c.closed:
				err = fmt.Errorf("console of %s: %w", c.d.info.Name, driver.ErrClosed)
			case err == nil:
				err = io.EOF
			}
			c.mu.Unlock()
			return 0, err
		}
		c.pending = b
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	c.mu.Unlock()
	c.d.mu.Lock()
	c.d.consumed += int64(n)
	c.d.mu.Unlock()
	return n, nil
}

// consoleWriteTimeout bounds one write to the console.
const consoleWriteTimeout = 30 * time.Second

// Write writes p to the device's console, in pieces of at most 1 MiB.
func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return 0, fmt.Errorf("console of %s: %w", c.d.info.Name, driver.ErrClosed)
	}
	written := 0
	for len(p) > 0 {
		part := p[:min(len(p), 1<<20)]
		ctx, cancel := context.WithTimeout(context.Background(), consoleWriteTimeout)
		err := c.d.call("write console", func() error {
			_, err := c.d.ex.console.WriteConsole(ctx, connect.NewRequest(&dutv1.WriteConsoleRequest{Lease: c.d.ref, Data: part}))
			return err
		})
		cancel()
		if err != nil {
			return written, err
		}
		written += len(part)
		p = p[len(part):]
	}
	return written, nil
}

// Close ends the console; a pending Read returns io.EOF.
func (c *console) Close() error {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	c.mu.Unlock()
	if !already {
		c.cancel()
		c.d.mu.Lock()
		if c.d.console == c {
			c.d.console = nil
		}
		c.d.mu.Unlock()
	}
	return nil
}
