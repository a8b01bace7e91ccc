package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
)

// openPTY opens a pseudo-terminal: the master is the keyboard and screen,
// the slave is the terminal dut sees. Both are closed at cleanup.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	fd := int(m.Fd())
	require.NoError(t, unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	require.NoError(t, err)
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY|syscall.O_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return m, s
}

func termios(t *testing.T, f *os.File) *unix.Termios {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	require.NoError(t, err)
	return tio
}

// TestConsoleRawTerminal: on a terminal the console runs in raw mode (every
// key, Ctrl-C included, goes to the DUT as it is typed) and the terminal is
// restored when the console ends, by the exit key or otherwise.
func TestConsoleRawTerminal(t *testing.T) {
	lab := env(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Serial: "1a2b3c4d", Config: map[string]string{"name": "bench-1"}})
	require.Equal(t, exitOK, dut(t, "power", "on", "bench-1").code)
	master, slave := openPTY(t)
	before := termios(t, slave)
	require.NotZero(t, before.Lflag&unix.ICANON, "a fresh terminal is in canonical mode")

	con := start(t, t.Context(), slave, "console", "bench-1")
	con.stderr.waitFor(t, "press Ctrl-] to exit\r\n")
	raw := termios(t, slave)
	assert.Zero(t, raw.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG), "raw mode: no line editing, echo or signals")

	// No Enter needed: in raw mode each key reaches the DUT as typed.
	_, err := master.Write([]byte("hi\x03"))
	require.NoError(t, err)
	b.DUTPrint("typed\r\n")
	con.stdout.waitFor(t, "typed\r\n")
	_, err = master.Write([]byte("there\r"))
	require.NoError(t, err)
	con.stdout.waitFor(t, "echo: hithere\r\n")
	_, err = master.Write([]byte{exitKey})
	require.NoError(t, err)
	require.Equal(t, exitOK, con.wait(t))
	assert.Contains(t, string(b.DUTInput()), "hi\x03there\r")

	after := termios(t, slave)
	assert.Equal(t, before.Lflag, after.Lflag, "terminal restored")
	assert.Equal(t, before.Iflag, after.Iflag)
	assert.Equal(t, before.Oflag, after.Oflag)
	assert.Contains(t, con.stderr.String(), "\ndut: console of bench-1 closed\n")

	// Restored also when the console ends on its own.
	con = start(t, t.Context(), slave, "console", "bench-1")
	con.stderr.waitFor(t, "press Ctrl-] to exit\r\n")
	b.Unplug()
	assert.Equal(t, exitFailure, con.wait(t))
	assert.Equal(t, before.Lflag, termios(t, slave).Lflag, "terminal restored after the board vanished")
}

// TestFlashProgressBarOnTerminal: on a terminal, flash redraws one bar in
// place instead of printing lines.
func TestFlashProgressBarOnTerminal(t *testing.T) {
	env(t)
	master, slave := openPTY(t)
	require.NoError(t, unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 100}))
	screen := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(master) // until the slave is closed (EIO)
		screen <- string(b)
	}()
	img := writeImage(t, 2<<20)
	var out strings.Builder
	code := runWith(t.Context(), drivers(t), []string{"flash", "sim-0", img}, strings.NewReader(""), &out, slave)
	require.Equal(t, exitOK, code)
	require.NoError(t, slave.Close())
	got := <-screen
	t.Logf("%q", got)
	assert.Contains(t, got, "\r[========================================] 100% 2.0 MiB / 2.0 MiB, ")
	assert.Contains(t, got, "elapsed\x1b[K\r\n")
	assert.NotContains(t, got, "flash: ", "no plain lines on a terminal")
	assert.Contains(t, out.String(), "  bytes    2097152 (2.0 MiB)")
}
