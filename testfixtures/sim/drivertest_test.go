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
var simBoot = []string{sim.BootOutput("sim-0")}

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
