package qemu

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver/drivertest"
)

// qemuPowerState reports a QEMU device's power: whether its QEMU runs.
func qemuPowerState(dev driver.Device) bool { return dev.(*Device).PoweredOn() }

// TestDriverContractFakeQEMU runs the driver contract against devices whose
// QEMU is the fake one (no guest): power, reset, storage, console and the
// sentinels, without QEMU installed.
func TestDriverContractFakeQEMU(t *testing.T) {
	open := func(t *testing.T) driver.Device {
		d, err := NewDevice("qemu-fake", filepath.Join(t.TempDir(), "qemu-fake.disk"), fakeOptions(t, "ok"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		return d
	}
	drivertest.TestDevice(t, open,
		drivertest.Console(drivertest.ConsoleSpec{
			Boot:  []string{"fake boot\r\nfake login: "},
			Reset: []string{"fake reset\r\nfake login: "},
			Send:  "drivertest\n",
			Reply: []string{"drivertest"},
		}),
		drivertest.PowerState(qemuPowerState),
	)
}

// TestDriverContractRealQEMU runs the driver contract against real VMs
// booting the reference image dut-1.0.0 (see needImages).
func TestDriverContractRealQEMU(t *testing.T) {
	images := needImages(t)
	open := func(t *testing.T) driver.Device {
		disk := filepath.Join(t.TempDir(), "qemu-contract.disk")
		copyFile(t, filepath.Join(images, "dut-1.0.0.img"), disk)
		d, err := NewDevice("qemu-contract", disk, Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		return d
	}
	drivertest.TestDevice(t, open,
		drivertest.Console(drivertest.ConsoleSpec{
			Boot: []string{
				"SeaBIOS (version ", "Booting from Hard Disk...\r\n", "SYSLINUX 6.04 ",
				"stage1: switching to the root file system on /dev/vda2 (release 1.0.0)\r\n\r\nJumpstarter QEMU DUT 1.0.0\r\n",
				"dut login: ",
			},
			Send:  "root\n",
			Reply: []string{"root\r\n", "# "},
		}),
		drivertest.PowerState(qemuPowerState),
		drivertest.TimeoutScale(6), // a boot takes 4-8 s, a reset up to 17 s, under TCG on 2 busy cores
	)
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
