package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
)

// These tests run the real dut binary, built from this package, against a
// simulated DUTlink lab: one process per command, as a person at the bench
// runs them. The lab's USB controllers live in this test process, out of
// the binary's reach, so the binary drives the boards over their shell
// (DUTLINK_TRANSPORT=shell); the USB transport is covered in-process by the
// dutlink package's tests.

// goCache is the build cache as it was when the tests started: env(t)
// points XDG_CACHE_HOME at a temporary folder, where go would otherwise
// start a new, empty one and rebuild everything.
var goCache = func() string {
	if c := os.Getenv("GOCACHE"); c != "" {
		return c
	}
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "go-build")
	}
	return ""
}()

var (
	dutBinOnce sync.Once
	dutBin     string
	dutBinErr  error
)

// TestMain removes the dut binary the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if dutBin != "" {
		_ = os.RemoveAll(filepath.Dir(dutBin))
	}
	os.Exit(code)
}

// dutBinary builds the dut command once per test run.
func dutBinary(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to build the dut binary with")
	}
	dutBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dut-bin-")
		if err != nil {
			dutBinErr = err
			return
		}
		dutBin = filepath.Join(dir, "dut")
		build := exec.Command("go", "build", "-tags", "dutsim", "-o", dutBin, ".")
		if goCache != "" {
			build.Env = append(os.Environ(), "GOCACHE="+goCache)
		}
		out, err := build.CombinedOutput()
		if err != nil {
			dutBinErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	require.NoError(t, dutBinErr)
	return dutBin
}

// binEnv is the environment for the binary: env(t)'s private world and the
// lab, over the shell.
func binEnv(t *testing.T, lab *dutlinksim.Lab) []string {
	t.Helper()
	var e []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(k, "DUTLINK_") {
			e = append(e, kv)
		}
	}
	for k, v := range lab.Env() {
		e = append(e, k+"="+v)
	}
	return append(e, "DUTLINK_TRANSPORT=shell", "DUT_DRIVER=dutlink")
}

type binResult struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// runBin runs the dut binary with args, bounded by limit.
func runBin(t *testing.T, lab *dutlinksim.Lab, limit time.Duration, args ...string) binResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, dutBinary(t), args...)
	cmd.Env = binEnv(t, lab)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := binResult{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	require.NoError(t, ctx.Err(), "dut %s did not end within %s:\n%s%s", strings.Join(args, " "), limit, r.stdout, r.stderr)
	if err != nil && r.code < 0 {
		t.Fatalf("dut %s: %v", strings.Join(args, " "), err)
	}
	t.Logf("dut %s: exit %d in %s\n%s%s", strings.Join(args, " "), r.code, r.took.Round(time.Millisecond), r.stdout, r.stderr)
	return r
}

// Every firmware version, with its board in console mode (how 0.08 and 0.09
// boot and how the driver leaves 0.07): every command works, one process
// each, no shell command reaches the DUT, and the storage that one process
// switched to the host is flushed and ejected by the one that switches it
// away.
func TestBinaryDrivesBoardsInConsoleMode(t *testing.T) {
	for _, version := range []string{"0.07", "0.08", "0.09"} {
		t.Run(version, func(t *testing.T) {
			lab := env(t)
			b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: version, Serial: "1a2b3c4d", Config: map[string]string{"name": "bench-1", "power_on": "p1,bL,w1,bZ"}})
			for range 4 {
				r := runBin(t, lab, time.Minute, "list")
				require.Equal(t, exitOK, r.code)
				assert.Contains(t, r.stdout, "bench-1")
				assert.NotContains(t, r.stdout, "Not usable")
			}
			for _, args := range [][]string{
				{"power", "on", "bench-1"}, {"pin", "bench-1", "a", "high"}, {"meter", "bench-1"},
				{"config", "bench-1", "get"}, {"config", "bench-1", "set", "tags", "lab-2"},
				{"storage", "bench-1", "host"},
			} {
				require.Equal(t, exitOK, runBin(t, lab, time.Minute, args...).code, "dut %s", strings.Join(args, " "))
			}
			assert.True(t, b.Power())
			assert.Equal(t, "h", b.Pin("a"))
			assert.Equal(t, "lab-2", b.Config()["tags"])
			require.Equal(t, "host", b.Storage())
			disk, err := filepath.EvalSymlinks(filepath.Join(lab.Dev, "disk", "by-id", "usb-"+b.DiskID()+"-0:0"))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(disk, []byte("written between two dut commands"), 0))
			require.Equal(t, exitOK, runBin(t, lab, time.Minute, "storage", "bench-1", "dut").code)
			assert.Equal(t, "dut", b.Storage())
			assert.Len(t, b.Ejected(), 1, "the second process flushed and ejected the disk the first left at the host")
			require.Equal(t, exitOK, runBin(t, lab, time.Minute, "power", "off", "bench-1").code)
			assert.False(t, b.Power())
			assert.Empty(t, strings.Trim(string(b.DUTInput()), "\x02"), "only the escape reached the DUT")
			assert.False(t, b.AtShell())
		})
	}
}

// A program that reads the board's tty without its lock (cat) steals the
// shell's replies: dut list must still end, bounded, name the thief, and
// end at once on SIGTERM.
func TestBinaryWithAStrayReaderOfTheTTY(t *testing.T) {
	if _, err := exec.LookPath("cat"); err != nil {
		t.Skip("no cat")
	}
	lab := env(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Serial: "1a2b3c4d", Config: map[string]string{"name": "bench-1"}})
	require.Equal(t, exitOK, runBin(t, lab, time.Minute, "list").code, "remembered by name before the thief came")
	thief := exec.Command("cat", b.TTY())
	thief.Stdout = new(bytes.Buffer)
	require.NoError(t, thief.Start())
	t.Cleanup(func() { _ = thief.Process.Kill(); _ = thief.Wait() })

	named := false
	for i := 0; i < 3 && !named; i++ {
		// cat takes some of the board's replies, not always all of them.
		r := runBin(t, lab, time.Minute, "list")
		named = strings.Contains(r.stdout+r.stderr, fmt.Sprintf("pid %d (cat)", thief.Process.Pid))
	}
	assert.True(t, named, "dut list names the process that takes the board's replies")

	cmd := exec.Command(dutBinary(t), "power", "on", "bench-1")
	cmd.Env = binEnv(t, lab)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	require.Eventually(t, func() bool { return holds(cmd.Process.Pid, b.TTY()) }, 30*time.Second, 5*time.Millisecond, "dut opened the tty")
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	signalled := time.Now()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		t.Logf("exit %d %s after SIGTERM\n%s", cmd.ProcessState.ExitCode(), time.Since(signalled).Round(time.Millisecond), out.String())
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("dut power on did not end within 15 s of SIGTERM:\n%s", out.String())
	}
}

// holds reports whether process pid has the file at path open.
func holds(pid int, path string) bool {
	want, err := filepath.EvalSymlinks(path)
	if err != nil {
		return false
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, _ := os.ReadDir(dir)
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && l == want {
			return true
		}
	}
	return false
}

// A board whose config (written by another tool) overflows its shell's
// 512-byte get-config reply is listed, with a warning that says what to
// clear; clearing it works and the warning goes.
func TestBinaryListsABoardWhoseConfigOverflows(t *testing.T) {
	lab := env(t)
	js := `{"note":"` + strings.Repeat("x", 440) + `"}`
	lab.AddBoardT(t, dutlinksim.BoardOptions{Serial: "1a2b3c4d", Config: map[string]string{"name": "bench-1", "json": js}})
	r := runBin(t, lab, time.Minute, "list")
	require.Equal(t, exitOK, r.code)
	assert.Contains(t, r.stdout, "bench-1")
	assert.Contains(t, r.stdout, "Warning: dutlink bench-1:")
	assert.Contains(t, r.stdout, "dut config 1a2b3c4d set json ''")
	require.Equal(t, exitOK, runBin(t, lab, time.Minute, "config", "bench-1", "set", "json", "").code)
	r = runBin(t, lab, time.Minute, "list")
	require.Equal(t, exitOK, r.code)
	assert.NotContains(t, r.stdout, "Warning")
}
