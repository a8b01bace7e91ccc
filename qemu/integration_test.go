package qemu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests boot real VMs: they need qemu-system-x86_64 and the images of
// `make qemu-images` in $DUT_QEMU_IMAGES (see needImages); those without
// images only QEMU.

// TestBootPowerCycleResetReboot flashes an image, boots it to a shell and
// reads its release, then reboots it every way there is: guest reboot,
// reset, guest power-off and power-on, power cut and power-on.
func TestBootPowerCycleResetReboot(t *testing.T) {
	images := needImages(t)
	ctx := t.Context()
	d := newTestDevice(t, "qemu-boot")
	rw, err := d.OpenConsole(ctx)
	require.NoError(t, err)
	c := newTcon(t, rw)
	flash(t, ctx, d, filepath.Join(images, "dut-1.0.0.img"))

	start := time.Now()
	require.NoError(t, d.PowerOn(ctx))
	pid := d.PID()
	require.NotZero(t, pid)
	t.Logf("QEMU started in %v: %s", time.Since(start).Round(time.Millisecond), d.CommandLine())
	require.NoError(t, d.PowerOn(ctx), "PowerOn when on does nothing")
	require.Equal(t, pid, d.PID())
	c.waitFor("dut login: ", bootTimeout)
	t.Logf("power-on to login prompt: %v; QEMU RSS %d MiB", time.Since(start).Round(time.Millisecond), rss(pid)>>10)
	c.send("root\n")
	c.waitFor("# ", 20*time.Second)
	require.Equal(t, "1.0.0", c.release())

	err = d.SetStorage(ctx, driver.StorageHost)
	require.ErrorIs(t, err, ErrDiskInUse)
	require.Contains(t, err.Error(), "power the device off first")

	// The guest reboots itself: QEMU resets the VM and stays.
	start = time.Now()
	c.send("reboot\n")
	c.login()
	t.Logf("guest reboot to shell: %v", time.Since(start).Round(time.Millisecond))
	require.Equal(t, pid, d.PID(), "a guest reboot keeps QEMU")

	start = time.Now()
	require.NoError(t, d.Reset(ctx))
	c.login()
	t.Logf("reset to shell: %v", time.Since(start).Round(time.Millisecond))
	require.Equal(t, "1.0.0", c.release())

	// The guest powers itself off (ACPI): QEMU exits, which is a
	// power-off, not a crash. The console stays open and quiet.
	c.send("poweroff\n")
	require.Eventually(t, func() bool { return !d.PoweredOn() }, 30*time.Second, 10*time.Millisecond)
	requireGone(t, pid)
	require.NoError(t, d.PowerOff(ctx), "PowerOff when off does nothing")
	require.NoError(t, d.ForceOff(ctx))
	require.ErrorIs(t, d.Reset(ctx), ErrPoweredOff)
	_, err = c.tryWaitFor("never printed", 300*time.Millisecond)
	require.ErrorContains(t, err, "no \"never printed\" after", "Read blocks while off, without error")
	n, err := rw.Write([]byte("dropped\n"))
	require.NoError(t, err, "writes while off are dropped")
	require.Equal(t, 8, n)

	// Power on again: the same console stream carries the new boot.
	flash(t, ctx, d, filepath.Join(images, "dut-2.0.0.img"))
	start = time.Now()
	require.NoError(t, d.PowerOn(ctx))
	pid2 := d.PID()
	require.NotEqual(t, pid, pid2)
	c.login()
	t.Logf("power-on to shell: %v", time.Since(start).Round(time.Millisecond))
	require.Equal(t, "2.0.0", c.release())

	// A power cut.
	start = time.Now()
	require.NoError(t, d.PowerOff(ctx))
	t.Logf("power off: %v", time.Since(start).Round(time.Millisecond))
	requireGone(t, pid2)
	require.Zero(t, d.PID())
	require.NoError(t, d.SetStorage(ctx, driver.StorageHost))
	target, err := d.BlockTarget(ctx)
	require.NoError(t, err)
	require.Equal(t, d.DiskPath(), target)
	_, err = os.Stat(d.PidFile())
	require.ErrorIs(t, err, os.ErrNotExist, "no pid file after power-off")
}

// TestKilledQEMUFailsConsole kills QEMU under a running guest: the console
// Read fails at once with ErrExited, saying how QEMU ended and how to run
// it again, and nothing is left running.
func TestKilledQEMUFailsConsole(t *testing.T) {
	images := needImages(t)
	ctx := t.Context()
	d := newTestDevice(t, "qemu-kill")
	rw, err := d.OpenConsole(ctx)
	require.NoError(t, err)
	c := newTcon(t, rw)
	flash(t, ctx, d, filepath.Join(images, "dut-1.0.0.img"))
	require.NoError(t, d.PowerOn(ctx))
	pid := d.PID()
	c.waitFor("SeaBIOS", bootTimeout) // the guest runs

	killed := time.Now()
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	err = c.readErr(5 * time.Second)
	t.Logf("Read failed %v after the kill: %v", time.Since(killed).Round(time.Millisecond), err)
	require.ErrorIs(t, err, ErrExited)
	var ee *ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, "killed by signal 9 (killed)", ee.Status)
	require.False(t, ee.Starting)
	msg := err.Error()
	require.Contains(t, msg, "QEMU exited unexpectedly (killed by signal 9 (killed)) while powered on")
	require.Contains(t, msg, d.CommandLine())
	require.Contains(t, msg, "-drive file="+d.DiskPath()+",format=raw,if=virtio")

	requireGone(t, pid)
	require.Zero(t, d.PID())
	// Read keeps failing; Write fails too; Reset says why it cannot.
	_, err = rw.Read(make([]byte, 10))
	require.ErrorIs(t, err, ErrExited)
	_, err = rw.Write([]byte("x"))
	require.ErrorIs(t, err, ErrExited)
	err = d.Reset(ctx)
	require.ErrorIs(t, err, ErrPoweredOff)
	require.ErrorIs(t, err, ErrExited)
	require.NoError(t, d.PowerOff(ctx))

	// A new power-on brings the console back.
	require.NoError(t, d.PowerOn(ctx))
	c2 := newTcon(t, rw)
	c2.waitFor("SeaBIOS", bootTimeout)
}

// TestSIGTERMIsUnexpected: QEMU terminated by someone else's SIGTERM exits
// with status 0, which is still not a power-off the driver asked for.
func TestSIGTERMIsUnexpected(t *testing.T) {
	needQEMU(t)
	ctx := t.Context()
	d := newTestDevice(t, "qemu-term")
	rw, err := d.OpenConsole(ctx)
	require.NoError(t, err)
	c := newTcon(t, rw)
	require.NoError(t, d.PowerOn(ctx))
	require.NoError(t, syscall.Kill(d.PID(), syscall.SIGTERM))
	err = c.readErr(5 * time.Second)
	require.ErrorIs(t, err, ErrExited)
	require.Contains(t, err.Error(), "terminating on signal 15")
}

// TestNoBootableDevice boots a blank disk and no disk at all: SeaBIOS says
// so on the serial console.
func TestNoBootableDevice(t *testing.T) {
	images := needImages(t)
	ctx := t.Context()
	d := newTestDevice(t, "qemu-blank")
	rw, err := d.OpenConsole(ctx)
	require.NoError(t, err)
	c := newTcon(t, rw)

	flash(t, ctx, d, filepath.Join(images, "blank.img"))
	require.NoError(t, d.PowerOn(ctx))
	require.Contains(t, d.CommandLine(), "-drive file=")
	c.waitFor("No bootable device", 30*time.Second)
	require.NoError(t, d.PowerOff(ctx))

	require.NoError(t, d.SetStorage(ctx, driver.StorageOff))
	require.NoError(t, d.PowerOn(ctx))
	require.NotContains(t, d.CommandLine(), "-drive")
	c.waitFor("No bootable device", 30*time.Second)
}

// TestParallelDevices runs two VMs at once, each on its own image.
func TestParallelDevices(t *testing.T) {
	images := needImages(t)
	ctx := t.Context()
	versions := []string{"1.0.0", "2.0.0"}
	devs := make([]*Device, len(versions))
	cons := make([]*tcon, len(versions))
	for i, v := range versions {
		devs[i] = newTestDevice(t, "qemu-par"+v)
		rw, err := devs[i].OpenConsole(ctx)
		require.NoError(t, err)
		cons[i] = newTcon(t, rw)
		flash(t, ctx, devs[i], filepath.Join(images, "dut-"+v+".img"))
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(versions))
	for i := range devs {
		wg.Go(func() { errs[i] = devs[i].PowerOn(ctx) })
	}
	wg.Wait()
	for i := range devs {
		require.NoError(t, errs[i])
	}
	for i, v := range versions {
		cons[i].login()
		assert.Equal(t, v, cons[i].release())
	}
	t.Logf("2 VMs in parallel: both at a shell after %v", time.Since(start).Round(time.Millisecond))
	assert.NotEqual(t, devs[0].PID(), devs[1].PID())
}

// TestStaleQEMUIsKilled: a QEMU left running by a dead test process (here:
// a device value that was never closed) is killed at the next power-on of
// the same device.
func TestStaleQEMUIsKilled(t *testing.T) {
	needQEMU(t)
	ctx := t.Context()
	dir := t.TempDir()
	disk := filepath.Join(dir, "qemu-stale.disk")
	old, err := NewDevice("qemu-stale", disk, Options{})
	require.NoError(t, err)
	require.NoError(t, old.SetStorage(ctx, driver.StorageDUT))
	require.NoError(t, old.PowerOn(ctx))
	oldPID := old.PID()
	runDir := old.runDir()
	b, err := os.ReadFile(old.PidFile())
	require.NoError(t, err)
	require.Equal(t, oldPID, readPidfile(old.PidFile()), "QEMU writes its pid file: %q", b)

	// As the harness does after it locked the device: power off first.
	d, err := NewDevice("qemu-stale", disk, Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	require.NoError(t, d.PowerOff(ctx))
	requireGone(t, oldPID)
	require.NoError(t, d.SetStorage(ctx, driver.StorageDUT))
	require.NoError(t, d.PowerOn(ctx))
	require.NotEqual(t, oldPID, d.PID())
	_, err = os.Stat(runDir)
	require.ErrorIs(t, err, os.ErrNotExist, "the stale QEMU's runtime directory is removed")
	require.NoError(t, old.Close())

	pid := d.PID()
	require.NoError(t, d.Close())
	requireGone(t, pid)
	require.ErrorIs(t, d.PowerOn(ctx), ErrClosed)
}

// TestCloseLeavesNothing: Close kills a running QEMU and removes its
// runtime directory and pid file.
func TestCloseLeavesNothing(t *testing.T) {
	needQEMU(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	d, err := NewDevice("qemu-close", filepath.Join(t.TempDir(), "qemu-close.disk"), Options{})
	require.NoError(t, err)
	rw, err := d.OpenConsole(ctx)
	require.NoError(t, err)
	c := newTcon(t, rw)
	require.NoError(t, d.PowerOn(ctx))
	pid := d.PID()
	runDir := d.runDir()
	require.DirExists(t, runDir)
	require.True(t, strings.HasPrefix(filepath.Base(runDir), runDirPrefix))
	require.NoError(t, d.Close())
	requireGone(t, pid)
	require.NoDirExists(t, runDir)
	require.NoFileExists(t, d.PidFile())
	err = c.readErr(5 * time.Second)
	require.ErrorIs(t, err, os.ErrClosed, "Close of the device ends the console")
	require.False(t, errors.Is(err, ErrExited))
	require.NoError(t, d.Close(), "closing twice is fine")
}
