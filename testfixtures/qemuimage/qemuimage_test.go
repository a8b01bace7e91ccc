package qemuimage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/qemuimage"
)

func TestDirFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(qemuimage.EnvDir, dir)
	if got := qemuimage.Dir(); got != dir {
		t.Errorf("Dir() = %q, want %q from %s", got, dir, qemuimage.EnvDir)
	}
	_, err := qemuimage.Path(qemuimage.DUT("1.0.0"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "make qemu-images") {
		t.Errorf("Path of a missing image: error %v, want one matching fs.ErrNotExist that says to run make qemu-images", err)
	}
	want := filepath.Join(dir, qemuimage.Blank)
	if err := os.WriteFile(want, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := qemuimage.Path(qemuimage.Blank); got != want || err != nil {
		t.Errorf("Path(%q) = %q, %v; want %q, nil", qemuimage.Blank, got, err, want)
	}
	for _, bad := range []string{"", ".", "..", "../blank.img", "sub/blank.img"} {
		if _, err := qemuimage.Path(bad); err == nil {
			t.Errorf("Path(%q) succeeded, want an error", bad)
		}
	}
}

func TestDirInRepository(t *testing.T) {
	t.Setenv(qemuimage.EnvDir, "")
	root, err := filepath.Abs(filepath.Join("..", "..")) // tests run in the package's directory
	if err != nil {
		t.Fatal(err)
	}
	if got, want := qemuimage.Dir(), filepath.Join(root, qemuimage.DefaultDir); got != want {
		t.Errorf("Dir() = %q, want %q", got, want)
	}
}

func TestNames(t *testing.T) {
	if got := qemuimage.DUT("2.0.0"); got != "dut-2.0.0.img" {
		t.Errorf("DUT(2.0.0) = %q", got)
	}
	if got := qemuimage.Banner("1.0.0"); got != "Jumpstarter QEMU DUT 1.0.0" {
		t.Errorf("Banner(1.0.0) = %q", got)
	}
}

// TestBoot boots the images with QEMU (TCG, BIOS) and checks what their
// serial consoles show. It skips when QEMU or the images are missing, except
// with CI=true, where it fails.
func TestBoot(t *testing.T) {
	t.Run("dut-1.0.0", func(t *testing.T) {
		t.Parallel()
		const version = "1.0.0"
		vm := boot(t, qemuimage.DUT(version))
		vm.expect(qemuimage.Banner(version) + "\r")
		vm.login()
		vm.checkRelease(version)
		if testing.Short() {
			t.Log("-short: not rebooting")
		} else {
			vm.send("reboot\r")
			vm.expect("reboot: Restarting system")
			vm.expect(qemuimage.Banner(version) + "\r")
			vm.login()
			vm.checkRelease(version)
		}
		vm.send("poweroff\r")
		vm.expect("reboot: Power down")
		vm.waitExit()
	})
	t.Run("blank", func(t *testing.T) {
		t.Parallel()
		boot(t, qemuimage.Blank).expect(qemuimage.NoBootableDevice)
	})
	t.Run("corrupt", func(t *testing.T) {
		t.Parallel()
		vm := boot(t, qemuimage.Corrupt)
		vm.expect(qemuimage.NoRootfs)
		vm.expect(qemuimage.RescuePrompt)
	})
	t.Run("panic", func(t *testing.T) {
		t.Parallel()
		boot(t, qemuimage.Panic).expect(qemuimage.KernelPanic)
	})
	t.Run("hang", func(t *testing.T) {
		t.Parallel()
		vm := boot(t, qemuimage.Hang)
		vm.expect("stage1: switching to the root file system")
		vm.expect("\n")
		// A bootable image shows its login prompt well under a second after
		// this line, even on a busy 2-core machine without KVM.
		if out := vm.quiet(3 * time.Second); strings.TrimSpace(out) != "" {
			t.Errorf("the hang image printed %q after switching to its root file system, want nothing", out)
		}
	})
}

// stepTimeout bounds each wait for console output. A boot to the login
// prompt takes 3-5 s on a 2-core machine without KVM; the margin is for
// machines busy running other tests: with six VMs of this test beside the
// race-detector run of every package, the boot loader alone was seen to
// take over a minute to load the kernel. A deadline, not a wait: a
// passing run is as fast as before.
const stepTimeout = 3 * time.Minute

// unavailable skips the test, or fails it when CI=true: CI must run it.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: failing instead of skipping)", msg)
	}
	t.Skip("skipping: " + msg)
}

type vm struct {
	t      *testing.T
	stdin  io.WriteCloser
	con    *console
	stderr syncBuffer
	exited chan struct{} // closed when QEMU has exited and its output is read
	err    error         // QEMU's exit status, once exited is closed
}

// boot starts QEMU on a copy of the image, the serial console on QEMU's
// standard input and output, and stops it when the test ends.
func boot(t *testing.T, image string) *vm {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		unavailable(t, "no qemu-system-x86_64 (install it with testfixtures/qemuimage/deps.sh): %v", err)
	}
	src, err := qemuimage.Path(image)
	if err != nil {
		unavailable(t, "%v", err)
	}
	disk := filepath.Join(t.TempDir(), image)
	if err := sparseCopy(disk, src); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(qemu, "-accel", "tcg", "-m", "128", "-nodefaults", "-no-user-config",
		"-nographic", // also turns on SeaBIOS's serial console
		"-serial", "stdio",
		"-drive", "file="+disk+",format=raw,if=virtio")
	v := &vm{t: t, con: newConsole(), exited: make(chan struct{})}
	cmd.Stderr = &v.stderr
	if v.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting QEMU: %v", err)
	}
	go func() {
		v.con.run(stdout)
		v.err = cmd.Wait()
		close(v.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-v.exited
		if t.Failed() {
			t.Logf("%s: QEMU %s\nconsole:\n%s\nQEMU stderr:\n%s", image, strings.Join(cmd.Args, " "), v.con, v.stderr.String())
		}
	})
	return v
}

func (v *vm) expect(s string) string {
	v.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	before, err := v.con.expect(ctx, s)
	if err != nil {
		v.t.Fatal(err)
	}
	return before
}

func (v *vm) send(s string) {
	v.t.Helper()
	if _, err := io.WriteString(v.stdin, s); err != nil {
		v.t.Fatalf("writing %q to the console: %v", s, err)
	}
}

func (v *vm) login() {
	v.t.Helper()
	v.expect(qemuimage.LoginPrompt)
	v.send("root\r")
	v.expect(qemuimage.ShellPrompt)
}

// checkRelease runs cat /etc/dut-release and checks that its only output
// line is the version.
func (v *vm) checkRelease(version string) {
	v.t.Helper()
	v.send("cat /etc/dut-release\r")
	out := v.expect(qemuimage.ShellPrompt)
	// out is the echoed command line (after the shell's ESC [ 6 n), then the output.
	_, output, ok := strings.Cut(out, "cat /etc/dut-release\r\n")
	if !ok {
		v.t.Fatalf("no echo of the command in %q", out)
	}
	if want := version + "\r\n"; output != want {
		v.t.Errorf("cat /etc/dut-release printed %q, want %q", output, want)
	}
}

// quiet waits d and returns what the console showed meanwhile.
func (v *vm) quiet(d time.Duration) string {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	<-ctx.Done()
	return v.con.rest()
}

// waitExit waits for QEMU to exit by itself and checks its exit status.
func (v *vm) waitExit() {
	v.t.Helper()
	select {
	case <-v.exited:
		if v.err != nil {
			v.t.Errorf("QEMU exited with %v, want success", v.err)
		}
	case <-time.After(stepTimeout):
		v.t.Fatalf("QEMU still running %v after power-off", stepTimeout)
	}
}

// console collects a byte stream; expect waits for a string in what came
// after the previous match.
type console struct {
	mu     sync.Mutex
	buf    []byte
	next   int           // where the next expect starts looking
	grew   chan struct{} // closed, and replaced, when buf grows or the stream ends
	closed bool
}

func newConsole() *console { return &console{grew: make(chan struct{})} }

func (c *console) run(r io.Reader) {
	b := make([]byte, 4096)
	for {
		n, err := r.Read(b)
		c.mu.Lock()
		c.buf = append(c.buf, b[:n]...)
		c.closed = err != nil
		close(c.grew)
		c.grew = make(chan struct{})
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// expect returns the output between the previous match and s, once s has
// been received, or an error when ctx ends or the stream ends first.
func (c *console) expect(ctx context.Context, s string) (string, error) {
	for {
		c.mu.Lock()
		if i := bytes.Index(c.buf[c.next:], []byte(s)); i >= 0 {
			before := string(c.buf[c.next : c.next+i])
			c.next += i + len(s)
			c.mu.Unlock()
			return before, nil
		}
		grew, closed := c.grew, c.closed
		c.mu.Unlock()
		if closed {
			return "", fmt.Errorf("QEMU exited before %q appeared on the console", s)
		}
		select {
		case <-grew:
		case <-ctx.Done():
			return "", fmt.Errorf("no %q on the console: %w", s, ctx.Err())
		}
	}
}

// rest returns the output after the previous match.
func (c *console) rest() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.buf[c.next:])
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.buf)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// sparseCopy copies src to dst, leaving holes where src has zeros.
func sparseCopy(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	var size int64
	for {
		n, rerr := io.ReadFull(in, buf)
		if n > 0 {
			size += int64(n)
			var werr error
			if allZero(buf[:n]) {
				_, werr = out.Seek(int64(n), io.SeekCurrent)
			} else {
				_, werr = out.Write(buf[:n])
			}
			if werr != nil {
				out.Close()
				return werr
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			out.Close()
			return rerr
		}
	}
	if err := out.Truncate(size); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
