package dutlink

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openTTY opens the tty at path in raw mode at 115200 8N1, for exclusive
// use (TIOCEXCL), with what the tty queued before the open discarded.
//
// The descriptor is non-blocking and read through Go's poller, so Close
// ends a pending Read at once, even when another process that has the tty
// open (a stray cat) took the bytes the poller announced. go.bug.st/serial
// 1.8 reads a blocking descriptor after select(2) and its Close waits for
// that read, which then never returns: the hang this avoids.
func openTTY(path string) (Port, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, ttyOpenError(path, err)
	}
	if err := setRaw115200(fd); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("%s is not a serial port: %w", path, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TIOCEXCL, 0); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("%s: TIOCEXCL: %w", path, err)
	}
	_ = unix.IoctlSetInt(fd, unix.TCFLSH, unix.TCIFLUSH)
	return os.NewFile(uintptr(fd), path), nil
}

// setRaw115200 puts the tty in raw mode, 115200 baud, 8 data bits, no
// parity, one stop bit, no flow control, reads returning what is there.
func setRaw115200(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF | unix.IXANY
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CSTOPB | unix.CRTSCTS | unix.CBAUD
	t.Cflag |= unix.CS8 | unix.CREAD | unix.CLOCAL | unix.B115200
	t.Ispeed, t.Ospeed = unix.B115200, unix.B115200
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}
