package remote_test

import (
	"context"
	"testing"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver/drivertest"
	"github.com/jumpstarter-dev/jumpstarter-go/remote"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
)

// simBoot is what sim-0 prints at every power-on with image 1.0.0: the
// whole boot, so that a byte the network loses is noticed.
var simBoot = []string{sim.BootOutput("sim-0")}

// TestDriverContractOverAUnixSocket runs the driver contract against a
// remote device backed by a simulated one, through an exporter: every
// capability, sentinel and deadline must come through the network as the
// sim gives them locally, checked against the sim's own state on the
// exporter's side.
func TestDriverContractOverAUnixSocket(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1)
	truth := func(dev driver.Device) *sim.Device { return l.sims.device("sim-0") }
	drivertest.TestDevice(t, func(t *testing.T) driver.Device { return l.open(t, "sim-0") },
		drivertest.Console(drivertest.ConsoleSpec{
			Boot:   simBoot,
			Send:   "root\r",
			Reply:  []string{"root\r\n", "root@sim-0"},
			Rescue: []string{"rescue> "},
		}),
		drivertest.PowerState(func(dev driver.Device) bool {
			s, err := dev.(*remote.Device).PowerState(context.Background())
			remoteOn := s == dutv1.PowerState_POWER_STATE_ON || s == dutv1.PowerState_POWER_STATE_RESCUE
			return err == nil && remoteOn && truth(dev).PowerState() != sim.PowerStateOff
		}),
		drivertest.HostStorageWhilePowered(),
		drivertest.ConfigKey("tags", "drivertest,remote"),
		drivertest.PinLevel(func(dev driver.Device, pin string) driver.PinLevel { return truth(dev).Pin(pin) }),
		drivertest.Unplug(func(dev driver.Device) { truth(dev).Unplug() }),
	)
}
