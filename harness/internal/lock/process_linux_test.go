package lock

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
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
)

// Environment of the helper processes started by these tests.
const (
	envRole = "LOCK_TEST_HELPER_ROLE" // "holder" or "waiter"
	envDir  = "LOCK_TEST_HELPER_DIR"
	envKey  = "LOCK_TEST_HELPER_KEY"
)

// TestHelperProcess is not a test: it is the body of the helper processes
// that the cross-process tests start by re-running the test binary.
//
// A "holder" acquires the key, prints "locked" and blocks until its stdin is
// closed or it is killed. A "waiter" waits for the key, which its parent never
// releases before killing it.
func TestHelperProcess(t *testing.T) {
	role := os.Getenv(envRole)
	if role == "" {
		t.Skip("helper process for the cross-process tests")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := Acquire(ctx, os.Getenv(envDir), []string{os.Getenv(envKey)}, Holder{Test: "helper-" + role})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	defer l.Release()
	fmt.Println("locked")
	_, _ = io.Copy(io.Discard, os.Stdin) // block until the parent goes away
}

type helper struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *bytes.Buffer
}

// startHelper re-runs the test binary as a helper process in role.
func startHelper(t *testing.T, role, dir, key string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envRole+"="+role, envDir+"="+dir, envKey+"="+key)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	h := &helper{cmd: cmd, lines: make(chan string, 16), stderr: new(bytes.Buffer)}
	cmd.Stderr = h.stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			h.lines <- s.Text()
		}
		close(h.lines)
	}()
	return h
}

// waitLine waits for the helper to print want.
func (h *helper) waitLine(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(deadline)
	for {
		select {
		case line, ok := <-h.lines:
			if !ok {
				t.Fatalf("helper exited before printing %q; stderr:\n%s", want, h.stderr)
			}
			if line == want {
				return
			}
		case <-timeout:
			t.Fatalf("helper did not print %q within %v", want, deadline)
		}
	}
}

// kill SIGKILLs the helper and reaps it.
func (h *helper) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, h.cmd.Process.Signal(syscall.SIGKILL))
	_ = h.cmd.Wait()
}

// ticketsOf lists the queue tickets of process pid.
func ticketsOf(t *testing.T, dir string, pid int) []string {
	t.Helper()
	var out []string
	for _, p := range tickets(t, dir) {
		if strings.Contains(filepath.Base(p), fmt.Sprintf("-%d-", pid)) {
			out = append(out, p)
		}
	}
	return out
}

func waitTicketOf(t *testing.T, dir string, pid int) string {
	t.Helper()
	var p []string
	require.Eventually(t, func() bool { p = ticketsOf(t, dir, pid); return len(p) == 1 },
		deadline, time.Millisecond, "waiting for the ticket of pid %d", pid)
	return p[0]
}

func TestCrossProcess(t *testing.T) {
	// With the safety-net retry pushed far out, the waiter below can only
	// get the lease in time by reacting to the inotify event of the kill.
	retryOverride.Store(int64(time.Minute))
	t.Cleanup(func() { retryOverride.Store(0) })

	dir := t.TempDir()
	child := startHelper(t, "holder", dir, "sim/sim-0")
	child.waitLine(t, "locked")
	pid := child.cmd.Process.Pid

	h, held, err := ReadHolder(dir, "sim/sim-0")
	require.NoError(t, err)
	require.True(t, held)
	assert.Equal(t, pid, h.PID)
	assert.Equal(t, "helper-holder", h.Test)

	_, err = acquireWithin(t, 100*time.Millisecond, dir, []string{"sim/sim-0"}, Holder{Test: t.Name()})
	var te *TimeoutError
	require.ErrorAs(t, err, &te)
	require.ErrorIs(t, err, ErrTimeout)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Len(t, te.Holders, 1)
	assert.Equal(t, pid, te.Holders[0].PID)
	assert.Contains(t, err.Error(), fmt.Sprintf("held by helper-holder (pid %d on host ", pid))
	t.Log(err)

	type result struct {
		l   *Lease
		at  time.Time
		err error
	}
	done := make(chan result, 1)
	go func() {
		l, err := acquireWithin(t, 30*time.Second, dir, []string{"sim/sim-0"}, Holder{Test: t.Name()})
		done <- result{l, time.Now(), err}
	}()
	waitTicketOf(t, dir, os.Getpid()) // the waiter is queued and waiting

	killed := time.Now()
	child.kill(t)
	var r result
	select {
	case r = <-done:
	case <-time.After(deadline):
		t.Fatalf("no lease %v after the holder was killed", deadline)
	}
	require.NoError(t, r.err)
	defer r.l.Release()
	latency := r.at.Sub(killed)
	t.Logf("lease acquired %v after SIGKILL of the holder", latency)
	assert.Less(t, latency, 5*time.Second, "the wake-up after the kill should be event driven")
	assert.Equal(t, os.Getpid(), r.l.Holder().PID)
	assert.Empty(t, tickets(t, dir))
}

func TestStaleTicketOfKilledWaiter(t *testing.T) {
	dir := t.TempDir()
	h, err := acquireWithin(t, deadline, dir, []string{"sim-0"}, Holder{Test: "H"})
	require.NoError(t, err)
	released := false
	defer func() {
		if !released {
			h.Release()
		}
	}()

	// A waiter in another process queues for the key and is killed while
	// waiting: its ticket stays behind, older than any later waiter's.
	child := startHelper(t, "waiter", dir, "sim-0")
	stale := waitTicketOf(t, dir, child.cmd.Process.Pid)
	child.kill(t)
	require.FileExists(t, stale)

	require.NoError(t, h.Release())
	released = true
	start := time.Now()
	l, err := acquireWithin(t, deadline, dir, []string{"sim-0"}, Holder{Test: t.Name()})
	require.NoError(t, err, "a dead waiter's ticket must not hold the key back")
	defer l.Release()
	assert.Less(t, time.Since(start), time.Second)
	assert.NoFileExists(t, stale, "stale ticket not removed")
}

func TestStaleTicketWhileWaiting(t *testing.T) {
	dir := t.TempDir()
	h, err := acquireWithin(t, deadline, dir, []string{"sim-0"}, Holder{Test: "H"})
	require.NoError(t, err)

	// Queue order: dead child first, then a live waiter in this process.
	child := startHelper(t, "waiter", dir, "sim-0")
	stale := waitTicketOf(t, dir, child.cmd.Process.Pid)
	var wg sync.WaitGroup
	var got *Lease
	var gotErr error
	wg.Go(func() {
		got, gotErr = acquireWithin(t, deadline, dir, []string{"sim-0"}, Holder{Test: t.Name()})
	})
	waitTicketOf(t, dir, os.Getpid())
	child.kill(t)
	require.NoError(t, h.Release())
	wg.Wait()
	require.NoError(t, gotErr)
	defer got.Release()
	assert.NoFileExists(t, stale)
}
