package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"connectrpc.com/connect"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
)

// transcript is everything a device's console wrote during a lease, as
// offsets from the lease's start: the last keep bytes are kept for readers
// that fall behind or reconnect.
type transcript struct {
	keep int64

	mu    sync.Mutex
	buf   []byte // the kept bytes
	start int64  // the offset of buf[0]
	err   error  // why the transcript ended; nil while it grows
	grown chan struct{}
}

func newTranscript(keep int64) *transcript {
	return &transcript{keep: keep, grown: make(chan struct{})}
}

// fill reads r into the transcript until r fails (the console closed).
func (t *transcript) fill(r io.Reader) {
	b := make([]byte, 64<<10)
	for {
		n, err := r.Read(b)
		if n > 0 {
			t.append(b[:n])
		}
		if err != nil {
			if driver.Code(err) == "" {
				err = fmt.Errorf("%w: %w", driver.ErrClosed, err)
			}
			t.close(fmt.Errorf("the console ended: %w", err))
			return
		}
	}
}

// append adds p and wakes the readers.
func (t *transcript) append(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := int64(len(t.buf)) - t.keep; over > t.keep/4 {
		// Trim in steps, so that appending stays amortised O(1).
		t.buf = append([]byte(nil), t.buf[over:]...)
		t.start += over
	}
	close(t.grown)
	t.grown = make(chan struct{})
}

// close ends the transcript with err (the first close wins).
func (t *transcript) close(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err == nil {
		t.err = err
		close(t.grown)
		t.grown = make(chan struct{})
	}
}

// ended returns the transcript's error when it has ended and holds
// nothing from off on.
func (t *transcript) ended(off int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil && off >= t.start+int64(len(t.buf)) {
		return t.err
	}
	return nil
}

// errTrimmed is the error of a read from before what is kept.
var errTrimmed = errors.New("trimmed")

// read returns a copy of at most max bytes from offset off, waiting until
// there are some, the transcript ends (its error) or ctx ends.
func (t *transcript) read(ctx context.Context, off int64, max int) ([]byte, error) {
	for {
		t.mu.Lock()
		end := t.start + int64(len(t.buf))
		switch {
		case off < t.start:
			start := t.start
			t.mu.Unlock()
			return nil, fmt.Errorf("%w: offset %d is before the %d bytes of the transcript still kept (from offset %d)", errTrimmed, off, end-start, start)
		case off < end:
			p := t.buf[off-t.start:]
			p = append([]byte(nil), p[:min(len(p), max)]...)
			t.mu.Unlock()
			return p, nil
		case t.err != nil:
			err := t.err
			t.mu.Unlock()
			return nil, err
		}
		grown := t.grown
		t.mu.Unlock()
		select {
		case <-grown:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

type consoleService struct{ e *Exporter }

// readChunk is the most a ReadConsole message carries.
const readChunk = 256 << 10

// ReadConsole streams the transcript from an offset.
func (s consoleService) ReadConsole(ctx context.Context, req *connect.Request[dutv1.ReadConsoleRequest], stream *connect.ServerStream[dutv1.ReadConsoleResponse]) error {
	h, err := s.e.lookup(req.Msg.GetLease())
	if err != nil {
		return err
	}
	if _, err := capability[driver.ConsolePort](h); err != nil {
		return err
	}
	off := req.Msg.GetOffset()
	if off < 0 {
		return fmt.Errorf("%w: offset %d is negative", driver.ErrInvalidArgument, off)
	}
	if err := h.transcript.ended(off); err != nil {
		return err
	}
	// The first message carries no data: it tells the client at once that
	// the stream is open (or, by failing, why not).
	if err := stream.Send(&dutv1.ReadConsoleResponse{Offset: off}); err != nil {
		return err
	}
	for {
		p, err := h.transcript.read(ctx, off, readChunk)
		switch {
		case errors.Is(err, errTrimmed):
			return connect.NewError(connect.CodeOutOfRange, err)
		case err != nil:
			return err
		}
		if err := stream.Send(&dutv1.ReadConsoleResponse{Offset: off, Data: p}); err != nil {
			return err
		}
		off += int64(len(p))
	}
}

// maxConsoleWrite bounds one WriteConsole.
const maxConsoleWrite = 1 << 20

// WriteConsole writes bytes to the console.
func (s consoleService) WriteConsole(ctx context.Context, req *connect.Request[dutv1.WriteConsoleRequest]) (*connect.Response[dutv1.WriteConsoleResponse], error) {
	data := req.Msg.GetData()
	if len(data) > maxConsoleWrite {
		return nil, fmt.Errorf("%w: %d bytes in one console write, the most is %d", driver.ErrInvalidArgument, len(data), maxConsoleWrite)
	}
	var n int
	err := act(ctx, s.e, req.Msg.GetLease(), func(ctx context.Context, h *held, _ driver.ConsolePort) (err error) {
		n, err = writeCtx(ctx, h.console, data)
		return err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dutv1.WriteConsoleResponse{Written: int64(n)}), nil
}

// writeCtx writes p to w, giving up when ctx ends first (the write goes
// on in the background: a console write blocks only while the device
// does not read).
func writeCtx(ctx context.Context, w io.Writer, p []byte) (int, error) {
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := w.Write(p)
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		return r.n, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
