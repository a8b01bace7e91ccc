package drivertest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver/drivertest"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/simimage"
)

// The tests here wrap a good device, the simulator's, in wrappers that each
// break one clause of the contract, and check that Check reports it.

var simBoot = []string{
	"SimBIOS 1.0 (sim-0)\r\nDRAM:  512 MiB\r\nBoot device: mmc0\r\nLoading kernel from mmc0 ...\r\nStarting kernel ...\r\n",
	"Linux version 6.1.0-sim (1.0.0)",
	"Jumpstarter Sim Linux 1.0.0 sim-0 ttyS0\r\n\r\nsim-0 login: ",
}

// newSim returns a fresh simulated device booting image 1.0.0.
func newSim(t *testing.T) *sim.Device {
	t.Helper()
	disk := filepath.Join(t.TempDir(), "sim-0.disk")
	if err := simimage.WriteFile(disk, simimage.Spec{Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	d, err := sim.NewDevice("sim-0", "SIM00000", []string{"sim"}, disk, sim.Options{BootTime: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// unwrapper is implemented by the broken wrappers: the PowerState option
// looks at the simulator inside.
type unwrapper interface{ Sim() *sim.Device }

// base embeds a good device; every wrapper overrides one method.
type base struct{ *sim.Device }

func (b base) Sim() *sim.Device { return b.Device }

func options(extra ...drivertest.Option) []drivertest.Option {
	return append([]drivertest.Option{
		drivertest.Console(drivertest.ConsoleSpec{Boot: simBoot, Send: "root\r", Reply: []string{"root\r\n", "root@sim-0"}, Rescue: []string{"rescue> "}}),
		drivertest.PowerState(func(dev driver.Device) bool { return dev.(unwrapper).Sim().PowerState() == sim.PowerStateOn }),
		drivertest.HostStorageWhilePowered(),
		drivertest.ConfigKey("tags", "drivertest"),
		drivertest.PinLevel(func(dev driver.Device, pin string) driver.PinLevel { return dev.(unwrapper).Sim().Pin(pin) }),
		drivertest.Timeout(2 * time.Second),
	}, extra...)
}

// check runs the contract on devices wrap makes from fresh simulators.
func check(t *testing.T, wrap func(*sim.Device) driver.Device, opts ...drivertest.Option) error {
	t.Helper()
	return drivertest.Check(func() (driver.Device, error) { return wrap(newSim(t)), nil }, options(opts...)...)
}

// wantViolation fails unless err reports a violation of check whose text
// holds every one of want.
func wantViolation(t *testing.T, err error, check string, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("the contract passed; want a violation of %s", check)
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		if !strings.HasPrefix(line, check+": ") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			return
		}
	}
	t.Fatalf("no violation of %s mentioning %q in:\n%v", check, want, err)
}

// generous is the default wait, for the checks that must pass on a busy
// machine; the others wait 2s, as they wait for what never comes.
var generous = drivertest.Timeout(10 * time.Second)

func TestGoodDeviceKeepsTheContract(t *testing.T) {
	if err := check(t, func(d *sim.Device) driver.Device { return base{d} }, generous); err != nil {
		t.Fatal(err)
	}
}

func TestTestDeviceRunsSubtests(t *testing.T) {
	drivertest.TestDevice(t, func(t *testing.T) driver.Device { return base{newSim(t)} }, options(generous)...)
}

// dropByte's console loses the 40th byte it reads.
type dropByte struct{ base }

func (d dropByte) OpenConsole(ctx context.Context) (io.ReadWriteCloser, error) {
	rw, err := d.Device.OpenConsole(ctx)
	if err != nil {
		return nil, err
	}
	return &lossy{ReadWriteCloser: rw, drop: 40}, nil
}

type lossy struct {
	io.ReadWriteCloser
	mu   sync.Mutex
	seen int
	drop int
}

func (l *lossy) Read(p []byte) (int, error) {
	n, err := l.ReadWriteCloser.Read(p)
	l.mu.Lock()
	defer l.mu.Unlock()
	if i := l.drop - l.seen; i >= 0 && i < n {
		copy(p[i:], p[i+1:n])
		l.seen += n
		return n - 1, err
	}
	l.seen += n
	return n, err
}

func TestConsoleThatDropsAByte(t *testing.T) {
	t.Parallel()
	err := check(t, func(d *sim.Device) driver.Device { return dropByte{base{d}} })
	wantViolation(t, err, "console", "boot 1 on one console stream", "Loading kernel")
	wantViolation(t, err, "power", "boot output after PowerOn")
}

// lyingOff's PowerOff reports success and cuts nothing.
type lyingOff struct{ base }

func (lyingOff) PowerOff(ctx context.Context) error { return nil }

func TestPowerOffThatLies(t *testing.T) {
	t.Parallel()
	err := check(t, func(d *sim.Device) driver.Device { return lyingOff{base{d}} })
	wantViolation(t, err, "power", "after PowerOff the device reports power on, want off")
	// Without the PowerState option, the console and the meter tell.
	err = check(t, func(d *sim.Device) driver.Device { return lyingOff{base{d}} }, drivertest.PowerState(nil))
	wantViolation(t, err, "power", "a power-off that cut nothing shows no new boot")
	wantViolation(t, err, "power", "the meter reads")
}

// lyingOn's PowerOn reports success and switches nothing on.
type lyingOn struct{ base }

func (lyingOn) PowerOn(ctx context.Context) error { return nil }

func TestPowerOnThatLies(t *testing.T) {
	t.Parallel()
	err := check(t, func(d *sim.Device) driver.Device { return lyingOn{base{d}} }, drivertest.PowerState(nil))
	wantViolation(t, err, "power", "boot output after PowerOn")
	wantViolation(t, err, "meter", "the meter reads 0.000 W with the power on")
}

// plainErrors' errors lose their sentinels: BlockTarget off the host,
// the second console, an unknown pin.
type plainErrors struct{ base }

func (p plainErrors) BlockTarget(ctx context.Context) (string, error) {
	path, err := p.Device.BlockTarget(ctx)
	if err != nil {
		return "", errors.New(err.Error())
	}
	return path, nil
}

func (p plainErrors) OpenConsole(ctx context.Context) (io.ReadWriteCloser, error) {
	rw, err := p.Device.OpenConsole(ctx)
	if err != nil {
		return nil, errors.New(err.Error())
	}
	return rw, nil
}

func (p plainErrors) SetPin(ctx context.Context, pin string, level driver.PinLevel) error {
	if err := p.Device.SetPin(ctx, pin, level); err != nil {
		return fmt.Errorf("set pin: %v", err)
	}
	return nil
}

func TestErrorsWithoutTheirSentinel(t *testing.T) {
	err := check(t, func(d *sim.Device) driver.Device { return plainErrors{base{d}} })
	wantViolation(t, err, "storage", "BlockTarget at off", "does not wrap \"storage is not connected to the host\"")
	wantViolation(t, err, "console", "second OpenConsole", "does not wrap \"console is busy\"")
	wantViolation(t, err, "pins", `SetPin("no-such-pin")`, "does not wrap \"invalid argument\"")
	wantViolation(t, err, "context", "SetPin(reset, high) with an already cancelled context", "does not wrap context canceled")
}

// storageWhileOn refuses nothing; without HostStorageWhilePowered the
// contract wants ErrPoweredOn.
func TestStorageToHostWhilePowered(t *testing.T) {
	err := drivertest.Check(func() (driver.Device, error) { return base{newSim(t)}, nil }, drivertest.Timeout(2*time.Second))
	wantViolation(t, err, "storage-while-powered", "SetStorage(host) while powered on: succeeded, want an error wrapping \"device is powered on\"")
}

// ignoresCtx's PowerOn and ReadPower run on a context of their own.
type ignoresCtx struct{ base }

func (i ignoresCtx) PowerOn(ctx context.Context) error { return i.Device.PowerOn(context.Background()) }

func (i ignoresCtx) ReadPower(ctx context.Context) (driver.PowerReading, error) {
	return i.Device.ReadPower(context.Background())
}

func TestContextIgnored(t *testing.T) {
	err := check(t, func(d *sim.Device) driver.Device { return ignoresCtx{base{d}} })
	wantViolation(t, err, "context", "PowerOn with an already cancelled context succeeded")
	wantViolation(t, err, "context", "PowerOn with an expired deadline succeeded")
	wantViolation(t, err, "context", "ReadPower with an already cancelled context succeeded")
	wantViolation(t, err, "context", "after calls with ended contexts the device reports power on, want off")
}

// slowCtx's Reset notices its context only after a while.
type slowCtx struct{ base }

func (s slowCtx) Reset(ctx context.Context) error {
	time.Sleep(500 * time.Millisecond)
	return s.Device.Reset(ctx)
}

func TestContextNoticedLate(t *testing.T) {
	t.Parallel()
	err := check(t, func(d *sim.Device) driver.Device { return slowCtx{base{d}} })
	wantViolation(t, err, "context", "Reset with an already cancelled context took")
}

// closeTwice's Close fails the second time, and after Close its SetPin
// does not say the device is closed.
type closeTwice struct {
	base
	closed *bool
}

func (c closeTwice) Close() error {
	if *c.closed {
		return errors.New("already closed")
	}
	*c.closed = true
	return c.Device.Close()
}

func (c closeTwice) SetPin(ctx context.Context, pin string, level driver.PinLevel) error {
	if *c.closed {
		return errors.New("board unavailable")
	}
	return c.Device.SetPin(ctx, pin, level)
}

func TestCloseNotIdempotent(t *testing.T) {
	err := check(t, func(d *sim.Device) driver.Device { return closeTwice{base{d}, new(bool)} })
	wantViolation(t, err, "close", "Close twice: already closed")
	wantViolation(t, err, "close", "SetPin(reset, high) after Close", "does not wrap \"device closed\"")
}

// stuckConsole's console Close does not end a pending Read.
type stuckConsole struct{ base }

func (s stuckConsole) OpenConsole(ctx context.Context) (io.ReadWriteCloser, error) {
	rw, err := s.Device.OpenConsole(ctx)
	if err != nil {
		return nil, err
	}
	return &deafClose{ReadWriteCloser: rw, done: make(chan struct{})}, nil
}

// deafClose's Close returns at once and ends the stream only after 3s.
type deafClose struct {
	io.ReadWriteCloser
	once sync.Once
	done chan struct{}
}

func (d *deafClose) Close() error {
	d.once.Do(func() {
		go func() {
			time.Sleep(3 * time.Second)
			_ = d.ReadWriteCloser.Close()
		}()
	})
	return nil
}

func TestConsoleCloseThatLeavesReadPending(t *testing.T) {
	t.Parallel()
	err := check(t, func(d *sim.Device) driver.Device { return stuckConsole{base{d}} }, drivertest.Timeout(time.Second))
	wantViolation(t, err, "console", "console Close did not end a pending Read")
}

func TestSkipLeavesACheckOut(t *testing.T) {
	var logged []string
	err := check(t, func(d *sim.Device) driver.Device { return plainErrors{base{d}} },
		drivertest.Skip("pins", "the wrapper loses pin errors"),
		drivertest.Skip("console-busy", "the wrapper loses console errors"),
		drivertest.Skip("storage", "the wrapper loses storage errors"),
		drivertest.Skip("context", "the wrapper loses pin errors"),
		drivertest.Skip("close", "the wrapper loses storage errors"),
		generous,
		drivertest.Logf(func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) }))
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(logged, "\n")
	for _, want := range []string{"pins: skipped: the wrapper loses pin errors", "console: console-busy skipped: the wrapper loses console errors"} {
		if !strings.Contains(joined, want) {
			t.Errorf("the log lacks %q:\n%s", want, joined)
		}
	}
}

// ExampleCheck runs the contract against the simulated DUT. A driver's own
// test would rather call TestDevice:
//
//	func TestContract(t *testing.T) {
//		drivertest.TestDevice(t, func(t *testing.T) driver.Device { ... }, opts...)
//	}
func ExampleCheck() {
	dir, err := os.MkdirTemp("", "drivertest-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	n := 0
	open := func() (driver.Device, error) {
		n++ // a fresh device, with a fresh disk, for every check
		return sim.NewDevice("sim-0", "SIM00000", nil, filepath.Join(dir, fmt.Sprint(n)), sim.Options{})
	}
	err = drivertest.Check(open,
		drivertest.Console(drivertest.ConsoleSpec{Boot: []string{"SimBIOS 1.0 (sim-0)\r\n", "No bootable device."}}),
		drivertest.HostStorageWhilePowered(), // as package sim documents
		drivertest.ConfigKey("tags", "lab-1"),
	)
	fmt.Println("violations:", err)
	// Output: violations: <nil>
}

// goneWithoutSentinel's ReadPower loses ErrGone once the device vanished.
type goneWithoutSentinel struct{ base }

func (g goneWithoutSentinel) ReadPower(ctx context.Context) (driver.PowerReading, error) {
	r, err := g.Device.ReadPower(ctx)
	if errors.Is(err, driver.ErrGone) {
		return r, errors.New("meter: no answer")
	}
	return r, err
}

func TestVanishedDeviceWithoutErrGone(t *testing.T) {
	unplug := drivertest.Unplug(func(dev driver.Device) { dev.(unwrapper).Sim().Unplug() })
	if err := check(t, func(d *sim.Device) driver.Device { return base{d} }, unplug, generous); err != nil {
		t.Fatalf("the good device fails the gone check: %v", err)
	}
	err := check(t, func(d *sim.Device) driver.Device { return goneWithoutSentinel{base{d}} }, unplug)
	wantViolation(t, err, "gone", "ReadPower after the device vanished", "does not wrap \"device gone\"")
}

// elsewhere's block target is a new file every time: not the storage.
type elsewhere struct {
	base
	dir string
	n   *int
}

func (e elsewhere) BlockTarget(ctx context.Context) (string, error) {
	if _, err := e.Device.BlockTarget(ctx); err != nil {
		return "", err
	}
	*e.n++
	p := filepath.Join(e.dir, fmt.Sprint(*e.n))
	return p, os.WriteFile(p, make([]byte, 4096), 0o644)
}

func TestBlockTargetThatIsNotTheStorage(t *testing.T) {
	dir := t.TempDir()
	err := check(t, func(d *sim.Device) driver.Device { return elsewhere{base{d}, dir, new(int)} })
	wantViolation(t, err, "storage", "does not hold what was written to it")
}

// stuckPin's SetPin drives every pin high, whatever the level asked for.
type stuckPin struct{ base }

func (s stuckPin) SetPin(ctx context.Context, pin string, level driver.PinLevel) error {
	if level == driver.PinLow || level == driver.PinFloating {
		level = driver.PinHigh
	}
	return s.Device.SetPin(ctx, pin, level)
}

func TestPinThatIgnoresTheLevel(t *testing.T) {
	err := check(t, func(d *sim.Device) driver.Device { return stuckPin{base{d}} })
	wantViolation(t, err, "pins", "after SetPin(a, low) the pin is high")
}
