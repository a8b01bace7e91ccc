package remote_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver/drivertest"
	"github.com/jumpstarter-dev/jumpstarter-go/qemu"
	"github.com/jumpstarter-dev/jumpstarter-go/remote"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/exporter"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/qemuimage"
)

// qemuRecorder is a qemu driver that remembers the devices the exporter
// opened, so a test can see the truth behind the network: whether the VM's
// QEMU runs.
type qemuRecorder struct {
	*qemu.Driver
	mu     sync.Mutex
	opened map[string]*qemu.Device
}

func (r *qemuRecorder) Open(ctx context.Context, info driver.Info) (driver.Device, error) {
	dev, err := r.Driver.Open(ctx, info)
	if err == nil {
		r.mu.Lock()
		r.opened[info.Name] = dev.(*qemu.Device)
		r.mu.Unlock()
	}
	return dev, err
}

// device is the device the exporter opened last under name.
func (r *qemuRecorder) device(name string) *qemu.Device {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opened[name]
}

// needQEMUImage returns the path of the QEMU DUT's image of version, or
// skips the test (fails it when CI=true) when QEMU or the image is
// missing, as the qemu package's integration tests do.
func needQEMUImage(t *testing.T, version string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("qemu: integration test skipped in -short mode")
	}
	missing := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("CI") == "true" {
			t.Fatalf("qemu: %s (CI=true, so this is a failure, not a skip)", msg)
		}
		t.Skipf("qemu: %s", msg)
	}
	if _, err := exec.LookPath(qemu.DefaultBinary); err != nil {
		missing("%v (testfixtures/qemuimage/deps.sh installs it)", err)
	}
	img, err := qemuimage.Path(qemuimage.DUT(version))
	if err != nil {
		missing("%v", err) // says to run make qemu-images or set DUT_QEMU_IMAGES
	}
	return img
}

// TestDriverContractOverAUnixSocketRealQEMU runs the driver contract
// against a remote device backed by a real QEMU VM booting the reference
// image dut-1.0.0, through an exporter in this process: the same console
// spec and options as the qemu package's own contract, with the power
// checked both through the network (the exporter's power state) and on
// the exporter's side (the VM's QEMU runs).
//
// Not parallel: the contract's deadlines are scaled for TCG on two busy
// cores, and the sim tests of this package wait until it is done.
func TestDriverContractOverAUnixSocketRealQEMU(t *testing.T) {
	img := needQEMUImage(t, "1.0.0")
	dir := t.TempDir()
	copyDisk(t, img, filepath.Join(dir, "qemu-0.disk"))
	vms := &qemuRecorder{Driver: qemu.New(qemu.Options{Devices: 1, Dir: dir}), opened: map[string]*qemu.Device{}}
	// The lab's exporter, serving the VM instead of sims.
	l := newLab(t, 0, func(c *exporter.Config) { c.Drivers = []driver.Driver{vms} })
	start := time.Now()
	t.Cleanup(func() { t.Logf("the remote QEMU contract took %s", time.Since(start).Round(time.Millisecond)) })
	drivertest.TestDevice(t, func(t *testing.T) driver.Device { return l.open(t, "qemu-0") },
		drivertest.Console(drivertest.ConsoleSpec{
			Boot: []string{
				"SeaBIOS (version ", "Booting from Hard Disk...\r\n", "SYSLINUX 6.04 ",
				"stage1: switching to the root file system on /dev/vda2 (release 1.0.0)\r\n\r\n" + qemuimage.Banner("1.0.0") + "\r\n",
				qemuimage.LoginPrompt,
			},
			Send:  "root\n",
			Reply: []string{"root\r\n", "# "},
		}),
		drivertest.PowerState(func(dev driver.Device) bool {
			s, err := dev.(*remote.Device).PowerState(context.Background())
			vm := vms.device("qemu-0")
			return err == nil && s == dutv1.PowerState_POWER_STATE_ON && vm != nil && vm.PoweredOn()
		}),
		drivertest.TimeoutScale(6), // a boot takes 4-8 s, a reset up to 17 s, under TCG on 2 busy cores
	)
}

// copyDisk copies an image to a disk file, so the build output stays as
// built (the VM's root file system is writable).
func copyDisk(t *testing.T, src, dst string) {
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
