package console

import (
	"io"
	"sync"
)

// fakePort is an in-memory console port. The test plays the device: Emit
// queues bytes for the console to read in exactly the chunks given; what the
// console writes arrives on Sent, which Close closes.
type fakePort struct {
	mu     sync.Mutex
	chunks [][]byte
	ready  chan struct{} // signalled when chunks grows or the port closes
	closed bool
	eof    bool

	Sent chan []byte
}

func newFakePort() *fakePort {
	return &fakePort{ready: make(chan struct{}, 1), Sent: make(chan []byte, 1024)}
}

func (p *fakePort) Emit(b []byte) {
	p.mu.Lock()
	p.chunks = append(p.chunks, append([]byte(nil), b...))
	p.mu.Unlock()
	p.signal()
}

func (p *fakePort) EmitString(s string) { p.Emit([]byte(s)) }

// Hangup makes the next Read return io.EOF once the queued chunks are read.
func (p *fakePort) Hangup() {
	p.mu.Lock()
	p.eof = true
	p.mu.Unlock()
	p.signal()
}

func (p *fakePort) signal() {
	select {
	case p.ready <- struct{}{}:
	default:
	}
}

func (p *fakePort) Read(b []byte) (int, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return 0, io.ErrClosedPipe
		}
		if len(p.chunks) > 0 {
			n := copy(b, p.chunks[0])
			if n == len(p.chunks[0]) {
				p.chunks = p.chunks[1:]
			} else {
				p.chunks[0] = p.chunks[0][n:]
			}
			p.mu.Unlock()
			return n, nil
		}
		if p.eof {
			p.mu.Unlock()
			return 0, io.EOF
		}
		p.mu.Unlock()
		<-p.ready
	}
}

func (p *fakePort) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, io.ErrClosedPipe
	}
	p.Sent <- append([]byte(nil), b...)
	return len(b), nil
}

func (p *fakePort) Close() error {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.Sent) // ends the test's device goroutines
	}
	p.mu.Unlock()
	p.signal()
	return nil
}
