package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests run the fake QEMU of fake_test.go: they need no QEMU.

func newFakeDevice(t *testing.T, mode string, extra ...string) *Device {
	t.Helper()
	d, err := NewDevice("fake", filepath.Join(t.TempDir(), "fake.disk"), fakeOptions(t, mode, extra...))
	require.NoError(t, err)
	t.Cleanup(func() {
		pid := d.PID()
		require.NoError(t, d.Close())
		if pid != 0 {
			requireGone(t, pid)
		}
	})
	return d
}

func TestFakePowerCycleKeepsOneConsole(t *testing.T) {
	ctx := t.Context()
	d := newFakeDevice(t, "ok")
	require.False(t, d.PoweredOn())
	rw, err := d.OpenConsole(ctx)
	require.NoError(t, err)
	_, err = d.OpenConsole(ctx)
	require.ErrorIs(t, err, ErrConsoleBusy)
	c := newTcon(t, rw)

	n, err := rw.Write([]byte("dropped while off\n"))
	require.NoError(t, err)
	require.Equal(t, 18, n)

	for i := range 3 {
		require.NoError(t, d.PowerOn(ctx))
		pid := d.PID()
		require.NotZero(t, pid)
		require.Equal(t, strconv.Itoa(pid), strings.TrimSpace(readFile(t, d.PidFile())))
		c.waitFor("fake login: ", 10*time.Second)
		c.send("hello " + strconv.Itoa(i) + "\n")
		c.waitFor("hello "+strconv.Itoa(i)+"\r\n", 10*time.Second)
		require.NoError(t, d.Reset(ctx))
		c.waitFor("fake reset\r\nfake login: ", 10*time.Second)
		require.NoError(t, d.PowerOff(ctx))
		require.Zero(t, d.PID())
		requireGone(t, pid)
		require.NoError(t, d.PowerOff(ctx))
	}
	require.NotContains(t, c.buf.String(), "dropped", "input while off never reaches a VM")
	_, err = c.tryWaitFor("anything", 200*time.Millisecond)
	require.ErrorContains(t, err, "no \"anything\" after")
}

// Output a VM printed before its power-off is read, in order, before the
// next VM's, also when nobody read it while it ran.
func TestFakeNoOutputLostAcrossPowerCycles(t *testing.T) {
	ctx := t.Context()
	d := newFakeDevice(t, "ok")
	rw, err := d.OpenConsole(ctx)
	require.NoError(t, err)
	for range 3 {
		require.NoError(t, d.PowerOn(ctx)) // the fake prints its banner before it answers cont
		require.NoError(t, d.PowerOff(ctx))
	}
	require.NoError(t, d.PowerOn(ctx))
	c := newTcon(t, rw)
	c.waitFor(strings.Repeat("fake boot\r\nfake login: ", 4), 10*time.Second)
}

func TestFakeGuestPowerOffIsNotACrash(t *testing.T) {
	ctx := t.Context()
	d := newFakeDevice(t, "ok")
	rw, err := d.OpenConsole(ctx)
	require.NoError(t, err)
	c := newTcon(t, rw)
	require.NoError(t, d.PowerOn(ctx))
	pid := d.PID()
	c.waitFor("fake login: ", 10*time.Second)
	c.send("poweroff\n")
	requireGone(t, pid)
	require.Eventually(t, func() bool { return !d.PoweredOn() }, 5*time.Second, time.Millisecond)
	_, err = c.tryWaitFor("anything", 200*time.Millisecond)
	require.ErrorContains(t, err, "no \"anything\" after", "Read blocks without error")
	require.ErrorIs(t, d.Reset(ctx), ErrPoweredOff)
	require.NotErrorIs(t, d.Reset(ctx), ErrExited)
	require.NoError(t, d.PowerOff(ctx))
	require.NoError(t, d.PowerOn(ctx))
	c.waitFor("fake login: ", 10*time.Second)
}

func TestFakeCrash(t *testing.T) {
	ctx := t.Context()
	d := newFakeDevice(t, "ok")
	rw, err := d.OpenConsole(ctx)
	require.NoError(t, err)
	c := newTcon(t, rw)
	require.NoError(t, d.PowerOn(ctx))
	c.waitFor("fake login: ", 10*time.Second)
	c.send("crash\n")
	err = c.readErr(5 * time.Second)
	require.ErrorIs(t, err, ErrExited)
	var ee *ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, "fake", ee.Device)
	assert.Equal(t, "exit status 3", ee.Status)
	assert.False(t, ee.Starting)
	assert.Equal(t, "fake crash", ee.Stderr)
	assert.Equal(t, d.CommandLine(), ee.CommandLine)
	assert.Contains(t, err.Error(), "qemu fake: QEMU exited unexpectedly (exit status 3) while powered on; QEMU's stderr (last lines):\n\t| fake crash\nreproduce with: "+d.CommandLine())
	c.mu.Lock()
	assert.Contains(t, c.buf.String(), "crash\r\n", "the output before the crash is read first")
	c.mu.Unlock()

	_, err = rw.Write([]byte("x"))
	require.ErrorIs(t, err, ErrExited)
	err = d.Reset(ctx)
	require.ErrorIs(t, err, ErrPoweredOff)
	require.ErrorIs(t, err, ErrExited)

	// The next power-on clears the error.
	require.NoError(t, d.PowerOn(ctx))
	require.NoError(t, d.Reset(ctx))
	c2 := newTcon(t, rw)
	c2.waitFor("fake reset\r\nfake login: ", 10*time.Second)
}

func TestFakeStartFailure(t *testing.T) {
	ctx := t.Context()
	d := newFakeDevice(t, "fail")
	rw, err := d.OpenConsole(ctx)
	require.NoError(t, err)
	c := newTcon(t, rw)
	err = d.PowerOn(ctx)
	require.ErrorIs(t, err, ErrExited)
	var ee *ExitError
	require.ErrorAs(t, err, &ee)
	assert.True(t, ee.Starting)
	assert.Equal(t, "exit status 1", ee.Status)
	assert.Contains(t, err.Error(), "qemu fake: power on: qemu fake: QEMU exited unexpectedly (exit status 1) during power-on; QEMU's stderr (last lines):\n\t| fake: bad option\nreproduce with: ")
	assert.Contains(t, err.Error(), d.CommandLine())
	assert.NotEmpty(t, d.CommandLine())
	require.Zero(t, d.PID())
	_, err = c.tryWaitFor("anything", 200*time.Millisecond)
	require.ErrorContains(t, err, "no \"anything\" after", "a failed start does not end the console")
}

func TestFakeStartTimeout(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "hang.pid")
	d := newFakeDevice(t, "hang", pidFile)
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	err := d.PowerOn(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "waiting for QEMU's QMP socket")
	require.ErrorContains(t, err, "reproduce with: "+d.CommandLine())
	pid, err := strconv.Atoi(readFile(t, pidFile))
	require.NoError(t, err)
	requireGone(t, pid)
	require.Zero(t, d.PID())
}

func TestFakeMissingBinary(t *testing.T) {
	d, err := NewDevice("nobin", filepath.Join(t.TempDir(), "nobin.disk"), Options{Binary: "qemu-system-nonexistent"})
	require.NoError(t, err)
	defer d.Close()
	err = d.PowerOn(t.Context())
	require.ErrorIs(t, err, ErrNoBinary)
	require.ErrorContains(t, err, EnvBinary)
	require.ErrorContains(t, err, "apt-get install qemu-system-x86")
}

func TestFakeStorage(t *testing.T) {
	ctx := t.Context()
	d := newFakeDevice(t, "ok")
	require.Equal(t, driver.StorageOff, d.Storage())
	_, err := d.BlockTarget(ctx)
	require.ErrorIs(t, err, ErrStorageNotOnHost)
	require.ErrorContains(t, d.SetStorage(ctx, "sideways"), "unknown storage mode")

	// Storage off: no disk attached, so the host may have it even while on.
	require.NoError(t, d.PowerOn(ctx))
	require.NotContains(t, d.CommandLine(), "-drive")
	require.NoError(t, d.SetStorage(ctx, driver.StorageHost))
	target, err := d.BlockTarget(ctx)
	require.NoError(t, err)
	require.Equal(t, d.DiskPath(), target)
	require.NoError(t, d.SetStorage(ctx, driver.StorageDUT))
	require.NoError(t, d.PowerOff(ctx))

	require.NoError(t, d.PowerOn(ctx))
	require.Contains(t, d.CommandLine(), "-drive file="+d.DiskPath()+",format=raw,if=virtio")
	err = d.SetStorage(ctx, driver.StorageHost)
	require.ErrorIs(t, err, ErrDiskInUse)
	require.Equal(t, driver.StorageDUT, d.Storage())
	require.NoError(t, d.SetStorage(ctx, driver.StorageOff), "off and dut apply at the next power-on")
	require.NoError(t, d.ForceOff(ctx))
	require.NoError(t, d.SetStorage(ctx, driver.StorageHost))

	// The disk is never truncated; a deleted one comes back.
	require.NoError(t, os.WriteFile(d.DiskPath(), []byte("tiny"), 0o644))
	require.NoError(t, d.SetStorage(ctx, driver.StorageHost))
	require.Equal(t, "tiny", readFile(t, d.DiskPath()))
	require.NoError(t, os.Remove(d.DiskPath()))
	require.NoError(t, d.SetStorage(ctx, driver.StorageHost))
	fi, err := os.Stat(d.DiskPath())
	require.NoError(t, err)
	require.EqualValues(t, DefaultDiskSize, fi.Size())
}

func TestFakeForceOffAndClose(t *testing.T) {
	ctx := t.Context()
	d := newFakeDevice(t, "ok")
	rw, err := d.OpenConsole(ctx)
	require.NoError(t, err)
	c := newTcon(t, rw)
	require.NoError(t, d.ForceOn(ctx))
	pid := d.PID()
	runDir := d.runDir()
	require.DirExists(t, runDir)
	require.NoError(t, d.ForceOff(ctx))
	requireGone(t, pid)
	require.NoDirExists(t, runDir)
	require.NoFileExists(t, d.PidFile(), "the driver removes the pid file of a killed QEMU")
	_, err = c.tryWaitFor("anything", 200*time.Millisecond)
	require.ErrorContains(t, err, "no \"anything\" after", "ForceOff is a power-off, not a crash")

	require.NoError(t, d.PowerOn(ctx))
	pid = d.PID()
	runDir = d.runDir()
	require.NoError(t, d.Close())
	requireGone(t, pid)
	require.NoDirExists(t, runDir)
	require.ErrorIs(t, c.readErr(5*time.Second), os.ErrClosed)
	for _, err := range []error{d.PowerOn(ctx), d.PowerOff(ctx), d.ForceOff(ctx), d.Reset(ctx), d.SetStorage(ctx, driver.StorageHost)} {
		require.ErrorIs(t, err, ErrClosed)
	}
	_, err = d.BlockTarget(ctx)
	require.ErrorIs(t, err, ErrClosed)
	_, err = d.OpenConsole(ctx)
	require.ErrorIs(t, err, ErrClosed)
}

// PowerOff with a context that ends before QEMU obeys quit kills it.
func TestFakePowerOffTimeoutKills(t *testing.T) {
	d := newFakeDevice(t, "ok")
	require.NoError(t, d.PowerOn(t.Context()))
	pid := d.PID()
	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP)) // deaf to quit
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	require.NoError(t, d.PowerOff(ctx))
	require.Less(t, time.Since(start), 5*time.Second)
	requireGone(t, pid)
	require.False(t, d.PoweredOn())
}

func TestFakeConsoleOpenedWhileOn(t *testing.T) {
	ctx := t.Context()
	d := newFakeDevice(t, "ok")
	require.NoError(t, d.PowerOn(ctx))
	rw, err := d.OpenConsole(ctx)
	require.NoError(t, err)
	c := newTcon(t, rw)
	c.send("ping\n")
	c.waitFor("ping\r\n", 10*time.Second)
	require.NoError(t, rw.Close())
	require.NoError(t, rw.Close(), "closing twice is fine")
	_, err = rw.Read(make([]byte, 1))
	require.ErrorIs(t, err, os.ErrClosed)
	_, err = rw.Write([]byte("x"))
	require.ErrorIs(t, err, os.ErrClosed)
	rw2, err := d.OpenConsole(ctx)
	require.NoError(t, err, "a closed console can be opened again")
	c2 := newTcon(t, rw2)
	c2.send("pong\n")
	c2.waitFor("pong\r\n", 10*time.Second)
}

func TestFakeStaleQEMUKilledAtPowerOn(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	old, err := NewDevice("stale", filepath.Join(dir, "stale.disk"), fakeOptions(t, "ok"))
	require.NoError(t, err)
	require.NoError(t, old.PowerOn(ctx))
	oldPID, oldRun := old.PID(), old.runDir()
	defer old.Close()

	d, err := NewDevice("stale", filepath.Join(dir, "stale.disk"), fakeOptions(t, "ok"))
	require.NoError(t, err)
	defer d.Close()
	require.NoError(t, d.PowerOn(ctx))
	requireGone(t, oldPID)
	require.NoDirExists(t, oldRun)
	require.NotEqual(t, oldPID, d.PID())

	// PowerOff, ForceOff and SetStorage(host) of a device that is off kill
	// a stale QEMU too: the harness flashes before it powers on.
	for _, op := range []func(*Device) error{
		func(d *Device) error { return d.PowerOff(ctx) },
		func(d *Device) error { return d.ForceOff(ctx) },
		func(d *Device) error { return d.SetStorage(ctx, driver.StorageHost) },
	} {
		stale, err := NewDevice("stale", filepath.Join(dir, "stale2.disk"), fakeOptions(t, "ok"))
		require.NoError(t, err)
		require.NoError(t, stale.PowerOn(ctx))
		pid := stale.PID()
		d2, err := NewDevice("stale", filepath.Join(dir, "stale2.disk"), fakeOptions(t, "ok"))
		require.NoError(t, err)
		require.NoError(t, op(d2))
		requireGone(t, pid)
		require.NoError(t, stale.Close())
		require.NoError(t, d2.Close())
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}
