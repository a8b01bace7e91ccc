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

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
)

func TestShellProtocol(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.08", Config: map[string]string{"name": "n1"}})
	tm := openTerm(t, b.TTY())

	// 0.08 boots in console mode: bytes go to the DUT.
	tm.send("abc\r")
	require.Eventually(t, func() bool { return bytes.Equal(b.DUTInput(), []byte("abc\r")) }, 5*time.Second, time.Millisecond)
	assert.False(t, b.AtShell())
	tm.send(escape)
	assert.Equal(t, exitReply, tm.until("#> "), "the firmware's answer to the escape")
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
	assert.Equal(t, "\x02\x02\x02\x02\x02monitor off\r\nunsupported command\r\n#> ", tm.until("#> "),
		"at the shell Ctrl-B is echoed and joins the line, as in the firmware's line editor")
	tm.send("monitor off\r\n")
	assert.Equal(t, "monitor off\r\nMonitor disabled\r\n#> ", tm.until("#> "))
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
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Config: map[string]string{"name": "old", "json": `{"k":1}`}})
	c := openCtl(t, lab, b)
	c.out(reqRefresh, 0, nil)
	assert.Equal(t, 3, c.out(reqConfig, 0, []byte("new")))
	assert.Equal(t, "old", c.read(reqConfig, 0), "IN data comes from the last Refresh")
	c.out(reqRefresh, 0, nil)
	assert.Equal(t, "new", c.read(reqConfig, 0))
	buf := make([]byte, 300)
	n, err := c.c.Control(ctx, reqIn, reqConfig, 1, ifc, buf)
	require.NoError(t, err)
	assert.Equal(t, 256, n, "tags come as a NUL-padded 256-byte field")

	c.out(reqPower, 1, nil)
	c.barrier()
	assert.True(t, b.Power())
	c.out(reqRefresh, 0, nil)
	assert.Equal(t, "3.00W 5.00V 0.60A", c.read(reqRead, 1))
	assert.Equal(t, "5.00V", c.read(reqRead, 2))
	assert.Equal(t, "0.60A", c.read(reqRead, 3))
	assert.Equal(t, "0.08 git-ref: dutlinksim", c.read(reqRead, 0))
	assert.Equal(t, 1, c.out(reqSetPin, 2, []byte{0}))
	c.barrier()
	assert.Equal(t, "l", b.Pin("b"))

	// Other interfaces are ignored; unknown requests stall, and so does
	// the json key (index 6), which only the shell knows.
	_, err = c.c.Control(ctx, reqOut, reqPower, 0, 0, nil)
	require.NoError(t, err)
	c.barrier()
	assert.True(t, b.Power())
	for _, r := range [][3]int{{reqOut, 0x09, 0}, {reqOut, reqPower, 7}, {reqIn, reqRead, 9}, {reqOut, reqSetPin, 1}, {reqOut, reqConfig, 6}, {reqIn, reqConfig, 6}} {
		_, err = c.c.Control(ctx, uint8(r[0]), uint8(r[1]), uint16(r[2]), ifc, []byte("x"))
		require.ErrorIs(t, err, dutlink.ErrStall, "request %v", r)
		assert.Contains(t, err.Error(), "libusb: pipe error [code -9]")
	}
	assert.Equal(t, `{"k":1}`, b.Config()["json"], "a stalled json write changes nothing")

	b.Unplug()
	_, err = c.c.Control(ctx, reqOut, reqRefresh, 0, ifc, nil)
	assert.ErrorIs(t, err, dutlink.ErrGone)
	_, err = os.Stat(b.TTY())
	assert.ErrorIs(t, err, os.ErrNotExist, "the tty is gone with the board")
}

func TestStorageAppearsAndDisappears(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{DiskSize: 1 << 20, DiskDelay: 300 * time.Millisecond})
	c := openCtl(t, lab, b)
	start := time.Now()
	c.out(reqStorage, 1, nil)
	c.barrier()
	size := filepath.Join(lab.Sys, "class", "block", "sda", "size")
	got, err := os.ReadFile(size)
	require.NoError(t, err, "the disk is listed once the request has run")
	if time.Since(start) < 300*time.Millisecond {
		assert.Equal(t, "0\n", string(got), "with size 0 until the medium is ready")
	}
	require.Eventually(t, func() bool {
		got, _ := os.ReadFile(size)
		return string(got) == "2048\n"
	}, wait, 5*time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
	real, err := filepath.EvalSymlinks(filepath.Join(lab.Sys, "class", "block", "sda"))
	require.NoError(t, err)
	board, err := filepath.EvalSymlinks(filepath.Join(lab.Sys, "bus", "usb", "devices", "1-1.6"))
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

	usbDev := usbDeviceOf(t, lab, "sda")
	assert.Equal(t, "DUTlinkSim_Storage_"+b.Serial(), attr(t, usbDev, "serial"), "the stick's serial is its default id")
	assert.True(t, exists(filepath.Join(lab.Sys, "bus", "usb", "devices", filepath.Base(usbDev))), "the stick is listed as a USB device")

	c.out(reqStorage, 2, nil)
	c.barrier()
	assert.False(t, exists(usbDev), "the stick's USB device is gone")
	_, err = os.Stat(filepath.Join(lab.Sys, "class", "block", "sda"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = os.Stat(filepath.Join(lab.Dev, "sda"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = os.Stat(b.DiskFile())
	assert.NoError(t, err, "the medium itself stays")
}
