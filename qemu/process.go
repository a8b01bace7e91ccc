package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrExited is wrapped by the errors that say QEMU exited when the driver
// did not stop it: it crashed, failed to start, or someone killed it. The
// errors are [*ExitError]s.
var ErrExited = errors.New("QEMU exited unexpectedly")

// ExitError says that a device's QEMU exited when the driver did not stop it
// (and the guest did not power itself off). It matches [ErrExited].
type ExitError struct {
	Device      string // the device's name
	Status      string // how it exited: "exit status 1", "killed by signal 9 (killed)"
	Starting    bool   // whether it exited during power-on, before the guest ran
	Stderr      string // the tail of QEMU's standard error
	CommandLine string // the QEMU command line, shell-quoted
}

func (e *ExitError) Error() string {
	when := "while powered on"
	if e.Starting {
		when = "during power-on"
	}
	return fmt.Sprintf("qemu %s: %v (%s) %s; %s", e.Device, ErrExited, e.Status, when, describeRun(e.Stderr, e.CommandLine))
}

// Is reports whether target is [ErrExited].
func (e *ExitError) Is(target error) bool { return target == ErrExited }

// describeRun renders QEMU's stderr tail and command line for errors.
func describeRun(stderr, cmdline string) string {
	var b strings.Builder
	if s := strings.TrimRight(stderr, "\r\n"); s == "" {
		b.WriteString("QEMU's stderr was empty")
	} else {
		b.WriteString("QEMU's stderr (last lines):\n\t| ")
		b.WriteString(strings.ReplaceAll(s, "\n", "\n\t| "))
	}
	b.WriteString("\nreproduce with: ")
	b.WriteString(cmdline)
	return b.String()
}

// stderrKeep is how much of QEMU's stderr a VM keeps; stderrLines and
// stderrBytes bound the tail errors show.
const (
	stderrKeep  = 16 << 10
	stderrLines = 20
	stderrBytes = 2 << 10
)

// tailBuffer keeps the last stderrKeep bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*stderrKeep {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-stderrKeep:]...)
	}
	return len(p), nil
}

// Tail returns the last lines written, at most stderrLines lines and about
// stderrBytes bytes.
func (t *tailBuffer) Tail() string {
	t.mu.Lock()
	b := bytes.TrimRight(t.buf, "\r\n")
	if len(b) > stderrBytes {
		b = b[len(b)-stderrBytes:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)-1 {
			b = b[i+1:]
		}
	}
	s := string(b)
	t.mu.Unlock()
	lines := strings.Split(s, "\n")
	if len(lines) > stderrLines {
		lines = lines[len(lines)-stderrLines:]
	}
	return strings.Join(lines, "\n")
}

// vm is one QEMU process, from its start to its exit.
type vm struct {
	dev     string // the device's name
	args    []string
	cmdline string
	runDir  string
	conSock string
	qmpSock string
	disk    string // the disk attached, or ""
	cmd     *exec.Cmd
	pid     int
	stderr  tailBuffer

	mu       sync.Mutex
	qmp      *qmpClient
	dead     bool // the process exited; no QMP client may be set any more
	stopping bool // the driver stops it: its exit is a power-off
	guestOff bool // the guest powered itself off
	running  bool // the guest was let run (cont)

	exited  chan struct{} // closed once the process exited and the fields below are set
	status  string        // how it exited
	exitErr error         // nil for a power-off; an *ExitError otherwise
}

// setQMP sets the VM's QMP client; it fails when the process exited.
func (v *vm) setQMP(q *qmpClient) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.dead {
		return false
	}
	v.qmp = q
	return true
}

func (v *vm) qmpClient() *qmpClient {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.qmp
}

func (v *vm) setStopping() {
	v.mu.Lock()
	v.stopping = true
	v.mu.Unlock()
}

func (v *vm) setRunning() {
	v.mu.Lock()
	v.running = true
	v.mu.Unlock()
}

// onEvent watches QMP events for the guest powering itself off.
func (v *vm) onEvent(e qmpEvent) {
	if e.Name != "SHUTDOWN" {
		return
	}
	var data struct {
		Guest  bool   `json:"guest"`
		Reason string `json:"reason"`
	}
	if json.Unmarshal(e.Data, &data) == nil && data.Guest && data.Reason != "guest-panic" {
		v.mu.Lock()
		v.guestOff = true
		v.mu.Unlock()
	}
}

// hasExited reports whether the process exited (and exitErr is set).
func (v *vm) hasExited() bool {
	select {
	case <-v.exited:
		return true
	default:
		return false
	}
}

// describe renders the VM's stderr tail and command line for errors.
func (v *vm) describe() string { return describeRun(v.stderr.Tail(), v.cmdline) }

// waitProcess waits for the process to exit, then classifies the exit and
// cleans up after it. It runs in its own goroutine per VM; exited is closed
// at its end.
func (v *vm) waitProcess(cleanup func(*vm)) {
	werr := v.cmd.Wait()
	v.mu.Lock()
	v.dead = true
	q := v.qmp
	v.mu.Unlock()
	if q != nil {
		// Let the QMP reader take the last events (SHUTDOWN): the socket
		// ends with the process.
		t := time.NewTimer(2 * time.Second)
		select {
		case <-q.done:
		case <-t.C:
		}
		t.Stop()
		_ = q.Close()
	}
	v.status = describeExit(v.cmd.ProcessState, werr)
	v.mu.Lock()
	normal := v.stopping || v.guestOff
	starting := !v.running
	v.mu.Unlock()
	if !normal {
		v.exitErr = &ExitError{Device: v.dev, Status: v.status, Starting: starting, Stderr: v.stderr.Tail(), CommandLine: v.cmdline}
	}
	_ = os.RemoveAll(v.runDir)
	cleanup(v)
	close(v.exited)
}

// describeExit says how a process ended.
func describeExit(st *os.ProcessState, err error) string {
	if st == nil {
		if err != nil {
			return err.Error()
		}
		return "unknown exit"
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Sprintf("killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
	}
	return fmt.Sprintf("exit status %d", st.ExitCode())
}

// killWait bounds the wait for a process to exit after SIGKILL.
const killWait = 10 * time.Second

// kill kills the process and waits for it to exit.
func (v *vm) kill() error {
	v.setStopping()
	_ = v.cmd.Process.Kill()
	t := time.NewTimer(killWait)
	defer t.Stop()
	select {
	case <-v.exited:
		return nil
	case <-t.C:
		return fmt.Errorf("qemu %s: QEMU (pid %d) did not exit within %v of SIGKILL", v.dev, v.pid, killWait)
	}
}

// argsConfig is what a QEMU command line is built from.
type argsConfig struct {
	Binary  string // the resolved binary
	Name    string
	Memory  int    // MiB
	PidFile string // QEMU writes its pid there
	QMP     string // the QMP socket
	Console string // the serial console socket
	Disk    string // the disk to attach, or "" for none
	Extra   []string
}

// buildArgs returns QEMU's argv.
func buildArgs(c argsConfig) []string {
	args := []string{c.Binary,
		"-name", optEscape(c.Name),
		"-S", // start paused: "cont" runs the guest
		"-nodefaults",
		// -nographic rather than -display none: with -nodefaults it adds
		// no devices, but it tells SeaBIOS to print on the serial port
		// ("No bootable device" on a blank disk).
		"-nographic",
	}
	if !hasAccel(c.Extra) {
		args = append(args, "-accel", "tcg")
	}
	args = append(args,
		"-m", strconv.Itoa(c.Memory),
		"-pidfile", c.PidFile,
		"-qmp", "unix:"+optEscape(c.QMP)+",server=on,wait=off",
		"-chardev", "socket,id=ser0,path="+optEscape(c.Console)+",server=on,wait=off",
		"-serial", "chardev:ser0",
	)
	if c.Disk != "" {
		args = append(args, "-drive", "file="+optEscape(c.Disk)+",format=raw,if=virtio")
	}
	return append(args, c.Extra...)
}

// hasAccel reports whether extra arguments choose the accelerator.
func hasAccel(extra []string) bool {
	for _, a := range extra {
		switch a {
		case "-accel", "--accel", "-enable-kvm", "--enable-kvm":
			return true
		}
	}
	return false
}

// runtimeBase is the directory the per-power-on runtime directories are
// made in: os.TempDir() unless its path is too long for unix sockets (107
// bytes), then /tmp.
func runtimeBase() string {
	base := os.TempDir()
	if len(base)+len("/jsq-4294967295/qmp") > 100 {
		base = "/tmp"
	}
	return base
}

// runDirPrefix starts the name of every runtime directory.
const runDirPrefix = "jsq-"

var (
	spawnOnce sync.Once
	spawnReq  chan func()
)

// spawn starts cmd from one OS thread that never exits: QEMU gets SIGKILL
// when its parent thread ends (Pdeathsig), which on Linux is the thread
// that forked it, not the process. So QEMU dies with the test process
// (killed, timed out, crashed) and never with a Go runtime thread.
func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReq = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for f := range spawnReq {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	spawnReq <- func() { errc <- cmd.Start() }
	return <-errc
}

// dialRetry connects to the unix socket at path, which QEMU creates soon
// after it starts, retrying with a short backoff until ctx ends or QEMU
// exits.
func dialRetry(ctx context.Context, v *vm, path, what string) (net.Conn, error) {
	var d net.Dialer
	backoff := time.Millisecond
	for {
		conn, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			return conn, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("waiting for QEMU's %s socket %s: %w", what, path, context.Cause(ctx))
		}
		t := time.NewTimer(backoff)
		select {
		case <-v.exited:
			t.Stop()
			if v.exitErr != nil {
				return nil, v.exitErr
			}
			return nil, fmt.Errorf("QEMU exited (%s) before its %s socket appeared", v.status, what)
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("waiting for QEMU's %s socket %s: %w", what, path, context.Cause(ctx))
		case <-t.C:
		}
		backoff = min(backoff*2, 50*time.Millisecond)
	}
}

// procArgs returns the command line of process pid, or ok=false when there
// is no such process or it is a zombie (whose command line is empty).
func procArgs(pid int) (args []string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil, false
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00"), true
}

// procGone reports whether process pid no longer runs (absent or zombie).
func procGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z' || s[i+2] == 'X'
	}
	return false
}

// ownsArgs reports whether a QEMU command line is one of this device's: it
// names the device's pid file or attaches its disk.
func ownsArgs(args []string, pidfile, disk string) bool {
	for i, a := range args {
		if a == "-pidfile" && i+1 < len(args) && args[i+1] == pidfile {
			return true
		}
		if v, ok := strings.CutPrefix(a, "file="); ok && optValue(v) == disk {
			return true
		}
	}
	return false
}

// optValue returns the first value of a QEMU option string, unescaped: the
// text up to the first comma that is not doubled.
func optValue(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				b.WriteByte(',')
				i++
				continue
			}
			break
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// staleRunDir returns the runtime directory a QEMU command line of this
// driver uses, or "".
func staleRunDir(args []string) string {
	for i, a := range args {
		if a != "-qmp" || i+1 >= len(args) {
			continue
		}
		p, ok := strings.CutPrefix(args[i+1], "unix:")
		if !ok {
			return ""
		}
		dir := filepath.Dir(optValue(p))
		if strings.HasPrefix(filepath.Base(dir), runDirPrefix) && filepath.IsAbs(dir) {
			return dir
		}
	}
	return ""
}

// staleAge is how old a runtime directory must be before sweepRunDirs may
// remove it: older than any QEMU start, so a directory whose QEMU is still
// starting is never taken for a dead one.
const staleAge = time.Minute

// sweepRunDirs removes the runtime directories under base that QEMU
// processes killed with their test process left behind: directories named
// jsq-*, older than minAge, whose QMP socket no process listens on any
// more. It is best effort.
func sweepRunDirs(base string, minAge time.Duration) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), runDirPrefix) {
			continue
		}
		dir := filepath.Join(base, e.Name())
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < minAge {
			continue
		}
		conn, err := net.DialTimeout("unix", filepath.Join(dir, "qmp"), time.Second)
		if err == nil {
			_ = conn.Close() // a live QEMU
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			_ = os.RemoveAll(dir)
		}
	}
}

// readPidfile returns the pid in a pid file, or 0.
func readPidfile(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0
	}
	return pid
}

// killStale kills a QEMU that an earlier process (which died without
// stopping it) left running on this device, found by the device's pid
// file. The harness's device lock guarantees that no live process owns it.
func killStale(ctx context.Context, pidfile, disk string) error {
	pid := readPidfile(pidfile)
	if pid == 0 || pid == os.Getpid() {
		_ = os.Remove(pidfile)
		return nil
	}
	args, ok := procArgs(pid)
	if !ok || !ownsArgs(args, pidfile, disk) {
		_ = os.Remove(pidfile) // gone, or the pid was reused
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing the QEMU (pid %d) an earlier test left running on %s: %w", pid, disk, err)
	}
	backoff := time.Millisecond
	for !procGone(pid) {
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for the QEMU (pid %d) an earlier test left running on %s to exit after SIGKILL: %w", pid, disk, context.Cause(ctx))
		case <-t.C:
		}
		backoff = min(backoff*2, 50*time.Millisecond)
	}
	if dir := staleRunDir(args); dir != "" {
		_ = os.RemoveAll(dir)
	}
	_ = os.Remove(pidfile)
	return nil
}
