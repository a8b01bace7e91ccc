package dutlink

import (
	"errors"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

// Errors callers can tell apart with errors.Is. ErrGone, ErrBusy,
// ErrBadConfig and ErrStorageNotOnHost also match the shared sentinels of
// package driver (driver.ErrGone, driver.ErrBusy, driver.ErrInvalidArgument,
// driver.ErrStorageNotOnHost), as every driver's errors do.
var (
	// ErrGone is wrapped when the board vanished: its tty closed, a USB
	// transfer found no device, its sysfs entry disappeared.
	ErrGone = driver.Refine(driver.ErrGone, "DUTlink board gone")
	// ErrBusy is wrapped when another process holds the board's tty or
	// vendor interface.
	ErrBusy = driver.Refine(driver.ErrBusy, "DUTlink board busy")
	// ErrStall is wrapped when the board stalls a control request (an
	// unknown request; firmware that lacks a feature).
	ErrStall = errors.New("control request stalled")
	// ErrNoUSB is wrapped when the USB transport is wanted but the build
	// has no USB access (CGO_ENABLED=0 or the nolibusb tag) or the
	// firmware has no vendor interface.
	ErrNoUSB = errors.New("USB control transport not available")
	// ErrReply is wrapped when the board's shell answers something other
	// than the expected reply.
	ErrReply = errors.New("unexpected reply from the DUTlink shell")
	// ErrBadConfig is wrapped when a config key or value cannot be stored
	// by the firmware.
	ErrBadConfig = driver.Refine(driver.ErrInvalidArgument, "invalid DUTlink config value")
	// ErrNoDisk is wrapped when the board's storage did not appear on the
	// host in time.
	ErrNoDisk = errors.New("DUTlink storage disk not found")
	// ErrAmbiguousDisk is wrapped when more than one disk could be the
	// board's storage.
	ErrAmbiguousDisk = errors.New("more than one disk could be the DUTlink storage")
	// ErrUnprovenDisk is wrapped when nothing proves which disk is the
	// board's storage: the board is on a root port and has no storage
	// filter of its own. Nothing is written; the error says how to name
	// the board's stick.
	ErrUnprovenDisk = errors.New("the DUTlink's storage disk cannot be identified")
	// ErrNotBoardDisk is wrapped by CheckTarget when a file is not the
	// board's storage disk.
	ErrNotBoardDisk = errors.New("target is not this DUTlink's storage disk")
	// ErrStorageNotOnHost is wrapped by BlockTarget and CheckTarget while
	// the storage is not connected to the host.
	ErrStorageNotOnHost = driver.Refine(driver.ErrStorageNotOnHost, "DUTlink storage not connected to the host")
	// ErrNoConsole is wrapped when the out-of-band USB console named by
	// usb_console cannot be found.
	ErrNoConsole = errors.New("DUTlink console not found")
	// ErrDFU is wrapped for a board in DFU (firmware update) mode.
	ErrDFU = errors.New("DUTlink board in DFU mode")
)
