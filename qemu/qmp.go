package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// QMPError is an error QEMU's monitor (QMP) answered a command with.
type QMPError struct {
	Command string // the command that failed
	Class   string // e.g. "GenericError", "CommandNotFound"
	Desc    string // QEMU's description
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("QMP %s: %s: %s", e.Command, e.Class, e.Desc)
}

// errQMPClosed is returned for commands on a QMP connection that ended.
var errQMPClosed = errors.New("QMP connection closed")

// qmpEvent is an asynchronous QMP event.
type qmpEvent struct {
	Name string
	Data json.RawMessage
}

type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	ID    *uint64         `json:"id"`
}

type qmpReply struct {
	ret json.RawMessage
	err error
}

// qmpClient is a client of QEMU's machine protocol on one connection. One
// goroutine reads the connection: replies go to the commands waiting for
// them (matched by id), events to the onEvent callback. The goroutine ends
// when the connection ends; done is closed then.
type qmpClient struct {
	conn    net.Conn
	onEvent func(qmpEvent)

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan qmpReply
	readErr error // why the reader ended

	greeting chan struct{} // closed when the greeting arrived
	done     chan struct{} // closed when the reader ended
}

// newQMP starts a client on conn and waits for QEMU's greeting, bounded by
// ctx. onEvent, when not nil, is called from the reading goroutine for every
// event and must not block.
func newQMP(ctx context.Context, conn net.Conn, onEvent func(qmpEvent)) (*qmpClient, error) {
	q := &qmpClient{
		conn:     conn,
		onEvent:  onEvent,
		pending:  map[uint64]chan qmpReply{},
		greeting: make(chan struct{}),
		done:     make(chan struct{}),
	}
	go q.read()
	select {
	case <-q.greeting:
	case <-q.done:
		return nil, fmt.Errorf("waiting for the QMP greeting: %w", q.err())
	case <-ctx.Done():
		q.Close()
		return nil, fmt.Errorf("waiting for the QMP greeting: %w", context.Cause(ctx))
	}
	if _, err := q.Execute(ctx, "qmp_capabilities", nil); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmpClient) err() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.readErr
}

func (q *qmpClient) read() {
	defer close(q.done)
	dec := json.NewDecoder(bufio.NewReader(q.conn))
	greeted := false
	var err error
	for {
		var m qmpMessage
		if err = dec.Decode(&m); err != nil {
			break
		}
		switch {
		case m.QMP != nil && !greeted:
			greeted = true
			close(q.greeting)
		case m.Event != "":
			if q.onEvent != nil {
				q.onEvent(qmpEvent{Name: m.Event, Data: m.Data})
			}
		case m.ID != nil:
			q.mu.Lock()
			ch := q.pending[*m.ID]
			delete(q.pending, *m.ID)
			q.mu.Unlock()
			if ch == nil {
				continue // the command gave up waiting
			}
			if m.Error != nil {
				ch <- qmpReply{err: &QMPError{Class: m.Error.Class, Desc: m.Error.Desc}}
			} else {
				ch <- qmpReply{ret: m.Return}
			}
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = errQMPClosed
	} else {
		err = fmt.Errorf("%w: %w", errQMPClosed, err)
	}
	q.mu.Lock()
	q.readErr = err
	pending := q.pending
	q.pending = nil
	q.mu.Unlock()
	for _, ch := range pending {
		ch <- qmpReply{err: err}
	}
}

// Execute runs a QMP command and returns its result, bounded by ctx.
func (q *qmpClient) Execute(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	ch := make(chan qmpReply, 1)
	q.mu.Lock()
	if q.pending == nil {
		err := q.readErr
		q.mu.Unlock()
		return nil, fmt.Errorf("QMP %s: %w", cmd, err)
	}
	id := q.nextID
	q.nextID++
	q.pending[id] = ch
	q.mu.Unlock()
	forget := func() {
		q.mu.Lock()
		if q.pending != nil {
			delete(q.pending, id)
		}
		q.mu.Unlock()
	}

	msg := map[string]any{"execute": cmd, "id": id}
	if args != nil {
		msg["arguments"] = args
	}
	line, err := json.Marshal(msg)
	if err != nil {
		forget()
		return nil, fmt.Errorf("QMP %s: %w", cmd, err)
	}
	q.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		_ = q.conn.SetWriteDeadline(dl)
	} else {
		_ = q.conn.SetWriteDeadline(time.Time{})
	}
	_, err = q.conn.Write(append(line, '\n'))
	q.wmu.Unlock()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The write deadline is ctx's: say so as ctx would.
		forget()
		return nil, fmt.Errorf("QMP %s: %w (%w)", cmd, context.DeadlineExceeded, err)
	}
	if err != nil {
		forget()
		return nil, fmt.Errorf("QMP %s: %w", cmd, err)
	}
	select {
	case r := <-ch:
		if r.err != nil {
			var qe *QMPError
			if errors.As(r.err, &qe) {
				qe.Command = cmd
				return nil, qe
			}
			return nil, fmt.Errorf("QMP %s: %w", cmd, r.err)
		}
		return r.ret, nil
	case <-ctx.Done():
		forget()
		return nil, fmt.Errorf("QMP %s: %w", cmd, context.Cause(ctx))
	}
}

// Close closes the connection and waits for the reader to end.
func (q *qmpClient) Close() error {
	err := q.conn.Close()
	<-q.done
	return err
}
