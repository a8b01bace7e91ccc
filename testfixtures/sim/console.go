package sim

import (
	"bytes"
	"fmt"
	"os"
	"sync"
)

// console is the host's end of a device's serial line, as returned by
// OpenConsole. Board output accumulates in buf, without bound, until read.
type console struct {
	d    *Device
	name string

	mu    sync.Mutex
	buf   bytes.Buffer
	err   error // why the console ended; nil while open
	drain bool  // whether Read returns buffered output before err

	wake chan struct{} // signalled when output arrives; capacity 1
	done chan struct{} // closed when the console ends
}

func newConsole(d *Device, name string) *console {
	return &console{d: d, name: name, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// Read reads board output, blocking until there is some or the console
// ends. After Close it fails with an error wrapping ErrClosed and
// os.ErrClosed; after the
// device is unplugged it returns the output buffered before, then an error
// wrapping ErrGone.
func (c *console) Read(p []byte) (int, error) {
	for {
		c.mu.Lock()
		if c.err != nil && (!c.drain || c.buf.Len() == 0) {
			err := c.err
			c.mu.Unlock()
			return 0, err
		}
		if c.buf.Len() > 0 {
			n, _ := c.buf.Read(p)
			c.mu.Unlock()
			return n, nil
		}
		c.mu.Unlock()
		if len(p) == 0 {
			return 0, nil
		}
		select {
		case <-c.wake:
		case <-c.done:
		}
	}
}

// Write sends bytes to the board's serial input. While the board is off (or
// held in reset) they are dropped, as on a real serial line.
func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return c.d.consoleInput(p)
}

// Close closes the console: a pending Read returns, later Reads and Writes
// fail with errors wrapping ErrClosed and os.ErrClosed, and the device's console can be
// opened again. Closing twice is not an error.
func (c *console) Close() error {
	c.d.detachConsole(c)
	c.end(fmt.Errorf("%s: console: %w (%w)", c.name, ErrClosed, os.ErrClosed), false)
	return nil
}

// push appends board output.
func (c *console) push(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.buf.Write(p)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// end ends the console with err, unless it has ended already. With drain,
// Read still returns the output buffered so far before failing.
func (c *console) end(err error, drain bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err, c.drain = err, drain
	if !drain {
		c.buf = bytes.Buffer{}
	}
	close(c.done)
}
