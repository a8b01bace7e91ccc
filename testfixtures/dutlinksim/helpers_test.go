package dutlinksim_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.bug.st/serial"

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
)

// escape is the five Ctrl-B that leave console mode.
const escape = "\x02\x02\x02\x02\x02"

// exitReply is the firmware's answer to the escape.
const exitReply = "\r\nExiting console mode\r\n#> "

// wait is the deadline of every wait for an event in these tests.
const wait = 5 * time.Second

// term is a raw view of a board's tty, opened with go.bug.st/serial as the
// driver opens it.
type term struct {
	t   *testing.T
	p   serial.Port
	buf []byte
}

func openTerm(t *testing.T, path string) *term {
	t.Helper()
	p, err := serial.Open(path, &serial.Mode{BaudRate: 115200})
	require.NoError(t, err, "serial.Open on the pty slave")
	require.NoError(t, p.SetReadTimeout(20*time.Millisecond))
	t.Cleanup(func() { p.Close() })
	return &term{t: t, p: p}
}

func (tm *term) send(s string) {
	tm.t.Helper()
	_, err := tm.p.Write([]byte(s))
	require.NoError(tm.t, err)
}

// until reads until the output holds want and returns everything up to and
// including it; it fails after the deadline.
func (tm *term) until(want string) string {
	tm.t.Helper()
	deadline := time.Now().Add(wait)
	b := make([]byte, 256)
	for time.Now().Before(deadline) {
		if i := bytes.Index(tm.buf, []byte(want)); i >= 0 {
			out := string(tm.buf[:i+len(want)])
			tm.buf = tm.buf[i+len(want):]
			return out
		}
		n, err := tm.p.Read(b)
		require.NoError(tm.t, err)
		tm.buf = append(tm.buf, b[:n]...)
	}
	tm.t.Fatalf("no %q in %q", want, tm.buf)
	return ""
}

// quiet reads for a moment and returns what arrived.
func (tm *term) quiet() string {
	b := make([]byte, 256)
	for range 5 {
		n, _ := tm.p.Read(b)
		tm.buf = append(tm.buf, b[:n]...)
	}
	out := string(tm.buf)
	tm.buf = nil
	return out
}

// toShell leaves console mode and waits for the firmware's answer.
func (tm *term) toShell() {
	tm.t.Helper()
	tm.send(escape)
	require.Equal(tm.t, exitReply, tm.until(exitReply))
}

// Vendor requests.
const (
	reqOut, reqIn = 0x41, 0xC1
	ifc           = 3
	reqRefresh    = 0x00
	reqPower      = 0x01
	reqStorage    = 0x02
	reqConfig     = 0x03
	reqRead       = 0x04
	reqSetPin     = 0x05
)

// ctl is a board's vendor interface.
type ctl struct {
	t *testing.T
	c dutlink.Controller
}

func openCtl(t *testing.T, lab *dutlinksim.Lab, b *dutlinksim.Board) *ctl {
	t.Helper()
	c, err := lab.OpenUSB(context.Background(), dutlink.Board{Serial: b.Serial()})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &ctl{t: t, c: c}
}

// out sends an OUT request and returns its byte count.
func (c *ctl) out(req uint8, val uint16, data []byte) int {
	c.t.Helper()
	n, err := c.c.Control(context.Background(), reqOut, req, val, ifc, data)
	require.NoError(c.t, err, "OUT request %#x %d", req, val)
	return n
}

// read sends an IN request and returns its data without NUL padding.
func (c *ctl) read(req uint8, val uint16) string {
	c.t.Helper()
	buf := make([]byte, 300)
	n, err := c.c.Control(context.Background(), reqIn, req, val, ifc, buf)
	require.NoError(c.t, err, "IN request %#x %d", req, val)
	return strings.TrimRight(string(buf[:n]), "\x00")
}

// barrier reads the version, which leaves the snapshot alone: when it
// returns, the action of every earlier OUT request has run.
func (c *ctl) barrier() {
	c.t.Helper()
	c.read(reqRead, 0)
}

// byID is the path of a by-id name in the lab.
func byID(lab *dutlinksim.Lab, id string) string {
	return filepath.Join(lab.Dev, "disk", "by-id", "usb-"+id+"-0:0")
}

// exists reports whether path exists (a symlink: its target).
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// blockOf returns the block device a by-id name points at, "" when none.
func blockOf(lab *dutlinksim.Lab, id string) string {
	link, err := os.Readlink(byID(lab, id))
	if err != nil {
		return ""
	}
	return filepath.Base(link)
}

// sizeOf reads a block device's size attribute ("" when missing).
func sizeOf(lab *dutlinksim.Lab, name string) string {
	got, err := os.ReadFile(filepath.Join(lab.Sys, "class", "block", name, "size"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(got))
}

// usbDeviceOf returns the sysfs directory of the USB device that carries
// block device name: the nearest ancestor with an idVendor.
func usbDeviceOf(t *testing.T, lab *dutlinksim.Lab, name string) string {
	t.Helper()
	real, err := filepath.EvalSymlinks(filepath.Join(lab.Sys, "class", "block", name))
	require.NoError(t, err)
	for dir := filepath.Dir(real); dir != "/"; dir = filepath.Dir(dir) {
		if exists(filepath.Join(dir, "idVendor")) {
			return dir
		}
	}
	t.Fatalf("no USB device above %s", real)
	return ""
}

func attr(t *testing.T, dir, name string) string {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(dir, name))
	require.NoError(t, err)
	return strings.TrimSpace(string(got))
}

// eventsAfter returns the board's events from index n on.
func eventsAfter(b *dutlinksim.Board, n int) []string {
	ev := b.Events()
	if n > len(ev) {
		return nil
	}
	return ev[n:]
}
