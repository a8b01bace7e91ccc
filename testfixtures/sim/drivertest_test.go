package sim_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver/drivertest"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/simimage"
)

// simBoot is what sim-0 prints, in order, at every power-on with an image
// on its disk: every byte from the firmware to the login prompt.
var simBoot = []string{
	"SimBIOS 1.0 (sim-0)\r\nDRAM:  512 MiB\r\nBoot device: mmc0\r\nLoading kernel from mmc0 ...\r\nStarting kernel ...\r\n\r\n" +
		"[    0.000000] Booting Linux on physical CPU 0x0\r\n" +
		"[    0.000000] Linux version 6.1.0-sim (1.0.0) (gcc (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT\r\n" +
		"[    0.000000] Machine model: Jumpstarter Sim Board\r\n" +
		"[    0.000000] Kernel command line: console=ttyS0,115200 root=/dev/mmcblk0p1 rootwait\r\n" +
		"[    0.612345] mmc0: new high speed SDHC card at address 0001\r\n" +
		"[    1.234567] EXT4-fs (mmcblk0p1): mounted filesystem with ordered data mode. Quota mode: none.\r\n" +
		"[    1.345678] Run /sbin/init as init process\r\n" +
		"[    1.456789] systemd[1]: Hostname set to <sim-0>.\r\n\r\n" +
		"Welcome to Jumpstarter Sim Linux 1.0.0!\r\n\r\n" +
		"[  OK  ] Reached target multi-user.target - Multi-User System.\r\n\r\n" +
		"Jumpstarter Sim Linux 1.0.0 sim-0 ttyS0\r\n\r\nsim-0 login: ",
}

// openSim returns a fresh sim-0 with image 1.0.0 on its disk, closed when
// the test ends.
func openSim(t *testing.T) driver.Device {
	t.Helper()
	disk := filepath.Join(t.TempDir(), "sim-0.disk")
	if err := simimage.WriteFile(disk, simimage.Spec{Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	d, err := sim.NewDevice("sim-0", "SIM00000", []string{"sim", "virtual", "even"}, disk, sim.Options{BootTime: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// simOptions are the contract options of the simulated DUT.
func simOptions() []drivertest.Option {
	return []drivertest.Option{
		drivertest.Console(drivertest.ConsoleSpec{
			Boot:   simBoot,
			Send:   "root\r",
			Reply:  []string{"root\r\n", "root@sim-0"},
			Rescue: []string{"rescue> "},
		}),
		drivertest.PowerState(func(dev driver.Device) bool { return dev.(*sim.Device).PowerState() == sim.PowerStateOn }),
		// The simulated mux follows no power rule (see the package doc).
		drivertest.HostStorageWhilePowered(),
		drivertest.ConfigKey("tags", "drivertest,sim"),
		drivertest.PinLevel(func(dev driver.Device, pin string) driver.PinLevel { return dev.(*sim.Device).Pin(pin) }),
		drivertest.Unplug(func(dev driver.Device) { dev.(*sim.Device).Unplug() }),
	}
}

func TestDriverContract(t *testing.T) {
	drivertest.TestDevice(t, openSim, simOptions()...)
}
