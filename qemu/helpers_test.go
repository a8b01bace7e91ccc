package qemu

import (
	"bytes"
	"context"
	"errors"
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

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/stretchr/testify/require"
)

// EnvImages names the directory of the integration tests' images:
// dut-1.0.0.img, dut-2.0.0.img (bootable; /etc/dut-release holds the
// version; root logs in without a password at "dut login: ") and blank.img.
const EnvImages = "DUT_QEMU_IMAGES"

// needQEMU skips the test (fails it when CI=true) when QEMU is missing.
func needQEMU(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("qemu: integration test skipped in -short mode")
	}
	if _, err := lookBinary(DefaultBinary); err != nil {
		missing(t, "%v", err)
	}
}

// needImages returns the image directory, or skips the test (fails it when
// CI=true) when QEMU or the images are missing.
func needImages(t *testing.T) string {
	t.Helper()
	needQEMU(t)
	dir := os.Getenv(EnvImages)
	if dir == "" {
		missing(t, "%s is not set", EnvImages)
	}
	for _, f := range []string{"dut-1.0.0.img", "dut-2.0.0.img", "blank.img"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			missing(t, "image missing: %v", err)
		}
	}
	return dir
}

func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...) + "; run `make qemu-images` and set " + EnvImages + " to its output directory"
	if os.Getenv("CI") == "true" {
		t.Fatalf("qemu: %s (CI=true, so this is a failure, not a skip)", msg)
	}
	t.Skipf("qemu: %s", msg)
}

// newTestDevice returns a device with its disk in a test directory, closed
// at the end of the test, after checking that its QEMU is gone.
func newTestDevice(t *testing.T, name string) *Device {
	t.Helper()
	d, err := NewDevice(name, filepath.Join(t.TempDir(), name+".disk"), Options{})
	require.NoError(t, err)
	t.Cleanup(func() {
		pid := d.PID()
		require.NoError(t, d.Close())
		if pid != 0 {
			requireGone(t, pid)
		}
	})
	return d
}

// requireGone fails unless process pid has exited.
func requireGone(t *testing.T, pid int) {
	t.Helper()
	require.Eventually(t, func() bool { return procGone(pid) }, 5*time.Second, 10*time.Millisecond, "QEMU pid %d still runs", pid)
}

// flash writes image onto d's disk as the harness does: storage to host,
// copy, storage to dut.
func flash(t *testing.T, ctx context.Context, d *Device, image string) {
	t.Helper()
	require.NoError(t, d.SetStorage(ctx, driver.StorageHost))
	target, err := d.BlockTarget(ctx)
	require.NoError(t, err)
	src, err := os.Open(image)
	require.NoError(t, err)
	defer src.Close()
	dst, err := os.OpenFile(target, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	require.NoError(t, dst.Sync())
	require.NoError(t, dst.Close())
	require.NoError(t, d.SetStorage(ctx, driver.StorageDUT))
}

// tcon reads a console stream in the background into a transcript that
// waitFor searches from a cursor.
type tcon struct {
	t  *testing.T
	rw io.ReadWriteCloser

	mu     sync.Mutex
	buf    bytes.Buffer
	err    error
	cursor int
	wake   chan struct{}
	done   chan struct{}
}

func newTcon(t *testing.T, rw io.ReadWriteCloser) *tcon {
	c := &tcon{t: t, rw: rw, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		p := make([]byte, 4096)
		for {
			n, err := rw.Read(p)
			// QEMU_TEST_TRACE=1 logs every read with its time (to see
			// where a boot spends it).
			if os.Getenv("QEMU_TEST_TRACE") != "" && n > 0 {
				t.Logf("%s %q", time.Now().Format("15:04:05.000"), p[:n])
			}
			c.mu.Lock()
			c.buf.Write(p[:n])
			if err != nil {
				c.err = err
			}
			c.mu.Unlock()
			select {
			case c.wake <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = rw.Close()
		<-c.done
	})
	return c
}

// waitFor waits until s appears after the cursor, then moves the cursor past
// it and returns the text before it. It fails the test after timeout or
// when the stream fails.
func (c *tcon) waitFor(s string, timeout time.Duration) string {
	c.t.Helper()
	out, err := c.tryWaitFor(s, timeout)
	require.NoError(c.t, err)
	return out
}

func (c *tcon) tryWaitFor(s string, timeout time.Duration) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		text := c.buf.String()[c.cursor:]
		if i := strings.Index(text, s); i >= 0 {
			c.cursor += i + len(s)
			c.mu.Unlock()
			return text[:i], nil
		}
		err := c.err
		c.mu.Unlock()
		if err != nil {
			return text, fmt.Errorf("console failed while waiting for %q: %w; output after the cursor:\n%s", s, err, tail(text))
		}
		select {
		case <-c.wake:
		case <-deadline.C:
			return text, fmt.Errorf("no %q after %v; output after the cursor:\n%s", s, timeout, tail(text))
		}
	}
}

// readErr waits up to timeout for the reader to stop and returns its error.
func (c *tcon) readErr(timeout time.Duration) error {
	select {
	case <-c.done:
	case <-time.After(timeout):
		return errors.New("Read still blocks")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *tcon) send(s string) {
	c.t.Helper()
	_, err := io.WriteString(c.rw, s)
	require.NoError(c.t, err)
}

func tail(s string) string {
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}

// bootTimeout bounds one boot to the login prompt (about 3.5 s here, more
// when VMs share the CPU).
const bootTimeout = 60 * time.Second

// login waits for the login prompt, logs in as root and waits for the
// shell prompt.
func (c *tcon) login() {
	c.t.Helper()
	c.waitFor("dut login: ", bootTimeout)
	c.send("root\n")
	c.waitFor("# ", 20*time.Second)
}

// release runs cat /etc/dut-release and returns its one line.
func (c *tcon) release() string {
	c.t.Helper()
	c.send("cat /etc/dut-release\n")
	c.waitFor("cat /etc/dut-release\r\n", 10*time.Second)
	return c.waitFor("\r\n", 10*time.Second)
}

// rss returns the resident set size of process pid in KiB, or 0.
func rss(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var n int
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &n)
			return n
		}
	}
	return 0
}

// startSleeper starts a process whose command line holds args, for the
// stale-process tests; it is killed at the end of the test.
func startSleeper(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", append([]string{"-c", "sleep 60; :", "sh"}, args...)...)
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
	})
	// Start returns as exec begins; the kernel shows the new command line
	// in /proc a moment later. Wait for it, as a stale QEMU from an
	// earlier test would long have it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if a, ok := procArgs(cmd.Process.Pid); ok && len(a) == 4+len(args) {
			break
		}
		require.True(t, time.Now().Before(deadline), "the sleeper's command line never showed in /proc")
		time.Sleep(time.Millisecond)
	}
	return cmd
}
