package sim

import "github.com/jumpstarter-dev/jumpstarter-go/harness/driver"

var _ driver.Ephemeral = (*Device)(nil)

// Ephemeral says that the device's state lives only in the process that
// discovered it (see [driver.Ephemeral]): its power, storage multiplexer,
// pins, console and config are lost when that process exits, and the next
// process finds it powered off with the multiplexer at off. Only its disk
// file is shared.
func (d *Device) Ephemeral() string { return ephemeral(d.Name()) }

func ephemeral(name string) string {
	return name + " is a simulated device: its power, storage mux, pins, console and config live only in the process that opened it (only its disk file outlives it)"
}
