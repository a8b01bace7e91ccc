package sim

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/simimage"
)

func TestConsoleStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		d := newTestDevice(t, Options{})
		con, err := d.OpenConsole(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.OpenConsole(ctx); !errors.Is(err, ErrConsoleBusy) {
			t.Errorf("second OpenConsole = %v, want ErrConsoleBusy", err)
		}
		// Close ends a pending Read.
		readErr := make(chan error, 1)
		go func() {
			_, err := con.Read(make([]byte, 10))
			readErr <- err
		}()
		synctest.Wait()
		select {
		case err := <-readErr:
			t.Fatalf("Read returned %v with nothing to read", err)
		default:
		}
		if err := con.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-readErr; !errors.Is(err, os.ErrClosed) {
			t.Errorf("pending Read after Close = %v, want os.ErrClosed", err)
		}
		if _, err := con.Read(make([]byte, 1)); !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read after Close = %v", err)
		}
		if _, err := con.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
			t.Errorf("Write after Close = %v", err)
		}
		if err := con.Close(); err != nil {
			t.Errorf("second Close = %v", err)
		}
		// Once closed, the console can be opened again.
		con2, err := d.OpenConsole(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := con2.Close(); err != nil {
			t.Fatal(err)
		}
		// Writing to a powered-off board is dropped silently.
		con3, err := d.OpenConsole(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer con3.Close()
		if n, err := con3.Write([]byte("hello")); n != 5 || err != nil {
			t.Errorf("Write while off = %d, %v; want 5, nil", n, err)
		}
		if n, err := con3.Read(nil); n != 0 || err != nil {
			t.Errorf("Read(nil) = %d, %v", n, err)
		}
	})
}

func TestOutputWithoutConsoleIsLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newTestDevice(t, Options{})
		flash(t, d, simimage.Spec{Version: "3"})
		if err := d.PowerOn(t.Context()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(DefaultBootTime / 2)
		tm := openTerm(t, d)
		got := tm.expect("sim-0 login: ")
		if strings.Contains(got, "SimBIOS") || !strings.Contains(got, "Welcome to") {
			t.Errorf("console opened mid-boot shows %q; want only what came after it opened", got)
		}
	})
}

func TestPowerCycles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		d := newTestDevice(t, Options{})
		flash(t, d, simimage.Spec{Version: "3"})
		tm := openTerm(t, d)
		if d.PowerState() != PowerStateOff {
			t.Fatal("a new device is on")
		}
		if r, err := d.ReadPower(ctx); err != nil || r != (driver.PowerReading{}) {
			t.Errorf("power while off = %+v, %v; want zero", r, err)
		}
		if err := d.PowerOn(ctx); err != nil {
			t.Fatal(err)
		}
		if r, err := d.ReadPower(ctx); err != nil || r.Watts != ampsBooting*supplyVolts || r.Volts != supplyVolts {
			t.Errorf("power while booting = %+v, %v", r, err)
		}
		// A second PowerOn does not restart the boot.
		tm.expect("Welcome to")
		if err := d.PowerOn(ctx); err != nil {
			t.Fatal(err)
		}
		tm.login()
		tm.send("yes\r")
		tm.expect("y\r\ny\r\n")

		// PowerOff stops output at once, and input is dropped while off.
		if err := d.PowerOff(ctx); err != nil {
			t.Fatal(err)
		}
		if d.PowerState() != PowerStateOff {
			t.Error("PowerOff left the power on")
		}
		seen := len(tm.all())
		tm.send("echo while-off\r")
		time.Sleep(time.Hour)
		synctest.Wait()
		if got := tm.all()[seen:]; got != "" {
			t.Errorf("output after PowerOff returned: %q", got)
		}
		if err := d.PowerOff(ctx); err != nil {
			t.Errorf("second PowerOff = %v", err)
		}

		// The same console shows the next boot.
		tm.skip()
		if err := d.ForceOn(ctx); err != nil {
			t.Fatal(err)
		}
		tm.login()
		if got := tm.run("echo $?"); got != "0\r\n" {
			t.Errorf("echo $? = %q", got)
		}
		if strings.Contains(tm.all()[seen:], "while-off") {
			t.Error("input written while off reached the board")
		}
		if err := d.ForceOff(ctx); err != nil {
			t.Fatal(err)
		}
		if d.PowerState() != PowerStateOff {
			t.Error("ForceOff left the power on")
		}
	})
}

func TestUnplug(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		d := newTestDevice(t, Options{})
		flash(t, d, simimage.Spec{Version: "3"})
		tm := openTerm(t, d)
		if err := d.PowerOn(ctx); err != nil {
			t.Fatal(err)
		}
		tm.expect("Welcome to")
		time.Sleep(DefaultBootTime * 15 / 100) // into the multi-user.target message
		synctest.Wait()
		d.Unplug()
		// The console ends, after delivering what was printed before.
		if err := tm.waitEnd(); !isGone(err) {
			t.Errorf("console read ended with %v, want ErrGone", err)
		}
		if !strings.Contains(tm.all(), "multi-user.target") {
			t.Errorf("output printed before the unplug was lost: %q", tm.all())
		}
		if _, err := tm.con.Write([]byte("x")); !isGone(err) {
			t.Errorf("Write after Unplug = %v", err)
		}
		checkAllFail(t, ctx, d, isGone, "ErrGone")
		if d.PowerState() != PowerStateOff {
			t.Error("an unplugged device reports power on")
		}
		d.Unplug() // twice is harmless
		if err := d.Close(); err != nil {
			t.Errorf("Close after Unplug = %v", err)
		}
	})
}

func TestClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		d := newTestDevice(t, Options{})
		flash(t, d, simimage.Spec{Version: "3"})
		tm := openTerm(t, d)
		if err := d.PowerOn(ctx); err != nil {
			t.Fatal(err)
		}
		tm.login()
		tm.send("yes\r")
		tm.expect("y\r\n")
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		// The board goroutine has stopped: synctest.Test would fail if
		// it were still running when this function returns.
		if err := tm.waitEnd(); !errors.Is(err, ErrClosed) || !errors.Is(err, os.ErrClosed) {
			t.Errorf("console read ended with %v, want ErrClosed and os.ErrClosed", err)
		}
		checkAllFail(t, ctx, d, func(err error) bool { return errors.Is(err, ErrClosed) }, "ErrClosed")
		if err := d.Close(); err != nil {
			t.Errorf("second Close = %v", err)
		}
	})
}

// checkAllFail checks that every operation of d fails with an error ok
// accepts.
func checkAllFail(t *testing.T, ctx context.Context, d *Device, ok func(error) bool, want string) {
	t.Helper()
	_, errBT := d.BlockTarget(ctx)
	_, errCon := d.OpenConsole(ctx)
	_, errPow := d.ReadPower(ctx)
	_, errCfg := d.Config(ctx)
	for name, err := range map[string]error{
		"PowerOn":     d.PowerOn(ctx),
		"PowerOff":    d.PowerOff(ctx),
		"ForceOn":     d.ForceOn(ctx),
		"ForceOff":    d.ForceOff(ctx),
		"Rescue":      d.Rescue(ctx),
		"Reset":       d.Reset(ctx),
		"SetStorage":  d.SetStorage(ctx, driver.StorageHost),
		"BlockTarget": errBT,
		"OpenConsole": errCon,
		"SetPin":      d.SetPin(ctx, "a", driver.PinLow),
		"ReadPower":   errPow,
		"Config":      errCfg,
		"SetConfig":   d.SetConfig(ctx, "name", "x"),
	} {
		if !ok(err) {
			t.Errorf("%s = %v, want an error wrapping %s", name, err, want)
		}
	}
}

func TestCanceledContext(t *testing.T) {
	d := newTestDevice(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	checkAllFail(t, ctx, d, func(err error) bool { return errors.Is(err, context.Canceled) }, "context.Canceled")
	if d.PowerState() != PowerStateOff {
		t.Error("PowerOn with a canceled context powered the device on")
	}
	if _, err := New(Options{Dir: t.TempDir()}).Discover(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Discover = %v", err)
	}
}

func TestConfigurer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		d := newTestDevice(t, Options{})
		cfg, err := d.Config(ctx)
		if err != nil || cfg["name"] != "sim-0" || cfg["serial"] != "SIM00000" || cfg["tags"] != "sim,virtual,even" {
			t.Errorf("Config = %v, %v", cfg, err)
		}
		if err := d.SetConfig(ctx, "tags", "a, b"); err != nil || !slices.Equal(d.Tags(), []string{"a", "b"}) {
			t.Errorf("SetConfig(tags) = %v; tags %q", err, d.Tags())
		}
		if err := d.SetConfig(ctx, "tags", "a,,b"); !errors.Is(err, driver.ErrBadTags) {
			t.Errorf("SetConfig(tags, a,,b) = %v", err)
		}
		for _, kv := range [][2]string{{"name", ""}, {"name", "two words"}, {"serial", "X"}, {"color", "red"}} {
			if err := d.SetConfig(ctx, kv[0], kv[1]); err == nil {
				t.Errorf("SetConfig(%q, %q) succeeded", kv[0], kv[1])
			}
		}
		if err := d.SetConfig(ctx, "name", "bench-7"); err != nil || d.Name() != "bench-7" {
			t.Fatalf("SetConfig(name) = %v; name %q", err, d.Name())
		}
		// The new name is the host name from the next boot on.
		flash(t, d, simimage.Spec{Version: "1"})
		tm := openTerm(t, d)
		if err := d.PowerOn(ctx); err != nil {
			t.Fatal(err)
		}
		tm.expect("SimBIOS 1.0 (bench-7)")
		tm.expect("bench-7 login: ")
		if got := driver.Describe(d); got != "bench-7 (serial SIM00000) [a,b]" {
			t.Errorf("Describe = %q", got)
		}
	})
}

func TestCapabilities(t *testing.T) {
	var dev driver.Device = newTestDevice(t, Options{})
	if _, err := driver.As[driver.Power](dev); err != nil {
		t.Error(err)
	}
	if _, err := driver.As[driver.StorageMux](dev); err != nil {
		t.Error(err)
	}
	if _, err := driver.As[driver.Closer](dev); err != nil {
		t.Error(err)
	}
	if dev.Driver() != DriverName || dev.Serial() != "SIM00000" {
		t.Errorf("Driver %q, Serial %q", dev.Driver(), dev.Serial())
	}
}

// TestConcurrentUse hammers a device from several goroutines, on real
// timers, for the race detector; then Close must stop everything.
func TestConcurrentUse(t *testing.T) {
	d := newTestDevice(t, Options{BootTime: 5 * time.Millisecond})
	flash(t, d, simimage.Spec{Version: "c"})
	con, err := d.OpenConsole(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		_, _ = io.Copy(io.Discard, con)
	}()
	ctx := context.Background()
	var wg sync.WaitGroup
	ops := []func() error{
		func() error { return d.PowerOn(ctx) },
		func() error { return d.PowerOff(ctx) },
		func() error { return d.Rescue(ctx) },
		func() error {
			if err := d.Reset(ctx); err != nil && !errors.Is(err, ErrPoweredOff) {
				return err
			}
			return nil
		},
		func() error { _, err := con.Write([]byte("root\ryes\r\x03echo hi\r")); return err },
		func() error { _, err := d.ReadPower(ctx); return err },
		func() error { return d.SetPin(ctx, PinReset, driver.PinLow) },
		func() error { return d.SetPin(ctx, PinReset, driver.PinFloating) },
		func() error { return d.SetStorage(ctx, driver.StorageDUT) },
	}
	for i, op := range ops {
		wg.Go(func() {
			for range 30 {
				if err := op(); err != nil {
					t.Errorf("op %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	<-drained
	if d.PowerState() != PowerStateOff {
		t.Error("Close left the power on")
	}
}

func TestDiscoverFromEnv(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "disks")
	t.Setenv(EnvDevices, "3")
	t.Setenv(EnvDir, dir)
	t.Setenv(EnvDiskSize, "1MiB")
	t.Setenv(EnvBootTime, "10ms")
	// An existing disk is used as it is, never truncated or resized.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	img := mustEncode(t, simimage.Spec{Version: "pre"})
	if err := os.WriteFile(filepath.Join(dir, "sim-1.disk"), img, 0o644); err != nil {
		t.Fatal(err)
	}

	drv, err := driver.Lookup(DriverName)
	if err != nil {
		t.Fatal(err)
	}
	devs, err := drv.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range devs {
		got = append(got, d.String())
	}
	want := []string{
		"sim-0 (serial SIM00000) [sim,virtual,even]",
		"sim-1 (serial SIM00001) [sim,virtual,odd]",
		"sim-2 (serial SIM00002) [sim,virtual,even]",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Discover = %q, want %q", got, want)
	}
	if caps := devs[0].Capabilities; !slices.Equal(caps, driver.CapabilitiesOf(&Device{})) || len(caps) != 9 {
		t.Errorf("Capabilities = %q", caps)
	}
	if !strings.Contains(devs[0].Ephemeral, "only in the process that opened it") {
		t.Errorf("Ephemeral = %q", devs[0].Ephemeral)
	}
	for i, size := range []int64{1 << 20, int64(len(img)), 1 << 20} {
		fi, err := os.Stat(filepath.Join(dir, devs[i].Name+".disk"))
		if err != nil || fi.Size() != size {
			t.Errorf("disk of %s: %v, %v; want %d bytes", devs[i].Name, fi, err, size)
		}
	}
	odd, err := driver.Select(devs, "", []string{"odd"})
	if err != nil || len(odd) != 1 || odd[0].Name != "sim-1" {
		t.Errorf("Select(odd) = %v, %v", odd, err)
	}
	if bySerial, err := driver.Select(devs, "SIM00002", nil); err != nil || bySerial[0].Name != "sim-2" {
		t.Errorf("Select(SIM00002) = %v, %v", bySerial, err)
	}

	// Open gives a fresh device each time: what one changed ends with it.
	open := func(info driver.Info) *Device {
		t.Helper()
		d, err := drv.Open(context.Background(), info)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.(driver.Closer).Close() })
		return d.(*Device)
	}
	first := open(devs[1])
	if err := first.SetConfig(context.Background(), "name", "renamed"); err != nil {
		t.Fatal(err)
	}
	if err := first.SetStorage(context.Background(), driver.StorageHost); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	sim1 := open(devs[1])
	if sim1 == first || sim1.Name() != "sim-1" || sim1.StorageState() != driver.StorageOff {
		t.Errorf("Open after Close = %s with storage %s, want a fresh sim-1 with storage off", sim1.Name(), sim1.StorageState())
	}
	if _, err := drv.Open(context.Background(), driver.Info{Driver: DriverName, Name: "sim-3"}); !errors.Is(err, driver.ErrNoDevice) {
		t.Errorf("Open(sim-3) = %v, want ErrNoDevice", err)
	}

	// The configured boot time is used: the prompt comes quickly.
	tm := openTerm(t, sim1)
	if err := sim1.SetStorage(context.Background(), driver.StorageDUT); err != nil {
		t.Fatal(err)
	}
	if err := sim1.PowerOn(context.Background()); err != nil {
		t.Fatal(err)
	}
	tm.expect("Welcome to Jumpstarter Sim Linux pre!")
	tm.expect("sim-1 login: ")

	t.Setenv(EnvDevices, "0")
	if none, err := drv.Discover(context.Background()); err != nil || len(none) != 0 {
		t.Errorf("Discover with %s=0 = %v, %v", EnvDevices, none, err)
	}
}

func TestDiscoverDefaults(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	for _, v := range []string{EnvDevices, EnvDir, EnvDiskSize, EnvBootTime} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	drv, err := driver.Lookup(DriverName)
	if err != nil {
		t.Fatal(err)
	}
	devs, err := drv.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != DefaultDevices {
		t.Fatalf("Discover found %d devices, want %d", len(devs), DefaultDevices)
	}
	for _, d := range devs {
		fi, err := os.Stat(filepath.Join(DefaultDir(), d.Name+".disk"))
		if err != nil || fi.Size() != DefaultDiskSize {
			t.Errorf("disk of %s: %v, %v", d.Name, fi, err)
		}
	}
}

func TestDiscoverBadEnv(t *testing.T) {
	for _, c := range []struct{ env, value, want string }{
		{EnvDevices, "two", "DUT_SIM_DEVICES=\"two\" is not a device count"},
		{EnvDevices, "-1", "DUT_SIM_DEVICES"},
		{EnvDevices, "1001", "from 0 to 1000"},
		{EnvDir, " ", "DUT_SIM_DIR is set but empty"},
		{EnvDiskSize, "big", "DUT_SIM_DISK_SIZE=\"big\" is not a size"},
		{EnvDiskSize, "1K", "DUT_SIM_DISK_SIZE=\"1K\" is too small"},
		{EnvBootTime, "300", "DUT_SIM_BOOT_TIME=\"300\" is not a boot time"},
		{EnvBootTime, "-1s", "positive Go duration"},
		{EnvBootTime, "0s", "DUT_SIM_BOOT_TIME"},
		{EnvBootTime, "2h", "up to 1h0m0s"},
	} {
		t.Run(c.env+"="+c.value, func(t *testing.T) {
			t.Setenv(EnvDir, t.TempDir())
			t.Setenv(c.env, c.value)
			drv, err := driver.Lookup(DriverName)
			if err != nil {
				t.Fatal(err)
			}
			devs, err := drv.Discover(context.Background())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Discover = %v, %v; want an error saying %q", devs, err, c.want)
			}
		})
	}
	t.Run("unusable dir", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Setenv(EnvDir, file)
		drv, _ := driver.Lookup(DriverName)
		if _, err := drv.Discover(context.Background()); err == nil || !strings.Contains(err.Error(), EnvDir) {
			t.Errorf("Discover = %v, want an error naming %s", err, EnvDir)
		}
	})
}

func TestNewDriver(t *testing.T) {
	dir := t.TempDir()
	drv := New(Options{Devices: 4, Dir: dir, DiskSize: 128 << 10})
	if drv.Name() != "sim" {
		t.Errorf("Name = %q", drv.Name())
	}
	devs, err := drv.Discover(context.Background())
	if err != nil || len(devs) != 4 {
		t.Fatalf("Discover = %d devices, %v", len(devs), err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "sim-3.disk")); err != nil || fi.Size() != 128<<10 {
		t.Errorf("sim-3.disk: %v, %v", fi, err)
	}
	if devs, err := New(Options{Devices: -1, Dir: dir}).Discover(context.Background()); err != nil || len(devs) != 0 {
		t.Errorf("Devices -1: %v, %v", devs, err)
	}
	for _, o := range []Options{
		{Devices: MaxDevices + 1, Dir: dir},
		{DiskSize: 100, Dir: dir},
		{BootTime: -time.Second, Dir: dir},
		{Users: map[string]string{"": "x"}, Dir: dir},
	} {
		if _, err := New(o).Discover(context.Background()); err == nil {
			t.Errorf("Discover with %+v succeeded", o)
		}
	}
}
