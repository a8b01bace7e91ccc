package sim

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/simimage"
)

// rootPrompt is the shell prompt of root on sim-0 in its home directory.
const rootPrompt = "\x1b[01;32mroot@sim-0\x1b[00m:\x1b[01;34m~\x1b[00m# "

// lastNoise ends the last kernel message printed after the login prompt.
const lastNoise = "re-mounted. Quota mode: none.\r\n"

// expectTimeout bounds every wait for console output. Inside a synctest
// bubble it is virtual time.
const expectTimeout = 10 * time.Second

// newTestDevice returns a device "sim-0" with its disk in a temporary
// directory, closed when the test ends.
func newTestDevice(t *testing.T, o Options) *Device {
	t.Helper()
	d, err := NewDevice("sim-0", "SIM00000", []string{"sim", "virtual", "even"}, filepath.Join(t.TempDir(), "sim-0.disk"), o)
	if err != nil {
		t.Fatalf("NewDevice: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// writeDisk writes data at the start of the disk file without truncating
// it, as dd conv=notrunc does.
func writeDisk(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// flashBytes writes data onto the device's storage through the storage mux
// and connects the storage back to the DUT.
func flashBytes(t *testing.T, d *Device, data []byte) {
	t.Helper()
	ctx := context.Background()
	if err := d.SetStorage(ctx, driver.StorageHost); err != nil {
		t.Fatal(err)
	}
	p, err := d.BlockTarget(ctx)
	if err != nil {
		t.Fatal(err)
	}
	writeDisk(t, p, data)
	if err := d.SetStorage(ctx, driver.StorageDUT); err != nil {
		t.Fatal(err)
	}
}

// flash flashes the image s describes.
func flash(t *testing.T, d *Device, s simimage.Spec) {
	t.Helper()
	img, err := simimage.Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	flashBytes(t, d, img)
}

// term reads a console in the background and lets the test wait for text.
type term struct {
	t   *testing.T
	con io.ReadWriteCloser

	mu  sync.Mutex
	buf []byte // all output read
	pos int    // output before pos was consumed by expect
	err error  // the error that ended reading

	notify chan struct{}
	done   chan struct{}
}

// openTerm opens d's console; it is closed when the test ends.
func openTerm(t *testing.T, d *Device) *term {
	t.Helper()
	con, err := d.OpenConsole(context.Background())
	if err != nil {
		t.Fatalf("OpenConsole: %v", err)
	}
	tm := &term{t: t, con: con, notify: make(chan struct{}, 1), done: make(chan struct{})}
	go tm.read()
	t.Cleanup(func() {
		_ = con.Close()
		<-tm.done
	})
	return tm
}

func (tm *term) read() {
	defer close(tm.done)
	b := make([]byte, 4096)
	for {
		n, err := tm.con.Read(b)
		tm.mu.Lock()
		tm.buf = append(tm.buf, b[:n]...)
		if err != nil {
			tm.err = err
		}
		tm.mu.Unlock()
		select {
		case tm.notify <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

// expect waits until the unconsumed output holds want and returns the
// output up to and including it, consuming it.
func (tm *term) expect(want string) string {
	tm.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), expectTimeout)
	defer cancel()
	for {
		tm.mu.Lock()
		rest := string(tm.buf[tm.pos:])
		if i := strings.Index(rest, want); i >= 0 {
			tm.pos += i + len(want)
			tm.mu.Unlock()
			return rest[:i+len(want)]
		}
		err := tm.err
		tm.mu.Unlock()
		if err != nil {
			tm.t.Fatalf("console ended (%v) before %q appeared; unread output:\n%q", err, want, tail(rest))
		}
		select {
		case <-tm.notify:
		case <-ctx.Done():
			tm.t.Fatalf("no %q on the console within %v; unread output:\n%q", want, expectTimeout, tail(rest))
		}
	}
}

func tail(s string) string {
	if len(s) > 2000 {
		return "..." + s[len(s)-2000:]
	}
	return s
}

// all returns all output read so far.
func (tm *term) all() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return string(tm.buf)
}

// unread returns the output after the last expect.
func (tm *term) unread() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return string(tm.buf[tm.pos:])
}

// skip consumes all output read so far.
func (tm *term) skip() {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	tm.pos = len(tm.buf)
}

// readErr returns the error that ended reading, or nil.
func (tm *term) readErr() error {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.err
}

// waitEnd waits until reading has ended and returns the error that ended
// it.
func (tm *term) waitEnd() error {
	tm.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), expectTimeout)
	defer cancel()
	select {
	case <-tm.done:
		return tm.readErr()
	case <-ctx.Done():
		tm.t.Fatalf("the console stream did not end within %v", expectTimeout)
		return nil
	}
}

func (tm *term) send(s string) {
	tm.t.Helper()
	if n, err := tm.con.Write([]byte(s)); err != nil || n != len(s) {
		tm.t.Fatalf("console Write(%q) = %d, %v", s, n, err)
	}
}

// login waits for the login prompt and the kernel messages after it, and
// logs in as root.
func (tm *term) login() {
	tm.t.Helper()
	tm.expect("sim-0 login: ")
	tm.expect(lastNoise)
	tm.send("root\r")
	tm.expect(rootPrompt)
}

// run runs a shell command line and returns its output (without the echo
// of the line and the next prompt).
func (tm *term) run(line string) string {
	tm.t.Helper()
	return tm.runPrompt(line, rootPrompt)
}

// runPrompt is run for a command after which the shell shows prompt.
func (tm *term) runPrompt(line, prompt string) string {
	tm.t.Helper()
	tm.send(line + "\r")
	tm.expect(line + "\r\n")
	return strings.TrimSuffix(tm.expect(prompt), prompt)
}

// isGone reports whether err wraps ErrGone.
func isGone(err error) bool { return errors.Is(err, ErrGone) }
