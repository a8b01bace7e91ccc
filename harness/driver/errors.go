package driver

import "errors"

// ErrBadConfig is wrapped by a driver's errors about its own configuration
// (a malformed DUT_SIM_DEVICES, QEMU_MEMORY, DUTLINK_TRANSPORT, ...): the
// user's mistake, which the harness reports as a configuration failure,
// not as the lab's.
var ErrBadConfig = errors.New("bad driver configuration")
