package harness_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/faketb"
)

// helperRole selects what TestHelperProcess does in a child process.
const helperRole = "JUMPSTARTER_HARNESS_HELPER"

// TestHelperProcess is not a test: the tests below run it in child
// processes (this test binary, re-executed) to play a second test process.
func TestHelperProcess(t *testing.T) {
	role := os.Getenv(helperRole)
	if role == "" {
		t.Skip("helper process for the cross-process tests")
	}
	dut := harness.Acquire(t)
	fmt.Printf("HELD pid=%d\n", os.Getpid())
	switch role {
	case "hold":
		// Hold the DUT until the parent closes stdin or kills us.
		_, _ = io.Copy(io.Discard, os.Stdin)
	case "panic":
		dut.Flash()
		dut.PowerOn()
		dut.Login()
		fmt.Println("POWERED")
		panic("the test panicked")
	case "envfile":
		dut.Flash()
		dut.PowerOn()
		out := dut.Login().Run("cat /etc/dut-release")
		fmt.Printf("ENVFILE name=%s image=%s release=%s\n", dut.Name(), dut.Session().Config().Image, strings.TrimSpace(out))
	case "hang":
		dut.Flash()
		dut.PowerOn()
		dut.Login()
		fmt.Println("POWERED")
		// Nothing prints this: only the test's own deadline can end the wait.
		dut.Console().ExpectString("a line that never comes")
	}
}

// child starts this test binary as a helper process with role.
func child(t *testing.T, role string, args ...string) (*exec.Cmd, *bufio.Reader, io.WriteCloser, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestHelperProcess$", "-test.v"}, args...)...)
	// Its own TMPDIR: a killed child leaves its temporary folders there,
	// not in the machine's.
	cmd.Env = append(os.Environ(), helperRole+"="+role, "TMPDIR="+t.TempDir())
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, bufio.NewReader(stdout), stdin, &stderr
}

// waitLine reads r until a line starting with prefix, within d.
func waitLine(t *testing.T, r *bufio.Reader, prefix string, d time.Duration) string {
	t.Helper()
	found := make(chan string, 1)
	go func() {
		for {
			line, err := r.ReadString('\n')
			if strings.HasPrefix(line, prefix) {
				found <- line
				return
			}
			if err != nil {
				close(found)
				return
			}
		}
	}()
	select {
	case line, ok := <-found:
		require.True(t, ok, "the helper ended before printing %q", prefix)
		return line
	case <-time.After(d):
		t.Fatalf("no %q from the helper within %s", prefix, d)
		return ""
	}
}

func TestSecondProcessWaitsAndIsToldWhoHolds(t *testing.T) {
	simEnv(t)
	t.Setenv("DUT_NAME", "sim-0")
	holder, out, _, _ := child(t, "hold")
	waitLine(t, out, "HELD", 30*time.Second)

	// A waiter that times out is told who holds the DUT.
	t.Setenv("DUT_ACQUIRE_TIMEOUT", "300ms")
	f := faketb.New(t)
	f.Run(func(tb testing.TB) { harness.Acquire(tb) })
	require.True(t, f.Failed())
	assert.Contains(t, f.Message(), "TestHelperProcess")
	assert.Contains(t, f.Message(), "pid "+strconv.Itoa(holder.Process.Pid))
	assert.Contains(t, f.Message(), "infrastructure failure")

	// A waiter gets the DUT as soon as the holder is killed.
	t.Setenv("DUT_ACQUIRE_TIMEOUT", "60s")
	f = faketb.New(t)
	acquired := make(chan time.Time, 1)
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		f.Run(func(tb testing.TB) {
			harness.Acquire(tb)
			acquired <- time.Now()
		})
	}()
	// The fake test's cleanups write its artifact folder, a temporary folder
	// of this test: they must end before this test removes it.
	defer func() { <-ran }()
	waitForTicket(t, os.Getenv("DUT_LOCK_DIR"))
	killed := time.Now()
	require.NoError(t, holder.Process.Signal(syscall.SIGKILL))
	select {
	case at := <-acquired:
		t.Logf("the waiter got the DUT %s after SIGKILL of the holder", at.Sub(killed))
	case <-time.After(30 * time.Second):
		t.Fatalf("the waiter did not get the DUT after the holder died: %s", f.Message())
	}
}

// waitForTicket waits until a waiter has queued in the lock directory.
func waitForTicket(t *testing.T, lockDir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if m, _ := filepath.Glob(filepath.Join(lockDir, "queue", "*.ticket")); len(m) > 0 {
			return
		}
		// Polling a directory in a test only; the lock itself waits on inotify.
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Fatal("no waiter queued")
}

func TestCleanupRunsWhenTheTestPanics(t *testing.T) {
	simEnv(t)
	im := buildImages(t)
	t.Setenv("DUT_IMAGE", im.a)
	t.Setenv("DUT_NAME", "sim-1")
	cmd, out, _, stderr := child(t, "panic")
	waitLine(t, out, "POWERED", 30*time.Second)
	rest, _ := io.ReadAll(out)
	_ = cmd.Wait()
	text := string(rest) + stderr.String()
	assert.Contains(t, text, "panic: the test panicked")
	assert.Contains(t, text, "sim-1: power off", "cleanup powered the DUT off")
	assert.Contains(t, text, "sim-1: storage off", "cleanup disconnected the storage")
	assert.Contains(t, text, "release: unlocked sim/sim-1")
	_, held := readHolder(t, filepath.Join(os.Getenv("DUT_LOCK_DIR"), "sim_sim-1.lock"))
	assert.False(t, held)
}

// TestHangFailsAtTheTestDeadlineAndCleansUp runs a test that waits for output
// that never comes, under go test -timeout 8s with a 3 s cleanup reserve:
// the wait must fail near 5 s with a message, cleanup must run, and the
// binary must not be killed by the timeout panic.
func TestHangFailsAtTheTestDeadlineAndCleansUp(t *testing.T) {
	simEnv(t)
	im := buildImages(t)
	t.Setenv("DUT_IMAGE", im.a)
	t.Setenv("DUT_NAME", "sim-0")
	t.Setenv("DUT_CLEANUP_RESERVE", "3s")
	t.Setenv("DUT_COMMAND_TIMEOUT", "10m")
	cmd, out, _, _ := child(t, "hang", "-test.timeout=8s")
	waitLine(t, out, "POWERED", 30*time.Second)
	rest, _ := io.ReadAll(out)
	err := cmd.Wait()
	text := string(rest)
	require.Error(t, err, "the test must fail")
	assert.NotContains(t, text, "test timed out", "the harness must fail the test before go test's own timeout kills it")
	assert.Contains(t, text, `"a line that never comes"`)
	assert.Contains(t, text, "go test -timeout")
	assert.Contains(t, text, "sim-0: power off")
	assert.Contains(t, text, "release: unlocked sim/sim-0")
	assert.Contains(t, text, "--- FAIL: TestHelperProcess")
}
