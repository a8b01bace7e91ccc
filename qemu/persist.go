package qemu

import "github.com/jumpstarter-dev/jumpstarter-go/harness/driver"

var _ driver.Ephemeral = (*Device)(nil)

// Ephemeral says that the device's state lives only in the process that
// discovered it (see [driver.Ephemeral]): its QEMU process is killed when
// that process exits, and its storage multiplexer and console end with it;
// the next process finds it powered off with the multiplexer at off. Only
// its disk file is shared.
func (d *Device) Ephemeral() string { return ephemeral(d.name) }

func ephemeral(name string) string {
	return name + " is a QEMU virtual machine run by the process that opened it: QEMU is killed when that process exits, and its storage mux and console end with it (only its disk file outlives it)"
}
