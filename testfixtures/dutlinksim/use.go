package dutlinksim

import (
	"testing"

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
)

// Use points the registered dutlink driver at the lab for the rest of t:
// it sets the DUTLINK_* variables with t.Setenv and installs the lab's USB
// controllers with dutlink.SetUSBOpener, undone at cleanup. Like t.Setenv
// it cannot be used in parallel tests.
func (l *Lab) Use(t testing.TB) {
	t.Helper()
	for k, v := range l.Env() {
		t.Setenv(k, v)
	}
	restore := dutlink.SetUSBOpener(l.OpenUSB)
	t.Cleanup(restore)
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
