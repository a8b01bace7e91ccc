package dutlinksim_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
)

// portRe is how the dutlink driver tells USB devices from root hubs and
// interfaces in bus/usb/devices.
var portRe = regexp.MustCompile(`^\d+-\d+(\.\d+)*$`)

// A board on a root port sits right below the root hub, and its disk
// appears on another root port, not below the board.
func TestRootPortBoard(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.08", RootPort: true, DiskID: "SanDisk_Extreme_55AA"})
	dev := b.SysPath()
	port := filepath.Base(dev)
	require.Regexp(t, portRe, port, "the driver lists it as a USB device")
	assert.Equal(t, "usb1", filepath.Base(filepath.Dir(dev)), "its parent is the root hub: no hub of its own")
	assert.False(t, portRe.MatchString(filepath.Base(filepath.Dir(dev))))
	real, err := filepath.EvalSymlinks(filepath.Join(lab.Sys, "bus", "usb", "devices", port))
	require.NoError(t, err)
	assert.Equal(t, dev, real)
	assert.Equal(t, "2b23", attr(t, dev, "idVendor"))
	assert.Equal(t, b.Serial(), attr(t, dev, "serial"))
	ttys, err := os.ReadDir(filepath.Join(dev, port+":1.0", "tty"))
	require.NoError(t, err)
	require.Len(t, ttys, 1)
	assert.Equal(t, filepath.Join(lab.Dev, ttys[0].Name()), b.TTY())
	assert.Equal(t, "ff", attr(t, filepath.Join(dev, port+":1.3"), "bInterfaceClass"))

	c := openCtl(t, lab, b)
	c.out(reqStorage, 1, nil)
	c.barrier()
	name := blockOf(lab, "SanDisk_Extreme_55AA")
	require.NotEmpty(t, name, "the stick's by-id name comes from DiskID")
	stick := usbDeviceOf(t, lab, name)
	assert.Equal(t, "SanDisk_Extreme_55AA", attr(t, stick, "serial"))
	assert.Equal(t, "usb1", filepath.Base(filepath.Dir(stick)), "the stick is on a root port")
	assert.NotEqual(t, port, filepath.Base(stick), "a port of its own")
	diskReal, err := filepath.EvalSymlinks(filepath.Join(lab.Sys, "class", "block", name))
	require.NoError(t, err)
	assert.False(t, strings.HasPrefix(diskReal, dev+"/"), "not below the board")
	assert.True(t, exists(filepath.Join(lab.Sys, "bus", "usb", "devices", filepath.Base(stick))))

	c.out(reqStorage, 0, nil)
	c.barrier()
	assert.False(t, exists(byID(lab, "SanDisk_Extreme_55AA")))
	assert.False(t, exists(stick))
	assert.True(t, exists(dev), "the board stays")

	b.Unplug()
	assert.False(t, exists(dev))
	assert.False(t, exists(filepath.Join(lab.Sys, "bus", "usb", "devices", port)))
}

// DiskAppearDelay delays the disk's appearance; DiskDelay its size, from
// its appearance.
func TestDiskAppearDelay(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	const appear, ready = 300 * time.Millisecond, 100 * time.Millisecond
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.07", DiskSize: 1 << 20, DiskAppearDelay: appear, DiskDelay: ready})
	id := "DUTlinkSim_Storage_" + b.Serial()
	tm := openTerm(t, b.TTY())
	start := time.Now()
	tm.send("storage host\r\n")
	tm.until("storage connected to host\r\n#> ")
	if time.Since(start) < appear {
		assert.False(t, exists(byID(lab, id)), "not there yet")
	}
	require.Eventually(t, func() bool { return blockOf(lab, id) != "" }, wait, 5*time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(start), appear)
	name := blockOf(lab, id)
	require.Eventually(t, func() bool { return sizeOf(lab, name) == "2048" }, wait, 5*time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(start), appear+ready)

	// Leaving the host before the disk appeared cancels it.
	tm.send("storage off\r\n")
	tm.until("#> ")
	tm.send("storage host\r\n")
	tm.until("#> ")
	tm.send("storage off\r\n")
	tm.until("#> ")
	tm.send("storage host\r\n")
	tm.until("#> ")
	require.Eventually(t, func() bool { return blockOf(lab, id) != "" }, wait, 5*time.Millisecond)
	ents, err := os.ReadDir(filepath.Join(lab.Sys, "class", "block"))
	require.NoError(t, err)
	assert.Len(t, ents, 1, "one disk: the cancelled appearance never came")
}

func TestForeignDiskLater(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{})
	const delay = 200 * time.Millisecond
	start := time.Now()
	file, err := lab.AddDiskAfter("Late_1", 1<<20, delay)
	require.NoError(t, err)
	data, err := os.ReadFile(file)
	require.NoError(t, err, "the file is there at once")
	assert.Len(t, data, 1<<20)
	assert.Equal(t, byte(0x5a), data[0])
	if time.Since(start) < delay {
		assert.False(t, exists(byID(lab, "Generic_Late_1")), "the disk is not there yet")
	}
	require.Eventually(t, func() bool { return blockOf(lab, "Generic_Late_1") != "" }, wait, 5*time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(start), delay)
	name := blockOf(lab, "Generic_Late_1")
	assert.Equal(t, "2048", sizeOf(lab, name), "ready as it appears")
	stick := usbDeviceOf(t, lab, name)
	assert.False(t, strings.HasPrefix(stick, filepath.Dir(b.SysPath())+"/"), "not below the board's hub")

	lab.RemoveDisk(file)
	assert.False(t, exists(byID(lab, "Generic_Late_1")))
	assert.False(t, exists(stick))
	assert.False(t, exists(filepath.Dir(stick)), "its hub is gone too")
	assert.True(t, exists(file), "the file stays")
	_, err = lab.AddDisk("Late_1", 1<<20)
	require.NoError(t, err, "a removed disk's id can be used again")
	assert.True(t, exists(byID(lab, "Generic_Late_1")), "AddDisk plugs at once")

	// A disk removed before it appeared never appears.
	never, err := lab.AddDiskAfter("Never", 1<<20, 50*time.Millisecond)
	require.NoError(t, err)
	lab.RemoveDisk(never)
	_, err = lab.AddDiskAfter("Marker", 1<<20, 150*time.Millisecond)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return exists(byID(lab, "Generic_Marker")) }, wait, 5*time.Millisecond)
	assert.False(t, exists(byID(lab, "Generic_Never")))
	_, err = lab.AddDiskAfter("Marker", 1<<20, 0)
	assert.Error(t, err, "one disk per id")
}

// OnStorage runs once, when the mux next switches to its mode, over either
// transport; a foreign disk plugged from it appears while the board's own
// does.
func TestOnStorage(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.08", DiskID: "Stick_A"})
	c := openCtl(t, lab, b)
	var hostCalls atomic.Int32
	switched := make(chan time.Time, 1)
	b.OnStorage("host", func() {
		hostCalls.Add(1)
		_, err := lab.AddDiskAfter("Stick_B", 1<<20, 100*time.Millisecond)
		assert.NoError(t, err)
		switched <- time.Now()
	})
	c.out(reqStorage, 1, nil)
	var at time.Time
	select {
	case at = <-switched:
	case <-time.After(wait):
		t.Fatal("the hook did not run")
	}
	require.Eventually(t, func() bool { return exists(byID(lab, "Generic_Stick_B")) }, wait, 5*time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(at), 100*time.Millisecond)
	assert.True(t, exists(byID(lab, "Stick_A")), "the board's own disk is there too")

	offs := make(chan struct{}, 1)
	b.OnStorage("off", func() { offs <- struct{}{} })
	tm := openTerm(t, b.TTY())
	tm.toShell()
	tm.send("storage off\r\n")
	tm.until("storage disconnected\r\n#> ")
	select {
	case <-offs:
	case <-time.After(wait):
		t.Fatal("the hook did not run on the shell's storage command")
	}
	tm.send("storage host\r\n")
	tm.until("storage connected to host\r\n#> ")
	assert.Equal(t, int32(1), hostCalls.Load(), "a hook runs once")
}

// Ejection is seen through the delete file, whoever wrote it.
func TestEjectedByAnotherProcess(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.08"})
	c := openCtl(t, lab, b)
	c.out(reqStorage, 1, nil)
	id := "DUTlinkSim_Storage_" + b.Serial()
	require.Eventually(t, func() bool { n := blockOf(lab, id); return n != "" && sizeOf(lab, n) != "0" }, wait, 5*time.Millisecond)
	name := blockOf(lab, id)
	del := filepath.Join(lab.Sys, "block", name, "device", "delete")
	out, err := exec.Command("sh", "-c", `printf 1 > "$1"`, "sh", del).CombinedOutput()
	require.NoError(t, err, "%s", out)

	tm := openTerm(t, b.TTY())
	tm.toShell()
	tm.send("storage off\r\n")
	tm.until("storage disconnected\r\n#> ")
	assert.Equal(t, []string{name}, b.Ejected())
}
