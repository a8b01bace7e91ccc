package qemu

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A stand-in for one QEMU process and its console socket.
type fakeVM struct {
	v    *vm
	host net.Conn // the stream's end
	vmc  net.Conn // QEMU's end
}

func newFakeVM() *fakeVM {
	host, vmc := net.Pipe()
	return &fakeVM{v: &vm{dev: "t", exited: make(chan struct{})}, host: host, vmc: vmc}
}

// exit ends the process: its socket closes, then the verdict is out.
func (f *fakeVM) exit(err error) {
	_ = f.vmc.Close()
	f.v.exitErr = err
	close(f.v.exited)
}

// readResult is what a background Read returned.
type readResult struct {
	s   string
	err error
}

func readAsync(s *consoleStream) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		p := make([]byte, 100)
		n, err := s.Read(p)
		ch <- readResult{string(p[:n]), err}
	}()
	return ch
}

func requireBlocked(t *testing.T, ch <-chan readResult) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("Read returned %q, %v; want it to block", r.s, r.err)
	case <-time.After(50 * time.Millisecond):
	}
}

func requireRead(t *testing.T, ch <-chan readResult, want string) {
	t.Helper()
	select {
	case r := <-ch:
		require.NoError(t, r.err)
		require.Equal(t, want, r.s)
	case <-time.After(5 * time.Second):
		t.Fatalf("Read still blocks; want %q", want)
	}
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	go func() { _, _ = c.Write([]byte(s)) }()
}

func TestConsoleStreamSwitchesConnections(t *testing.T) {
	d := &Device{name: "t"}
	s := newConsoleStream(d)
	d.con = s

	r := readAsync(s)
	requireBlocked(t, r) // powered off: nothing to read

	vm1 := newFakeVM()
	s.attach(vm1.v, vm1.host)
	write(t, vm1.vmc, "boot 1")
	requireRead(t, r, "boot 1")

	// QEMU's socket ends before its exit is known: Read waits for the
	// verdict, then, for a power-off, drops the connection and blocks.
	_ = vm1.vmc.Close()
	r = readAsync(s)
	requireBlocked(t, r)
	vm1.v.exitErr = nil
	close(vm1.v.exited)
	requireBlocked(t, r)

	vm2 := newFakeVM()
	s.attach(vm2.v, vm2.host)
	write(t, vm2.vmc, "boot 2")
	requireRead(t, r, "boot 2")

	// Writes go to the running VM.
	got := make(chan string, 1)
	go func() {
		p := make([]byte, 10)
		n, _ := vm2.vmc.Read(p)
		got <- string(p[:n])
	}()
	n, err := s.Write([]byte("root\n"))
	require.NoError(t, err)
	require.Equal(t, 5, n)
	require.Equal(t, "root\n", <-got)

	vm2.exit(nil)
	n, err = s.Write([]byte("lost\n"))
	require.NoError(t, err, "writes while off are dropped")
	require.Equal(t, 5, n)

	require.NoError(t, s.Close())
	_, err = s.Read(make([]byte, 1))
	require.ErrorIs(t, err, os.ErrClosed)
	_, err = s.Write([]byte("x"))
	require.ErrorIs(t, err, os.ErrClosed)
	require.Nil(t, d.con, "Close detaches the console from the device")
	require.NoError(t, s.Close())
}

// An old VM's output that nobody read comes before the new VM's.
func TestConsoleStreamKeepsOrder(t *testing.T) {
	d := &Device{name: "t"}
	s := newConsoleStream(d)
	vm1, vm2 := newFakeVM(), newFakeVM()
	s.attach(vm1.v, vm1.host)
	s.attach(vm2.v, vm2.host)
	write(t, vm2.vmc, "second")
	r := readAsync(s)
	requireBlocked(t, r)
	write(t, vm1.vmc, "first")
	requireRead(t, r, "first")
	vm1.exit(nil)
	requireRead(t, readAsync(s), "second")
}

func TestConsoleStreamCrash(t *testing.T) {
	d := &Device{name: "t"}
	s := newConsoleStream(d)
	vm1 := newFakeVM()
	s.attach(vm1.v, vm1.host)
	write(t, vm1.vmc, "last words")
	requireRead(t, readAsync(s), "last words")
	crash := &ExitError{Device: "t", Status: "killed by signal 9 (killed)", CommandLine: "qemu -S"}
	r := readAsync(s)
	requireBlocked(t, r)
	vm1.exit(crash)
	select {
	case res := <-r:
		require.ErrorIs(t, res.err, ErrExited)
		require.Same(t, crash, res.err)
	case <-time.After(5 * time.Second):
		t.Fatal("Read does not report the crash")
	}
	_, err := s.Read(make([]byte, 1))
	require.ErrorIs(t, err, ErrExited, "the error stays until the next power-on")
	_, err = s.Write([]byte("x"))
	require.ErrorIs(t, err, ErrExited)

	vm2 := newFakeVM()
	s.attach(vm2.v, vm2.host)
	write(t, vm2.vmc, "reborn")
	requireRead(t, readAsync(s), "reborn")
	require.NoError(t, s.Close())
}

func TestConsoleStreamCloseUnblocksRead(t *testing.T) {
	for _, withVM := range []bool{false, true} {
		d := &Device{name: "t"}
		s := newConsoleStream(d)
		if withVM {
			vm := newFakeVM()
			s.attach(vm.v, vm.host)
		}
		r := readAsync(s)
		requireBlocked(t, r)
		require.NoError(t, s.Close())
		select {
		case res := <-r:
			require.ErrorIs(t, res.err, os.ErrClosed)
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not end Read")
		}
	}
}

func TestConsoleStreamDetachAndClosedAttach(t *testing.T) {
	d := &Device{name: "t"}
	s := newConsoleStream(d)
	vm1 := newFakeVM()
	seg := s.attach(vm1.v, vm1.host)
	s.detach(seg)
	_, err := vm1.vmc.Write([]byte("x"))
	require.ErrorIs(t, err, io.ErrClosedPipe, "detach closes the connection")
	requireBlocked(t, readAsync(s))
	require.NoError(t, s.Close())
	vm2 := newFakeVM()
	require.Nil(t, s.attach(vm2.v, vm2.host))
	_, err = vm2.vmc.Write([]byte("x"))
	require.ErrorIs(t, err, io.ErrClosedPipe, "attach to a closed stream closes the connection")
}

func TestTailBuffer(t *testing.T) {
	var b tailBuffer
	assert.Equal(t, "", b.Tail())
	for i := range 100 {
		_, _ = b.Write([]byte("line " + itoa(i) + "\n"))
	}
	tail := b.Tail()
	assert.Equal(t, 20, len(splitLines(tail)))
	assert.Contains(t, tail, "line 80\n")
	assert.True(t, len(tail) < 2100)
	_, _ = b.Write(make([]byte, 100<<10))
	assert.LessOrEqual(t, len(b.buf), 2*stderrKeep)
	assert.LessOrEqual(t, len(b.Tail()), stderrBytes)
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := range len(s) {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

func TestExitErrorMessage(t *testing.T) {
	e := &ExitError{Device: "qemu-0", Status: "exit status 1", Starting: true, Stderr: "a\nb", CommandLine: "qemu -S"}
	assert.EqualError(t, e, "qemu qemu-0: QEMU exited unexpectedly (exit status 1) during power-on; QEMU's stderr (last lines):\n\t| a\n\t| b\nreproduce with: qemu -S")
	e = &ExitError{Device: "qemu-0", Status: "killed by signal 9 (killed)", CommandLine: "qemu -S"}
	assert.EqualError(t, e, "qemu qemu-0: QEMU exited unexpectedly (killed by signal 9 (killed)) while powered on; QEMU's stderr was empty\nreproduce with: qemu -S")
	assert.ErrorIs(t, e, ErrExited)
}

func TestKillStale(t *testing.T) {
	dir := t.TempDir()
	pidfile := filepath.Join(dir, "q.pid")
	disk := filepath.Join(dir, "q.disk")
	runDir, err := os.MkdirTemp(dir, runDirPrefix)
	require.NoError(t, err)

	// Not ours (the pid was reused by another program): left alone.
	other := startSleeper(t, "-pidfile", "/elsewhere.pid")
	require.NoError(t, os.WriteFile(pidfile, []byte(itoa(other.Process.Pid)+"\n"), 0o644))
	require.NoError(t, killStale(t.Context(), pidfile, disk))
	assert.False(t, procGone(other.Process.Pid))
	assert.NoFileExists(t, pidfile)

	// Ours by its pid file or its disk: killed, runtime directory removed.
	for _, args := range [][]string{
		{"-pidfile", pidfile, "-qmp", "unix:" + filepath.Join(runDir, "qmp") + ",server=on,wait=off"},
		{"-drive", "file=" + disk + ",format=raw,if=virtio"},
	} {
		stale := startSleeper(t, args...)
		require.NoError(t, os.WriteFile(pidfile, []byte(itoa(stale.Process.Pid)+"\n"), 0o644))
		require.NoError(t, killStale(t.Context(), pidfile, disk))
		assert.True(t, procGone(stale.Process.Pid))
		assert.NoFileExists(t, pidfile)
	}
	assert.NoDirExists(t, runDir)

	// No pid file, garbage, a dead pid: nothing to do.
	require.NoError(t, killStale(t.Context(), pidfile, disk))
	require.NoError(t, os.WriteFile(pidfile, []byte("garbage"), 0o644))
	require.NoError(t, killStale(t.Context(), pidfile, disk))
	assert.NoFileExists(t, pidfile)
	require.NoError(t, os.WriteFile(pidfile, []byte("999999999"), 0o644))
	require.NoError(t, killStale(t.Context(), pidfile, disk))
	assert.NoFileExists(t, pidfile)
}

func TestSweepRunDirs(t *testing.T) {
	base := t.TempDir()
	old := time.Now().Add(-time.Hour)
	mk := func(name string, listen, keep bool, mtime time.Time) string {
		dir := filepath.Join(base, name)
		require.NoError(t, os.Mkdir(dir, 0o700))
		if listen {
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "qmp"), Net: "unix"})
			require.NoError(t, err)
			if keep {
				t.Cleanup(func() { _ = l.Close() })
			} else {
				l.SetUnlinkOnClose(false)
				require.NoError(t, l.Close())
			}
		}
		require.NoError(t, os.Chtimes(dir, mtime, mtime))
		return dir
	}
	dead := mk(runDirPrefix+"1", true, false, old)
	live := mk(runDirPrefix+"2", true, true, old)
	young := mk(runDirPrefix+"3", true, false, time.Now())
	other := mk("other-4", true, false, old)
	empty := mk(runDirPrefix+"5", false, false, old)
	sweepRunDirs(base, time.Minute)
	assert.NoDirExists(t, dead)
	assert.DirExists(t, live)
	assert.DirExists(t, young)
	assert.DirExists(t, other)
	assert.DirExists(t, empty, "without a socket it is not known to be ours")
}
