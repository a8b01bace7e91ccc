package dutlink_test

import (
	"sync"
	"testing"

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver/drivertest"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
)

// contractSerial is the serial number of the boards the contract runs on;
// their DUT prints "DUT <serial>: booted" at every power-on.
const contractSerial = "0000c0de"

// pinLetters and pinLevels translate between the driver's pins and levels
// and the simulator's letters.
var (
	pinLetters = map[string]string{"reset": "r", "a": "a", "b": "b", "c": "c", "d": "d"}
	pinLevels  = map[string]driver.PinLevel{"l": driver.PinLow, "h": driver.PinHigh, "z": driver.PinFloating}
)

// TestDriverContract runs the driver contract against a simulated board
// over each control transport, each check on a board in a lab of its own.
func TestDriverContract(t *testing.T) {
	for _, g := range []struct {
		name      string
		version   string
		transport dutlink.TransportKind
	}{
		{"usb", "0.09", dutlink.TransportUSB},
		{"shell", "0.09", dutlink.TransportShell},
		{"shell-fw0.07", "0.07", dutlink.TransportShell},
	} {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			boards := map[driver.Device]*dutlinksim.Board{}
			open := func(t *testing.T) driver.Device {
				lab := dutlinksim.NewTestLab(t)
				b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: g.version, Serial: contractSerial})
				o := lab.Options()
				o.Transport = g.transport
				d := openOnly(t, dutlink.New(o))
				mu.Lock()
				boards[d] = b
				mu.Unlock()
				return d
			}
			board := func(dev driver.Device) *dutlinksim.Board {
				mu.Lock()
				defer mu.Unlock()
				return boards[dev]
			}
			banner := "DUT " + contractSerial + ": booted\r\n"
			drivertest.TestDevice(t, open,
				drivertest.Console(drivertest.ConsoleSpec{
					Boot:   []string{banner},
					Send:   "drivertest contract\r",
					Reply:  []string{"echo: drivertest contract\r\n"},
					Rescue: []string{banner},
				}),
				drivertest.PowerState(func(dev driver.Device) bool { return board(dev).Power() }),
				drivertest.PinLevel(func(dev driver.Device, pin string) driver.PinLevel {
					return pinLevels[board(dev).Pin(pinLetters[pin])]
				}),
				drivertest.Unplug(func(dev driver.Device) { board(dev).Unplug() }),
				// The board switches its mux whatever the DUT's power (see
				// the package documentation).
				drivertest.HostStorageWhilePowered(),
				drivertest.ConfigKey("tags", "drivertest,lab-1"),
				drivertest.Skip("reset-reboots", "the simulator's DUT does not react to its reset pin"),
			)
		})
	}
}
