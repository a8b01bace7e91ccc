//go:build !linux

package dutlink

import (
	"errors"
	"fmt"
	"io/fs"

	"go.bug.st/serial"
	"golang.org/x/sys/unix"
)

// openTTY opens a tty with go.bug.st/serial where the Linux poller-based
// port (port_linux.go) is not built.
func openTTY(path string) (Port, error) {
	p, err := serial.Open(path, &serial.Mode{BaudRate: 115200, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
	if err != nil {
		var pe *serial.PortError
		if errors.As(err, &pe) {
			switch pe.Code() {
			case serial.PortBusy:
				return nil, fmt.Errorf("%w: %s is open in another program: %w", ErrBusy, path, err)
			case serial.PortNotFound:
				return nil, fmt.Errorf("%w: %s: %w", ErrGone, path, err)
			}
		}
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("%w: %s: %w", ErrGone, path, err)
		}
		return nil, err
	}
	// What the tty queued before this open is not ours to read.
	_ = p.ResetInputBuffer()
	return p, nil
}
