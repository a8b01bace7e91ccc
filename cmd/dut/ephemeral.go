package main

import (
	"fmt"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

// ephemeral returns why d's state ends with this process (see
// driver.Ephemeral), or "" when it does not.
func ephemeral(d driver.Device) string {
	if e, ok := d.(driver.Ephemeral); ok {
		return e.Ephemeral()
	}
	return ""
}

// noteEphemeral tells the user on stderr, after a step that changed d's
// state (or before one that cannot work), that the change ends with this
// dut process when d is an ephemeral device (the sim and qemu drivers');
// then is what becomes of the step,
// e.g. "it is powered off again when this dut command exits". Until an
// exporter (dut serve) can keep such devices alive between commands, this
// is the honest answer.
func (a *app) noteEphemeral(d driver.Device, then string) {
	if why := ephemeral(d); why != "" {
		fmt.Fprintf(a.stderr, "dut: note: %s, so %s\n", why, then)
	}
}
