package qemue2e_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/faketb"
	"github.com/jumpstarter-dev/jumpstarter-go/qemu"
	_ "github.com/jumpstarter-dev/jumpstarter-go/remote" // DUT_DRIVER=remote: through a dut serve
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/qemuimage"
)

// qemuDir holds this test binary's virtual DUTs; TestMain checks that no QEMU
// using it outlives the tests.
var qemuDir string

// remote says the tests reach their devices through an exporter
// (DUT_DRIVER=remote, DUT_EXPORTER): a dut serve that was started with
// DUT_QEMU_DEVICES=4 and DUT_QEMU_DIR set, as make main-job-remote does.
var remote = os.Getenv("DUT_DRIVER") == "remote"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "jsq-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	qemuDir = dir
	if remote {
		// The exporter's devices and their directory; a lock directory
		// of this process's own for the client side.
		qemuDir = os.Getenv("DUT_QEMU_DIR")
		if qemuDir == "" || os.Getenv("DUT_EXPORTER") == "" {
			fmt.Fprintln(os.Stderr, "DUT_DRIVER=remote needs DUT_EXPORTER and DUT_QEMU_DIR (the exporter's)")
			os.Exit(2)
		}
	} else {
		// Four devices, so that the parallel tests below each get one;
		// every test process has its own devices and lock directory.
		os.Setenv("DUT_DRIVER", "qemu")
		os.Setenv("DUT_QEMU_DEVICES", "4")
		os.Setenv("DUT_QEMU_DIR", dir)
	}
	os.Setenv("DUT_LOCK_DIR", filepath.Join(dir, "locks"))
	os.Setenv("DUT_BOOT_TIMEOUT", "3m")
	os.Unsetenv("DUT_NAME")
	os.Unsetenv("DUT_TAGS")
	code := m.Run()
	if left := leftovers(qemuDir); len(left) > 0 && !remote {
		fmt.Fprintf(os.Stderr, "QEMU processes left running: %v\n", left)
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		code = 1
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// leftovers returns the PIDs of processes whose command line names dir.
func leftovers(dir string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmd), dir) && strings.Contains(string(cmd), "qemu-system") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// image returns the path of a built image, skipping (or, in CI, failing)
// when the images or QEMU are missing.
func image(t *testing.T, name string) string {
	t.Helper()
	p, err := qemuimage.Path(name)
	if err == nil {
		bin := os.Getenv(qemu.EnvBinary)
		if bin == "" {
			bin = "qemu-system-x86_64"
		}
		_, err = exec.LookPath(bin)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("QEMU tier: %v (CI must run make qemu-images)", err)
		}
		t.Skipf("QEMU tier: %v", err)
	}
	return p
}

// qemuPID is the QEMU process of the device: its own for a local one; for
// one an exporter on this host serves, the QEMU whose command line names
// its disk in the exporter's directory.
func qemuPID(t *testing.T, dev driver.Device) int {
	t.Helper()
	if d, ok := dev.(*qemu.Device); ok {
		return d.PID()
	}
	disk := filepath.Join(qemuDir, dev.Name()+".disk")
	for _, pid := range leftovers(qemuDir) {
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && strings.Contains(string(cmd), disk) {
			return pid
		}
	}
	t.Fatalf("no QEMU process of %s (%s) on this host", dev.Name(), disk)
	return 0
}

func release(t *testing.T, sh *harness.Shell) string {
	t.Helper()
	return strings.TrimSpace(sh.Run("cat /etc/dut-release"))
}

// TestFlashABootBRebootCycle is the main path on a real boot: flash A and
// prove A from the DUT's console, flash B and prove B, reboot from the shell
// and come back, power-cycle and come back.
func TestFlashABootBRebootCycle(t *testing.T) {
	t.Parallel()
	a, b := image(t, qemuimage.DUT("1.0.0")+".zst"), image(t, qemuimage.DUT("2.0.0")+".zst")
	dut := harness.Acquire(t)
	dut.FlashImage(a)
	dut.PowerOn()
	require.Equal(t, "1.0.0", release(t, dut.Login()))

	dut.FlashImage(b)
	dut.PowerOn()
	sh := dut.Login()
	require.Equal(t, "2.0.0", release(t, sh), "the DUT must boot the image flashed last")

	dut.Console().SendLine("reboot")
	dut.Console().ExpectString("reboot: Restarting system")
	require.Equal(t, "2.0.0", release(t, dut.Login()), "back after a reboot from the shell")

	dut.PowerCycle()
	require.Equal(t, "2.0.0", release(t, dut.Login()), "back after a power cycle")
}

// failing runs body against a fake test and returns it once it has ended.
func failing(t *testing.T, body func(tb testing.TB)) *faketb.TB {
	t.Helper()
	f := faketb.New(t)
	start := time.Now()
	f.Run(body)
	t.Logf("the fake test ended after %s: %s", time.Since(start).Round(time.Millisecond), f.Message())
	return f
}

func TestBlankImageIsAnInfrastructureFailure(t *testing.T) {
	t.Parallel()
	good, img := image(t, qemuimage.DUT("1.0.0")+".zst"), image(t, qemuimage.Blank)
	f := failing(t, func(tb testing.TB) {
		dut := harness.Acquire(tb)
		// A good image first: the blank one (all hole, no bmap) must really
		// replace it, byte for byte.
		dut.FlashImage(good)
		dut.FlashImage(img)
		dut.PowerOn()
		dut.Login()
	})
	require.True(t, f.Failed())
	assert.Regexp(t, `No bootable device|Boot failed: not a bootable disk`, f.Message(), "the firmware's own words")
	v, _ := f.AttrValue(harness.AttrFailure)
	assert.Equal(t, "infrastructure", v)
}

func TestKernelPanicIsCaughtByTheWatcher(t *testing.T) {
	t.Parallel()
	img := image(t, qemuimage.Panic)
	f := failing(t, func(tb testing.TB) {
		dut := harness.Acquire(tb)
		dut.FlashImage(img)
		dut.PowerOn()
		dut.Login()
	})
	require.True(t, f.Failed())
	assert.Contains(t, f.Message(), "Kernel panic - not syncing")
	v, _ := f.AttrValue(harness.AttrFailure)
	assert.Empty(t, v, "a kernel panic is the product's failure")
}

func TestHangingBootIsCaughtByTheDeadline(t *testing.T) {
	t.Parallel()
	img := image(t, qemuimage.Hang)
	f := failing(t, func(tb testing.TB) {
		dut := harness.Acquire(tb, harness.WithBootTimeout(20*time.Second))
		dut.FlashImage(img)
		dut.PowerOn()
		// Firmware and boot loader take from 2 s to over 20 s on a loaded
		// machine (QEMU without KVM): the 20 s Login gets starts once the
		// initramfs runs, and the hang comes after it.
		dut.Console().Within(3 * time.Minute).ExpectString("stage1: Jumpstarter QEMU DUT initramfs")
		dut.Login()
	})
	require.True(t, f.Failed())
	assert.Contains(t, f.Message(), "timed out")
	assert.Contains(t, f.Message(), "DUT_BOOT_TIMEOUT=20s", "the failure names the setting that bounded it")
	assert.Contains(t, f.Message(), "switching to the root file system", "the failure shows where the boot stopped")
}

func TestKilledQEMUFailsTheTestPromptly(t *testing.T) {
	t.Parallel()
	img := image(t, qemuimage.DUT("1.0.0")+".zst")
	var pid int
	var killed time.Time
	f := failing(t, func(tb testing.TB) {
		dut := harness.Acquire(tb)
		dut.FlashImage(img)
		dut.PowerOn()
		sh := dut.Login()
		pid = qemuPID(t, dut.Device())
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
		killed = time.Now()
		sh.Run("sleep 600") // fails at once: the console reports QEMU's death
	})
	require.True(t, f.Failed())
	assert.Less(t, time.Since(killed), 60*time.Second, "promptly, not at a timeout")
	assert.Contains(t, f.Message(), "qemu-system-x86_64", "the command line to reproduce")
	v, _ := f.AttrValue(harness.AttrFailure)
	assert.Equal(t, "infrastructure", v)
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	assert.True(t, os.IsNotExist(err), "QEMU %d is gone", pid)
}
