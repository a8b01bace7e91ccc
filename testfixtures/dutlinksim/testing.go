package dutlinksim

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
)

// Generation is a firmware version and the control transport a test asks
// for, with the transport the driver must end up using.
type Generation struct {
	Name      string                // subtest name
	Version   string                // firmware version of the simulated board
	Transport dutlink.TransportKind // what the driver is told to use
	Want      dutlink.TransportKind // what it must use
}

// Generations are the firmware/transport combinations every capability is
// driven through: 0.07 (shell only), 0.08 and 0.09 (USB, or the shell when
// forced).
var Generations = []Generation{
	{"fw0.07-auto-shell", "0.07", dutlink.TransportAuto, dutlink.TransportShell},
	{"fw0.08-auto-usb", "0.08", dutlink.TransportAuto, dutlink.TransportUSB},
	{"fw0.08-forced-shell", "0.08", dutlink.TransportShell, dutlink.TransportShell},
	{"fw0.09-auto-usb", "0.09", dutlink.TransportAuto, dutlink.TransportUSB},
	{"fw0.09-forced-shell", "0.09", dutlink.TransportShell, dutlink.TransportShell},
}

// ForeignOnSwitch plugs a stranger's disk (blank: see [Untouched]) that
// appears delay after b's mux next switches to the host, and returns a
// function that returns its file once it is plugged (failing t when it
// never is).
func (l *Lab) ForeignOnSwitch(t testing.TB, b *Board, id string, delay time.Duration) func() string {
	t.Helper()
	files := make(chan string, 1)
	b.OnStorage("host", func() {
		f, err := l.AddDiskAfter(id, 1<<20, delay)
		if err != nil {
			t.Errorf("foreign disk: %v", err)
		}
		files <- f
	})
	var file string
	return func() string {
		if file == "" {
			select {
			case file = <-files:
			case <-time.After(10 * time.Second):
				t.Fatalf("the stranger's disk %s was never plugged", id)
			}
		}
		return file
	}
}

// Untouched fails t when the disk file added by [Lab.AddDisk] holds any
// byte but its fill pattern: something wrote to it.
func Untouched(t testing.TB, file string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("dutlinksim: %v", err)
	}
	if bytes.ContainsFunc(data, func(r rune) bool { return r != diskFill }) {
		t.Errorf("%s was written", file)
	}
}

// DiskHas reports whether the disk file starts with img.
func DiskHas(t testing.TB, file string, img []byte) bool {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("dutlinksim: %v", err)
	}
	return bytes.HasPrefix(data, img)
}

// Zeroed reports whether the disk file holds only zero bytes, as a board's
// disk does before anything is written to it.
func Zeroed(t testing.TB, file string) bool {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("dutlinksim: %v", err)
	}
	return !bytes.ContainsFunc(data, func(r rune) bool { return r != 0 })
}

// NewTestLab returns a lab in a temporary directory of t, closed at
// cleanup.
func NewTestLab(t testing.TB) *Lab {
	t.Helper()
	l, err := NewLab(t.TempDir())
	if err != nil {
		t.Fatalf("dutlinksim: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// AddBoardT adds a board or fails the test.
func (l *Lab) AddBoardT(t testing.TB, o BoardOptions) *Board {
	t.Helper()
	b, err := l.AddBoard(o)
	if err != nil {
		t.Fatalf("dutlinksim: %v", err)
	}
	return b
}
