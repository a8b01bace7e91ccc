package dutlinksim_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.bug.st/serial"

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
)

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
// including it; it fails after 5 s.
func (tm *term) until(want string) string {
	tm.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
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

func TestShellProtocol(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.08", Config: map[string]string{"name": "n1"}})
	tm := openTerm(t, b.TTY())

	// 0.08 boots in console mode: bytes go to the DUT.
	tm.send("abc\r")
	require.Eventually(t, func() bool { return bytes.Equal(b.DUTInput(), []byte("abc\r")) }, 5*time.Second, time.Millisecond)
	assert.False(t, b.AtShell())
	tm.send("\x02\x02\x02\x02\x02")
	tm.until("#> ")
	assert.True(t, b.AtShell())
	assert.True(t, bytes.HasSuffix(b.DUTInput(), []byte("\x02\x02\x02\x02\x02")), "the escape reaches the DUT too")

	exchange := [][2]string{
		{"monitor off", "Monitor disabled"},
		{"power on", "Device powered on"},
		{"power force-off", "Device forced off"},
		{"power force-on", "Device forced on"},
		{"power rescue", "Device powered on to rescue"},
		{"power off", "Device powered off"},
		{"storage host", "storage connected to host"},
		{"storage dut", "storage connected to device under test"},
		{"storage off", "storage disconnected"},
		{"set r l", "Set /RESET to LOW"},
		{"set a h", "Set CTL_A to HIGH"},
		{"set d z", "Set CTL_D to HIGH IMPEDANCE"},
		{"set-config tags", "Set tags to "},
		{"set-config usb_console ttyX", "Set usb_console to ttyX"},
		{"meter read", "0.00A 0.00V 0.00W"},
		{"version", "0.08 git-ref: dutlinksim"},
		{"frobnicate", "unsupported command"},
		{"power sideways", "unsupported command"},
	}
	for _, e := range exchange {
		cmd, reply := e[0], e[1]
		tm.send(cmd + "\r\n")
		assert.Equal(t, cmd+"\r\n"+reply+"\r\n#> ", tm.until("#> "), cmd)
	}
	tm.send("get-config\r\n")
	assert.Equal(t, "get-config\r\nname: n1\r\ntags: \r\njson: \r\nusb_console: ttyX\r\npower_on: \r\npower_off: \r\npower_rescue: \r\n#> ", tm.until("#> "))

	// Backspace edits the line.
	tm.send("versiom\x7fn\r\n")
	assert.Contains(t, tm.until("#> "), "0.08 git-ref")

	// With the monitor off, DUT output at the shell is discarded; on, it
	// is shown.
	b.DUTPrint("lost\r\n")
	assert.NotContains(t, tm.quiet(), "lost")
	tm.send("monitor on\r\n")
	tm.until("Monitor enabled\r\n#> ")
	b.DUTPrint("seen\r\n")
	tm.until("seen")
	tm.send("console\r\n")
	tm.until("Entering console mode, type CTRL+B 5 times to exit\r\n")
	assert.False(t, b.AtShell())
	b.DUTPrint("passthrough\r\n")
	tm.until("passthrough")
}

func TestShellFirmware007BootsAtShell(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.07"})
	assert.True(t, b.AtShell())
	tm := openTerm(t, b.TTY())
	tm.send("\x02\x02\x02\x02\x02monitor off\r\n")
	assert.Equal(t, "monitor off\r\nMonitor disabled\r\n#> ", tm.until("#> "), "Ctrl-B is ignored at the shell")
	_, err := lab.OpenUSB(context.Background(), dutlink.Board{Serial: b.Serial()})
	assert.ErrorIs(t, err, dutlink.ErrNoUSB, "0.07 has no vendor interface")
}

func TestPowerSequenceAndReboot(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.07", Config: map[string]string{"power_on": "p1,bL,w2,bZ,aH", "name": "keep"}})
	tm := openTerm(t, b.TTY())
	start := time.Now()
	tm.send("power on\r\n")
	tm.until("Device powered on\r\n#> ")
	assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond, "w2 waits 200 ms before the reply")
	assert.Equal(t, []string{"power on", "pin b l", "wait 200ms", "pin b z", "pin a h"}, b.Events())
	tm.send("power off\r\n")
	tm.until("Device powered off\r\n#> ")
	assert.Equal(t, "z", b.Pin("a"), "a high pin floats without power")

	tm.send("set-config name renamed\r\n")
	tm.until("Set name to renamed\r\n#> ")
	tm.send("storage host\r\n")
	tm.until("#> ")
	b.Reboot()
	assert.Equal(t, "renamed", b.Config()["name"], "config lives in flash")
	assert.Equal(t, "off", b.Storage())
	assert.False(t, b.Power())
	assert.True(t, b.AtShell())
}

func TestVendorRequests(t *testing.T) {
	ctx := context.Background()
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Config: map[string]string{"name": "old"}})
	c, err := lab.OpenUSB(ctx, dutlink.Board{Serial: b.Serial()})
	require.NoError(t, err)
	defer c.Close()
	const out, in, ifc = 0x41, 0xC1, 3
	read := func(req uint8, val uint16) string {
		buf := make([]byte, 300)
		n, err := c.Control(ctx, in, req, val, ifc, buf)
		require.NoError(t, err)
		return strings.TrimRight(string(buf[:n]), "\x00")
	}
	_, err = c.Control(ctx, out, 0x00, 0, ifc, nil)
	require.NoError(t, err)
	n, err := c.Control(ctx, out, 0x03, 0, ifc, []byte("new"))
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	assert.Equal(t, "old", read(0x03, 0), "IN data comes from the last Refresh")
	_, err = c.Control(ctx, out, 0x00, 0, ifc, nil)
	require.NoError(t, err)
	assert.Equal(t, "new", read(0x03, 0))
	buf := make([]byte, 300)
	n, err = c.Control(ctx, in, 0x03, 1, ifc, buf)
	require.NoError(t, err)
	assert.Equal(t, 256, n, "tags come as a NUL-padded 256-byte field")

	_, err = c.Control(ctx, out, 0x01, 1, ifc, nil)
	require.NoError(t, err)
	assert.True(t, b.Power())
	_, err = c.Control(ctx, out, 0x00, 0, ifc, nil)
	require.NoError(t, err)
	assert.Equal(t, "3.00W 5.00V 0.60A", read(0x04, 1))
	assert.Equal(t, "5.00V", read(0x04, 2))
	assert.Equal(t, "0.60A", read(0x04, 3))
	assert.Equal(t, "0.08 git-ref: dutlinksim", read(0x04, 0))
	_, err = c.Control(ctx, out, 0x05, 2, ifc, []byte{0})
	require.NoError(t, err)
	assert.Equal(t, "l", b.Pin("b"))

	// Other interfaces are ignored; unknown requests stall.
	_, err = c.Control(ctx, out, 0x01, 0, 0, nil)
	require.NoError(t, err)
	assert.True(t, b.Power())
	for _, r := range [][3]int{{out, 0x09, 0}, {out, 0x01, 7}, {in, 0x04, 9}, {out, 0x05, 1}} {
		_, err = c.Control(ctx, uint8(r[0]), uint8(r[1]), uint16(r[2]), ifc, nil)
		require.ErrorIs(t, err, dutlink.ErrStall, "request %v", r)
		assert.Contains(t, err.Error(), "libusb: pipe error [code -9]")
	}

	b.Unplug()
	_, err = c.Control(ctx, out, 0x00, 0, ifc, nil)
	assert.ErrorIs(t, err, dutlink.ErrGone)
	_, err = os.Stat(b.TTY())
	assert.ErrorIs(t, err, os.ErrNotExist, "the tty is gone with the board")
}

func TestStorageAppearsAndDisappears(t *testing.T) {
	ctx := context.Background()
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{DiskSize: 1 << 20, DiskDelay: 100 * time.Millisecond})
	c, err := lab.OpenUSB(ctx, dutlink.Board{Serial: b.Serial()})
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Control(ctx, 0x41, 0x02, 1, 3, nil)
	require.NoError(t, err)
	size := filepath.Join(lab.Sys, "class", "block", "sda", "size")
	got, err := os.ReadFile(size)
	require.NoError(t, err, "the disk is listed at once")
	assert.Equal(t, "0\n", string(got), "with size 0 until the medium is ready")
	require.Eventually(t, func() bool {
		got, _ := os.ReadFile(size)
		return string(got) == "2048\n"
	}, 5*time.Second, 5*time.Millisecond)
	real, err := filepath.EvalSymlinks(filepath.Join(lab.Sys, "class", "block", "sda"))
	require.NoError(t, err)
	board, err := filepath.EvalSymlinks(filepath.Join(lab.Sys, "bus", "usb", "devices", "1-1.1"))
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(real, filepath.Dir(board)+"/"), "the disk hangs off the board's hub")
	link, err := os.Readlink(filepath.Join(lab.Dev, "disk", "by-id", "usb-DUTlinkSim_Storage_"+b.Serial()+"-0:0"))
	require.NoError(t, err)
	assert.Equal(t, "../../sda", link)
	st1, err := os.Stat(filepath.Join(lab.Dev, "sda"))
	require.NoError(t, err)
	st2, err := os.Stat(b.DiskFile())
	require.NoError(t, err)
	assert.True(t, os.SameFile(st1, st2), "the node is the board's disk file")

	_, err = c.Control(ctx, 0x41, 0x02, 2, 3, nil)
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(lab.Sys, "class", "block", "sda"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = os.Stat(filepath.Join(lab.Dev, "sda"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = os.Stat(b.DiskFile())
	assert.NoError(t, err, "the medium itself stays")
}
