package dutlink

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// newPTY returns a pseudo-terminal's master and the path of its slave.
func newPTY(t *testing.T) (*os.File, string) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	require.NoError(t, unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	require.NoError(t, err)
	return m, fmt.Sprintf("/dev/pts/%d", n)
}

// The PortOpener contract: Close ends a pending Read. Here another process
// (cat, which takes no lock) reads the same tty, so the bytes a poll
// announces are often gone by the time the read runs: a port that reads a
// blocking descriptor after select(2), and whose Close waits for that read
// (go.bug.st/serial 1.8), hangs there. Each Close must return at once.
func TestPortCloseEndsAPendingReadWhileAnotherProcessReads(t *testing.T) {
	if _, err := exec.LookPath("cat"); err != nil {
		t.Skip("no cat")
	}
	master, slave := newPTY(t)
	for i := range 300 {
		p, err := openTTY(slave)
		require.NoError(t, err)
		thief := exec.Command("cat", slave)
		require.NoError(t, thief.Start())
		read := make(chan error, 1)
		go func() {
			buf := make([]byte, 64)
			for {
				if _, err := p.Read(buf); err != nil {
					read <- err
					return
				}
			}
		}()
		for range 50 {
			_, _ = master.Write([]byte("x"))
		}
		closed := make(chan error, 1)
		go func() { closed <- p.Close() }()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: Close did not return within 5 s while cat read the tty", i)
		}
		select {
		case err := <-read:
			require.Error(t, err, "round %d", i)
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: the pending Read did not end within 5 s of Close", i)
		}
		_ = thief.Process.Kill()
		_ = thief.Wait()
	}
}

// ttyUsers finds the process that holds the tty open.
func TestTTYUsersNamesAnotherReader(t *testing.T) {
	_, slave := newPTY(t)
	cat := exec.Command("cat", slave)
	require.NoError(t, cat.Start())
	t.Cleanup(func() { _ = cat.Process.Kill(); _ = cat.Wait() })
	want := fmt.Sprintf("pid %d (cat)", cat.Process.Pid)
	require.Eventually(t, func() bool {
		for _, u := range ttyUsers(slave) {
			if u == want {
				return true
			}
		}
		return false
	}, 5*time.Second, 10*time.Millisecond, "ttyUsers(%s) = %v", slave, ttyUsers(slave))
	require.Contains(t, ttyUsersHint(slave), want)
}

// A board that stops reading its tty makes a write fail after
// writeTimeout, instead of hanging; and a second user of the tty waits for
// the first only as long as its context lets it.
func TestTTYWriteToABoardThatStoppedReading(t *testing.T) {
	_, slave := newPTY(t) // nobody reads the master: the board has stopped
	m := newTTYMux(slave, openTTY)
	gen, err := m.acquire(t.Context())
	require.NoError(t, err)
	defer m.release(gen)
	start := time.Now()
	_, err = m.write(gen, make([]byte, 8<<20))
	require.ErrorIs(t, err, ErrGone)
	require.Contains(t, err.Error(), "stopped reading")
	require.Less(t, time.Since(start), writeTimeout+5*time.Second)

	require.NoError(t, m.lockEx(t.Context()))
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, m.lockEx(ctx), context.DeadlineExceeded)
	m.unlockEx()
}
