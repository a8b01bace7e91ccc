package driver

import (
	"errors"
	"slices"
)

// The errors every driver's devices wrap, so that a caller (the harness, the
// dut command, an exporter serving a device over the network) tells the cases
// apart with [errors.Is] the same way for every driver. A driver may refine
// one with [Refine] to say more ("DUTlink board gone") while still matching
// it.
//
// Each has a stable [Code], so that an error that crossed a network maps back
// to the same value with [FromCode].
var (
	// ErrClosed: the device (or its console) was closed; nothing more can
	// be done with this value. Open the device again.
	ErrClosed = errors.New("device closed")
	// ErrPoweredOff: the operation needs the device powered on.
	ErrPoweredOff = errors.New("device is powered off")
	// ErrPoweredOn: the operation needs the device powered off (switching
	// its storage to the host, say, while the DUT could write to it).
	ErrPoweredOn = errors.New("device is powered on")
	// ErrStorageNotOnHost: the storage multiplexer does not connect the
	// storage to the host, so there is no block target.
	ErrStorageNotOnHost = errors.New("storage is not connected to the host")
	// ErrConsoleBusy: another console stream of the device is open.
	ErrConsoleBusy = errors.New("console is busy")
	// ErrGone: the device vanished (unplugged, its port closed, its
	// process killed) in the middle of the operation.
	ErrGone = errors.New("device gone")
	// ErrBusy: something outside this process holds the device or one of
	// its ports.
	ErrBusy = errors.New("device busy")
	// ErrInvalidArgument: the caller asked for something the device cannot
	// take (an unknown pin, a config value the board refuses): the
	// caller's mistake, not the lab's.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrUnsupported: the device lacks the capability ([As] wraps it).
	ErrUnsupported = errors.New("capability not supported by this device")
)

// sentinels are the errors with a [Code], in code order.
var sentinels = []struct {
	code string
	err  error
}{
	{"closed", ErrClosed},
	{"powered_off", ErrPoweredOff},
	{"powered_on", ErrPoweredOn},
	{"storage_not_on_host", ErrStorageNotOnHost},
	{"console_busy", ErrConsoleBusy},
	{"gone", ErrGone},
	{"busy", ErrBusy},
	{"invalid_argument", ErrInvalidArgument},
	{"unsupported", ErrUnsupported},
	{"bad_config", ErrBadConfig},
	{"no_device", ErrNoDevice},
}

// Code returns the stable code of the first shared sentinel err matches
// ("closed", "powered_off", "gone", ...), or "" when it matches none. The
// codes never change meaning; a network protocol carries them.
func Code(err error) string {
	if err == nil {
		return ""
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return s.code
		}
	}
	return ""
}

// FromCode returns the shared sentinel with the given [Code], or nil for an
// unknown code.
func FromCode(code string) error {
	i := slices.IndexFunc(sentinels, func(s struct {
		code string
		err  error
	}) bool {
		return s.code == code
	})
	if i < 0 {
		return nil
	}
	return sentinels[i].err
}

// Codes lists every code [Code] returns, in a fixed order.
func Codes() []string {
	out := make([]string, len(sentinels))
	for i, s := range sentinels {
		out[i] = s.code
	}
	return out
}

// Refine returns an error with its own text that also matches sentinel
// under [errors.Is]: a driver's more specific error ("DUTlink board gone")
// that callers of every driver recognise as sentinel ([ErrGone]).
func Refine(sentinel error, text string) error {
	return &refined{text: text, sentinel: sentinel}
}

type refined struct {
	text     string
	sentinel error
}

func (e *refined) Error() string { return e.text }

// Is reports whether target is the sentinel e refines.
func (e *refined) Is(target error) bool { return target == e.sentinel }

// ErrBadConfig is wrapped by a driver's errors about its own configuration
// (a malformed DUT_SIM_DEVICES, QEMU_MEMORY, DUTLINK_TRANSPORT, ...): the
// user's mistake, which the harness reports as a configuration failure,
// not as the lab's.
var ErrBadConfig = errors.New("bad driver configuration")
