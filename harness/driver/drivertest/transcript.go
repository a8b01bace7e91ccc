package drivertest

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// transcript reads a console stream in the background and keeps all it
// read; waitFor searches it from a cursor.
type transcript struct {
	rw io.ReadWriteCloser

	mu     sync.Mutex
	buf    bytes.Buffer
	err    error // the error that ended the reading
	cursor int
	wake   chan struct{}
	done   chan struct{}
}

func newTranscript(rw io.ReadWriteCloser) *transcript {
	c := &transcript{rw: rw, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go c.read()
	return c
}

func (c *transcript) read() {
	defer close(c.done)
	p := make([]byte, 4096)
	for {
		n, err := c.rw.Read(p)
		c.mu.Lock()
		c.buf.Write(p[:n])
		if err != nil {
			c.err = err
		}
		c.mu.Unlock()
		select {
		case c.wake <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

// waitFor waits until texts appear after the cursor, each after the one
// before, and moves the cursor past the last.
func (c *transcript) waitFor(timeout time.Duration, texts ...string) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		seen := c.buf.String()[c.cursor:]
		end, missing := find(seen, texts)
		if missing < 0 {
			c.cursor += end
			c.mu.Unlock()
			return nil
		}
		err := c.err
		c.mu.Unlock()
		if err != nil {
			return fmt.Errorf("console ended (%v) before %q (text %d of %d); it showed:\n%s", err, texts[missing], missing+1, len(texts), tail(seen))
		}
		select {
		case <-c.wake:
		case <-deadline.C:
			return fmt.Errorf("no %q (text %d of %d) within %v; a byte lost or changed, or the board did not react; the console showed:\n%s", texts[missing], missing+1, len(texts), timeout, tail(seen))
		}
	}
}

// find looks for texts in s in order; it returns the end of the last one
// and -1, or the index of the first text missing.
func find(s string, texts []string) (end, missing int) {
	for i, t := range texts {
		j := strings.Index(s[end:], t)
		if j < 0 {
			return end, i
		}
		end += j + len(t)
	}
	return end, -1
}

// ended waits up to timeout for the reading to end and returns its error;
// ok is false when Read still blocks.
func (c *transcript) ended(timeout time.Duration) (err error, ok bool) {
	select {
	case <-c.done:
	case <-time.After(timeout):
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err, true
}

// stop closes the stream and waits a little for the reader to return.
func (c *transcript) stop() {
	_ = c.rw.Close()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
	}
}

func tail(s string) string {
	if len(s) > 1500 {
		s = "..." + s[len(s)-1500:]
	}
	return s
}
