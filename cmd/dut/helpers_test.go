package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
)

// waitLimit bounds every wait for an event in these tests.
const waitLimit = 10 * time.Second

// syncBuf is a goroutine-safe buffer that can be waited on for a string.
type syncBuf struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed and replaced at every write
	onWrite func(string)  // called with the whole content after a write
}

func newSyncBuf() *syncBuf { return &syncBuf{changed: make(chan struct{})} }

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	n, _ := s.b.Write(p)
	close(s.changed)
	s.changed = make(chan struct{})
	hook, text := s.onWrite, s.b.String()
	s.mu.Unlock()
	if hook != nil {
		hook(text)
	}
	return n, nil
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until the buffer holds want, failing the test after
// waitLimit.
func (s *syncBuf) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		has, ch := strings.Contains(s.b.String(), want), s.changed
		s.mu.Unlock()
		if has {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("waited %s for %q; have:\n%s", waitLimit, want, s.String())
		}
	}
}

// result is what one dut command did.
type result struct {
	code           int
	stdout, stderr string
}

// dut runs the dut command line args in-process with no input.
func dut(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := runWith(ctx, drivers(t), args, strings.NewReader(""), &out, &errb)
	t.Logf("dut %s -> %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out.String(), errb.String())
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// running is a dut command running in the background.
type running struct {
	stdout, stderr *syncBuf
	done           chan int
}

// start runs the dut command line args in the background with stdin as
// its input.
func start(t *testing.T, ctx context.Context, stdin io.Reader, args ...string) *running {
	t.Helper()
	r := &running{stdout: newSyncBuf(), stderr: newSyncBuf(), done: make(chan int, 1)}
	drv := drivers(t)
	go func() { r.done <- runWith(ctx, drv, args, stdin, r.stdout, r.stderr) }()
	return r
}

// wait returns the command's exit code, failing the test when it does not
// end within waitLimit.
func (r *running) wait(t *testing.T) int {
	t.Helper()
	select {
	case code := <-r.done:
		t.Logf("stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
		return code
	case <-time.After(waitLimit):
		t.Fatalf("the command did not end within %s; stdout:\n%s\nstderr:\n%s", waitLimit, r.stdout, r.stderr)
		return -1
	}
}

// env gives the test a private world: every DUT_* and DUTLINK_* variable
// cleared, private lock and sim directories, a DUTlink lab (empty unless
// the test adds boards), a qemu driver that cannot run (no binary), and a
// short acquire timeout. It returns the lab.
func env(t *testing.T) *dutlinksim.Lab {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "DUT_") || strings.HasPrefix(k, "DUTLINK_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	t.Setenv("DUT_LOCK_DIR", t.TempDir())
	t.Setenv("DUT_ACQUIRE_TIMEOUT", "10s")
	t.Setenv("DUT_STEP_TIMEOUT", "20s")
	t.Setenv(sim.EnvDir, t.TempDir())
	t.Setenv(sim.EnvDiskSize, "32MiB")
	t.Setenv(sim.EnvBootTime, "100ms")
	t.Setenv("DUT_QEMU_BINARY", "/nonexistent/qemu-system-x86_64")
	t.Setenv("DUT_QEMU_DIR", t.TempDir())
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	lab := dutlinksim.NewTestLab(t)
	for k, v := range lab.Env() {
		t.Setenv(k, v)
	}
	reg, err := driver.Lookup(sim.DriverName)
	require.NoError(t, err)
	theBench = &bench{Driver: reg, devs: map[string]*sim.Device{}, lab: lab}
	b := theBench
	t.Cleanup(func() {
		// The sim devices of this test live in this process: stop them.
		b.closeAll()
		if theBench == b {
			theBench = nil
		}
	})
	return lab
}

// bench is the registered sim driver as a lab bench: its boards keep their
// state between dut commands, as real boards do (a sim device otherwise
// ends with the command that opened it), so a test can look at a board
// after a command. env makes one per test.
type bench struct {
	driver.Driver
	mu   sync.Mutex
	devs map[string]*sim.Device
	lab  *dutlinksim.Lab // the DUTlink boards of the test
}

// theBench is the current test's bench (the tests of this package set the
// environment, so they run one at a time).
var theBench *bench

// Discover describes the boards as the bench has them: renamed or retagged
// by an earlier command.
func (b *bench) Discover(ctx context.Context) ([]driver.Info, error) {
	infos, err := b.Driver.Discover(ctx)
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, info := range infos {
		if d := b.devs[info.Serial]; d != nil && d.Usable() {
			infos[i].Name, infos[i].Tags = d.Name(), d.Tags()
		}
	}
	return infos, err
}

// Open returns the bench's board for info (by serial), opened at its first
// use and again after it was closed.
func (b *bench) Open(ctx context.Context, info driver.Info) (driver.Device, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := b.devs[info.Serial]; d != nil && d.Usable() {
		return benchDevice{d}, nil
	}
	infos, err := b.Driver.Discover(ctx)
	if err != nil {
		return nil, err
	}
	for _, orig := range infos {
		if orig.Serial == info.Serial {
			dev, err := b.Driver.Open(ctx, orig)
			if err != nil {
				return nil, err
			}
			b.devs[info.Serial] = dev.(*sim.Device)
			return benchDevice{dev.(*sim.Device)}, nil
		}
	}
	return nil, fmt.Errorf("no sim board with serial %q: %w", info.Serial, driver.ErrNoDevice)
}

// closeAll stops the bench's boards.
func (b *bench) closeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, d := range b.devs {
		_ = d.Close()
	}
}

// benchDevice is a bench board: closing it leaves it as the command left it.
type benchDevice struct{ *sim.Device }

func (benchDevice) Close() error { return nil }

// drivers are the drivers the in-process dut commands use: the bench in
// place of the registered sim driver, and every other registered driver.
func drivers(t *testing.T) []driver.Driver {
	t.Helper()
	var out []driver.Driver
	for _, name := range driver.Drivers() {
		d, err := driver.Lookup(name)
		require.NoError(t, err)
		if name == sim.DriverName && theBench != nil {
			d = theBench
		}
		if name == dutlink.DriverName && theBench != nil {
			d = theBench.dutlink(d)
		}
		out = append(out, d)
	}
	return out
}

// dutlink returns a dutlink driver over the bench's lab, configured like
// the registered one from the DUTLINK_* variables, plus the lab's USB
// controllers, which live in this process. A malformed variable leaves
// reg, the registered driver, to report it as a command would.
func (b *bench) dutlink(reg driver.Driver) driver.Driver {
	o, err := dutlink.OptionsFromEnv()
	if err != nil {
		return reg
	}
	o.OpenUSB = b.lab.OpenUSB
	return dutlink.New(o)
}

// simDevice returns the bench's board name.
func simDevice(t *testing.T, name string) *sim.Device {
	t.Helper()
	require.NotNil(t, theBench, "call env(t) first")
	infos, err := theBench.Discover(context.Background())
	require.NoError(t, err)
	for _, info := range infos {
		if info.Name == name {
			d, err := theBench.Open(context.Background(), info)
			require.NoError(t, err)
			return d.(benchDevice).Device
		}
	}
	t.Fatalf("no sim device %s", name)
	return nil
}

// held reports whether d's lease is held in the test's lock directory.
func held(t *testing.T, d driver.Device) bool {
	t.Helper()
	h, held, err := lease.HolderOf(os.Getenv("DUT_LOCK_DIR"), driver.InfoOf(d))
	require.NoError(t, err)
	if held {
		t.Logf("%s is held by %+v", d.Name(), h)
	}
	return held
}

// bare is a driver whose one device, bare-0, has no capability at all.
type bare struct{}

func (bare) Name() string { return "bare" }
func (bare) Discover(context.Context) ([]driver.Info, error) {
	return []driver.Info{driver.InfoOf(bareDevice{})}, nil
}
func (bare) Open(context.Context, driver.Info) (driver.Device, error) { return bareDevice{}, nil }

type bareDevice struct{}

func (bareDevice) Name() string   { return "bare-0" }
func (bareDevice) Serial() string { return "" }
func (bareDevice) Tags() []string { return []string{"bare"} }
func (bareDevice) Driver() string { return "bare" }

func init() { driver.Register(bare{}) }
