//go:build !cgo || nolibusb

package dutlink

// defaultUSBOpener is nil in builds without libusb: the automatic
// transport choice falls back to the shell.
func defaultUSBOpener() USBOpener { return nil }
