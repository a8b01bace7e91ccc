package harness_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/klauspost/compress/zstd"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/console"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/faketb"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/simimage"
)

// images are built once per test binary.
type images struct{ a, b, blank, corrupt, panics string }

func buildImages(t *testing.T) images {
	t.Helper()
	dir := t.TempDir()
	im := images{
		a: filepath.Join(dir, "a.img"), b: filepath.Join(dir, "b.img"),
		blank: filepath.Join(dir, "blank.img"), corrupt: filepath.Join(dir, "corrupt.img"),
		panics: filepath.Join(dir, "panic.img"),
	}
	require.NoError(t, simimage.WriteFile(im.a, simimage.Spec{Version: "1.0.0-A"}))
	require.NoError(t, simimage.WriteFile(im.b, simimage.Spec{Version: "2.0.0-B"}))
	require.NoError(t, simimage.WriteBlank(im.blank, 1<<20))
	require.NoError(t, simimage.WriteCorrupt(im.corrupt, simimage.Spec{Version: "9"}))
	require.NoError(t, simimage.WriteFile(im.panics, simimage.Spec{Version: "3.0.0-P", Panic: true}))
	return im
}

// simEnv configures the harness for the simulated DUT in private folders and
// clears every other DUT_* variable the environment might set.
func simEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "DUT_") {
			t.Setenv(k, "")
		}
	}
	t.Setenv("DUT_DRIVER", "sim")
	t.Setenv("DUT_SIM_DIR", t.TempDir())
	t.Setenv("DUT_LOCK_DIR", t.TempDir())
	t.Setenv("DUT_SIM_BOOT_TIME", "50ms")
	t.Setenv("DUT_SIM_DEVICES", "2")
	t.Setenv("DUT_ACQUIRE_TIMEOUT", "10s")
	t.Setenv("DUT_BOOT_TIMEOUT", "20s")
}

func simDevice(t *testing.T, d *harness.DUT) *sim.Device {
	t.Helper()
	dev, ok := d.Device().(*sim.Device)
	require.True(t, ok, "device is %T", d.Device())
	return dev
}

func TestSkipsWithoutConfiguredDUT(t *testing.T) {
	simEnv(t)
	t.Setenv("DUT_DRIVER", "")
	f := faketb.New(t)
	f.Run(func(tb testing.TB) { harness.Acquire(tb) })
	assert.True(t, f.Skipped())
	assert.False(t, f.Failed())
	assert.Contains(t, f.Message(), "set DUT_DRIVER")
	assert.Contains(t, f.Message(), "DUT_REQUIRE=1")

	t.Setenv("DUT_REQUIRE", "1")
	f = faketb.New(t)
	f.Run(func(tb testing.TB) { harness.Acquire(tb) })
	assert.False(t, f.Skipped())
	assert.True(t, f.Failed())
	assert.Contains(t, f.Message(), "DUT_REQUIRE is set")
}

func TestBadConfigurationFailsClearly(t *testing.T) {
	im := buildImages(t)
	cases := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"unknown driver", map[string]string{"DUT_DRIVER": "nosuch"}, []string{`unknown driver "nosuch"`, "registered drivers are", "sim"}},
		{"malformed tags", map[string]string{"DUT_TAGS": "sim,,even"}, []string{"DUT_TAGS", "malformed tag list", "tag 2 is empty"}},
		{"missing image", map[string]string{"DUT_IMAGE": "/nonexistent/os.img"}, []string{"DUT_IMAGE", "/nonexistent/os.img does not exist"}},
		{"no such DUT", map[string]string{"DUT_NAME": "sim-7"}, []string{`no matching device: wanted name "sim-7"`, "found sim-0", "sim-1"}},
		{"no device with tags", map[string]string{"DUT_TAGS": "sim,arm64"}, []string{`tags "sim,arm64"`, "found sim-0"}},
		{"bad timeout", map[string]string{"DUT_ACQUIRE_TIMEOUT": "soon"}, []string{"DUT_ACQUIRE_TIMEOUT", "want a duration"}},
		{"bad require", map[string]string{"DUT_REQUIRE": "maybe"}, []string{"DUT_REQUIRE"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			simEnv(t)
			t.Setenv("DUT_IMAGE", im.a)
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			f := faketb.New(t)
			f.Run(func(tb testing.TB) { harness.Acquire(tb) })
			require.True(t, f.Failed(), "bad configuration must fail, not skip")
			for _, w := range c.want {
				assert.Contains(t, f.Message(), w)
			}
		})
	}
}

// TestFlashBootProveAndSwitchImages is the harness's end-to-end path on the
// simulated DUT: flash A, boot, prove A from the console; flash B, power
// cycle, prove B; then cleanup leaves the DUT off, storage disconnected, the
// lock free and the console log written.
func TestFlashBootProveAndSwitchImages(t *testing.T) {
	t.Parallel()
	im := buildImages(t)
	opts := append(simDrivers(t, 2), harness.WithImage(im.a))
	f := faketb.New(t)
	var dev *sim.Device
	var lockPath string
	f.Run(func(tb testing.TB) {
		dut := harness.Acquire(tb, opts...)
		dev = simDevice(t, dut)
		lockPath = dut.Session().LockPath()
		assert.Equal(t, sim.PowerState("off"), dev.PowerState())
		assert.Equal(t, driver.StorageOff, dev.StorageState())

		rep := dut.Flash()
		assert.Equal(t, driver.StorageOff, dev.StorageState(), "flash disconnects the storage again")
		dut.PowerOn()
		assert.Equal(t, driver.StorageDUT, dev.StorageState())
		sh := dut.Login()
		assert.Equal(t, "1.0.0-A\n", sh.Run("cat /etc/dut-release"))

		dut.FlashImage(im.b)
		dut.PowerOn()
		sh = dut.Login()
		assert.Equal(t, "2.0.0-B\n", sh.Run("cat /etc/dut-release"))
		out, code := sh.RunCode("cat /nope")
		assert.Equal(t, 1, code)
		assert.Contains(t, out, "No such file")
		_ = rep
	})
	require.False(t, f.Failed(), f.Message())
	assert.Equal(t, sim.PowerState("off"), dev.PowerState(), "cleanup powers the DUT off")
	assert.Equal(t, driver.StorageOff, dev.StorageState(), "cleanup disconnects the storage")
	_, held := readHolder(t, lockPath)
	assert.False(t, held, "cleanup releases the lock")

	for _, k := range []string{harness.AttrDriver, harness.AttrName, harness.AttrSerial, harness.AttrImage, harness.AttrImageSHA256, harness.AttrFlashFormat, harness.AttrFlashBytes, harness.AttrFlashSeconds, harness.AttrFlashMBps, harness.AttrFlashMode, harness.AttrFlashMappedBytes, harness.AttrFlashMappedFraction, harness.AttrFlashZeroedBytes, harness.AttrFlashVerified, harness.AttrFlashVerifySeconds, harness.AttrFlashReport, harness.AttrBootSeconds, harness.AttrConsoleLog, harness.AttrPowerWatts, harness.AttrPowerVolts, harness.AttrPowerAmps} {
		v, ok := f.AttrValue(k)
		assert.True(t, ok && v != "", "property %s", k)
	}
	img, _ := f.AttrValue(harness.AttrImage)
	assert.Equal(t, im.b, img, "the last flashed image")
	assert.Equal(t, 1, f.AttrCount(harness.AttrImage), "two flashes, one property")
	assert.Equal(t, 1, f.AttrCount(harness.AttrBootSeconds), "two logins, one property")
	secs, _ := f.AttrValue(harness.AttrBootSeconds)
	assert.NotContains(t, secs, "\n")
	_, failure := f.AttrValue(harness.AttrFailure)
	assert.False(t, failure)

	// The meter was read while the DUT was still on (the sim draws a few
	// watts then, 0 when off).
	w, _ := f.AttrValue(harness.AttrPowerWatts)
	watts, err := strconv.ParseFloat(w, 64)
	require.NoError(t, err)
	assert.Greater(t, watts, 0.0, "read before power-off")

	// The flash report artifact describes the last flash.
	var fr map[string]any
	b, err := os.ReadFile(filepath.Join(f.Dir, harness.FlashReportFile))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &fr))
	assert.Equal(t, im.b, fr["image"])
	sum, _ := f.AttrValue(harness.AttrImageSHA256)
	assert.Equal(t, fileSHA256(t, im.b), sum, "the property is the image's exact hash")
	assert.Equal(t, sum, fr["sha256"])
	assert.Equal(t, true, fr["verified"])
	assert.Greater(t, fr["mapped_bytes"], 0.0)
	rp, _ := f.AttrValue(harness.AttrFlashReport)
	assert.Equal(t, filepath.Join(f.Dir, harness.FlashReportFile), rp)

	log, err := os.ReadFile(filepath.Join(f.Dir, harness.ConsoleLogFile))
	require.NoError(t, err)
	assert.Contains(t, string(log), "1.0.0-A")
	assert.Contains(t, string(log), "2.0.0-B")
	assert.NotContains(t, string(log), "\x1b[", "the log is cleaned of escape codes")
	raw, err := os.ReadFile(filepath.Join(f.Dir, harness.ConsoleRawFile))
	require.NoError(t, err)
	assert.Contains(t, string(raw), "\x1b[", "the raw log keeps every byte")
}

// fileSHA256 returns the hex SHA-256 of the file at path.
func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// zstdFile writes the zstd-compressed copy of the file at path beside it.
func zstdFile(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	enc, err := zstd.NewWriter(nil)
	require.NoError(t, err)
	out := path + ".zst"
	require.NoError(t, os.WriteFile(out, enc.EncodeAll(raw, nil), 0o644))
	return out
}

// TestTheImageHashFinishesAfterTheFlashAndIsRecordedExactly: a first
// flash of an image returns before its SHA-256 is known (the write does
// not wait for it); the property and flash.json carry the exact hash by
// the end of the test, also when the test ends right after the flash.
func TestTheImageHashFinishesAfterTheFlashAndIsRecordedExactly(t *testing.T) {
	t.Parallel()
	// A compressed image, hashed on a descriptor of its own: a new file,
	// which the hash cache cannot know.
	img := zstdFile(t, buildImages(t).a)
	opts := append(simDrivers(t, 1), harness.WithImage(img))
	f := faketb.New(t)
	f.Run(func(tb testing.TB) {
		rep := harness.Acquire(tb, opts...).Flash()
		assert.Empty(t, rep.SHA256, "Flash returned before the hash")
		require.NotNil(t, rep.Hash)
	})
	require.False(t, f.Failed(), f.Message())
	want := fileSHA256(t, img)
	sum, _ := f.AttrValue(harness.AttrImageSHA256)
	assert.Equal(t, want, sum)
	var fr map[string]any
	b, err := os.ReadFile(filepath.Join(f.Dir, harness.FlashReportFile))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &fr))
	assert.Equal(t, want, fr["sha256"], "flash.json is written again with the hash")
}

func TestInfrastructureVersusProductFailures(t *testing.T) {
	im := buildImages(t)
	cases := []struct {
		name, image string
		infra       bool
		want        string
	}{
		{"blank image", im.blank, true, "No bootable device"},
		{"corrupt image", im.corrupt, true, "image corrupt"},
		{"kernel panic", im.panics, false, "Kernel panic"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			opts := append(simDrivers(t, 2), harness.WithImage(c.image))
			f := faketb.New(t)
			var dev *sim.Device
			start := time.Now()
			f.Run(func(tb testing.TB) {
				dut := harness.Acquire(tb, opts...)
				dev = simDevice(t, dut)
				dut.Flash()
				dut.PowerOn()
				dut.Login()
				t.Error("Login must fail")
			})
			require.True(t, f.Failed())
			assert.Less(t, time.Since(start), 10*time.Second, "a watcher fails the login at once, not the boot timeout")
			assert.Contains(t, f.Message(), c.want)
			v, _ := f.AttrValue(harness.AttrFailure)
			if c.infra {
				assert.Equal(t, "infrastructure", v)
				assert.Contains(t, f.Message(), "infrastructure failure")
			} else {
				assert.Empty(t, v, "a kernel panic is the product's failure")
			}
			assert.Equal(t, sim.PowerState("off"), dev.PowerState())
		})
	}
}

func TestDeviceGoneMidTestIsInfrastructure(t *testing.T) {
	t.Parallel()
	im := buildImages(t)
	opts := append(simDrivers(t, 2), harness.WithImage(im.a))
	f := faketb.New(t)
	f.Run(func(tb testing.TB) {
		dut := harness.Acquire(tb, opts...)
		dut.Flash()
		dut.PowerOn()
		sh := dut.Login()
		simDevice(t, dut).Unplug()
		sh.Run("echo still there?")
	})
	require.True(t, f.Failed())
	v, _ := f.AttrValue(harness.AttrFailure)
	assert.Equal(t, "infrastructure", v, f.Message())
}

func TestSubtestGetsItsOwnEvidence(t *testing.T) {
	t.Parallel()
	im := buildImages(t)
	opts := append(simDrivers(t, 2), harness.WithImage(im.a))
	parent := faketb.New(t)
	child := faketb.New(t)
	parent.Run(func(tb testing.TB) {
		dut := harness.Acquire(tb, opts...)
		dut.Flash()
		dut.PowerOn()
		sh := dut.Login()
		child.Run(func(ctb testing.TB) {
			dut.Sub(ctb)
			sh.Run("echo in-the-subtest")
		})
		sh.Run("echo after-the-subtest")
	})
	require.False(t, parent.Failed(), parent.Message())
	require.False(t, child.Failed(), child.Message())
	for _, k := range []string{harness.AttrName, harness.AttrImageSHA256, harness.AttrConsoleLog} {
		_, ok := child.AttrValue(k)
		assert.True(t, ok, "subtest property %s", k)
	}
	sub, err := os.ReadFile(filepath.Join(child.Dir, harness.ConsoleLogFile))
	require.NoError(t, err)
	assert.Contains(t, string(sub), "in-the-subtest")
	assert.NotContains(t, string(sub), "after-the-subtest")
	assert.NotContains(t, string(sub), "login:", "the subtest's slice starts at the subtest")
	whole, err := os.ReadFile(filepath.Join(parent.Dir, harness.ConsoleLogFile))
	require.NoError(t, err)
	assert.Contains(t, string(whole), "after-the-subtest")
}

func TestConsoleExpectFailureShowsTheTail(t *testing.T) {
	t.Parallel()
	im := buildImages(t)
	opts := append(simDrivers(t, 2), harness.WithImage(im.a))
	opts = append(opts, harness.WithCommandTimeout(300*time.Millisecond))
	f := faketb.New(t)
	f.Run(func(tb testing.TB) {
		dut := harness.Acquire(tb, opts...)
		dut.Flash()
		dut.PowerOn()
		dut.Login()
		dut.Console().SendLine("echo marker")
		dut.Console().Expect(console.String("this never appears"))
	})
	require.True(t, f.Failed())
	assert.Contains(t, f.Message(), `"this never appears"`)
	assert.Contains(t, f.Message(), "timed out")
	_, infra := f.AttrValue(harness.AttrFailure)
	assert.False(t, infra)
}

// readHolder reports whether some process holds the lock file at path, by
// trying to take it.
func readHolder(t *testing.T, path string) (string, bool) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		return string(b), true
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return "", false
}

func TestFailureInASubtestFailsTheSubtestOnly(t *testing.T) {
	t.Parallel()
	im := buildImages(t)
	opts := append(simDrivers(t, 2), harness.WithImage(im.a))
	parent, child := faketb.New(t), faketb.New(t)
	parent.Run(func(tb testing.TB) {
		dut := harness.Acquire(tb, opts...)
		dut.Flash()
		dut.PowerOn()
		dut.Login()
		child.Run(func(ctb testing.TB) {
			dut.Sub(ctb).Shell().Run("false")
		})
		dut.Shell().Run("true")
	})
	assert.True(t, child.Failed())
	assert.Contains(t, child.Message(), `command "false" exited with code 1`)
	assert.False(t, parent.Failed(), parent.Message())
}

func TestLoginAfterPowerCycleWaitsForTheNewBoot(t *testing.T) {
	t.Parallel()
	im := buildImages(t)
	opts := append(simDrivers(t, 2), harness.WithImage(im.a))
	f := faketb.New(t)
	f.Run(func(tb testing.TB) {
		dut := harness.Acquire(tb, opts...)
		dut.Flash()
		dut.PowerOn()
		dut.Login()
		dut.PowerCycle()
		start := time.Now()
		dut.Login()
		// The old boot's prompts are behind the cursor: this login is the
		// new boot's 50 ms, not a 5 s nudge after a stale prompt.
		assert.Less(t, time.Since(start), 3*time.Second)
	})
	require.False(t, f.Failed(), f.Message())
}

func TestShortTestTimeoutKeepsMostTimeForTheTest(t *testing.T) {
	simEnv(t)
	im := buildImages(t)
	t.Setenv("DUT_IMAGE", im.a)
	f := faketb.New(t)
	f.Until = time.Now().Add(20 * time.Second) // an IDE's short go test -timeout
	f.Run(func(tb testing.TB) {
		dut := harness.Acquire(tb)
		dut.Flash()
		dut.PowerOn()
		dut.Login()
	})
	require.False(t, f.Failed(), "the default 30 s reserve must not eat a 20 s test: %s", f.Message())
}

// TestAnExplicitCleanupReserveIsKeptWhole: a reserve the user set is not
// silently capped; one that leaves the test no time is their mistake, said
// at once.
func TestAnExplicitCleanupReserveIsKeptWhole(t *testing.T) {
	simEnv(t)
	t.Setenv("DUT_CLEANUP_RESERVE", "30s")
	f := faketb.New(t)
	f.Until = time.Now().Add(20 * time.Second)
	start := time.Now()
	f.Run(func(tb testing.TB) { harness.Acquire(tb) })
	require.True(t, f.Failed())
	assert.Less(t, time.Since(start), 5*time.Second, "said at once, not at the deadline")
	assert.Contains(t, f.Message(), "DUT_CLEANUP_RESERVE=30s leaves nothing")
	v, _ := f.AttrValue(harness.AttrFailure)
	assert.Equal(t, harness.FailureConfiguration, v)

	// Set to 5 s of a 12 s test, the steps end 5 s before the deadline:
	// an expect that cannot match fails near 7 s, and cleanup still powers
	// the DUT off within the reserve.
	t.Setenv("DUT_CLEANUP_RESERVE", "5s")
	t.Setenv("DUT_COMMAND_TIMEOUT", "10m")
	t.Setenv("DUT_IMAGE", buildImages(t).a)
	f = faketb.New(t)
	f.Until = time.Now().Add(12 * time.Second)
	var dev *sim.Device
	start = time.Now()
	f.Run(func(tb testing.TB) {
		dut := harness.Acquire(tb)
		dev = simDevice(t, dut)
		dut.Flash()
		dut.PowerOn()
		dut.Login()
		dut.Console().ExpectString("a line that never comes")
	})
	took := time.Since(start)
	require.True(t, f.Failed())
	assert.Greater(t, took, 6*time.Second, "the step runs until the deadline less the reserve")
	assert.Less(t, took, 11*time.Second, "cleanup ends before the deadline")
	assert.Contains(t, f.Message(), "lower DUT_CLEANUP_RESERVE (5s, set by you)")
	assert.Equal(t, sim.PowerState("off"), dev.PowerState())
}

type brokenDriver struct{}

func (brokenDriver) Name() string { return "broken-for-test" }
func (brokenDriver) Discover(context.Context) ([]driver.Info, error) {
	return nil, errors.New("the emulator is not installed")
}
func (brokenDriver) Open(context.Context, driver.Info) (driver.Device, error) {
	return nil, errors.New("a driver that cannot discover cannot open")
}

// simDrivers configures the harness in code, with no environment: a sim
// driver of the test's own (devices, disks) and a lock directory of its own,
// so that tests using it run in parallel.
func simDrivers(t *testing.T, devices int, extra ...driver.Driver) []harness.Option {
	t.Helper()
	drv := sim.New(sim.Options{Devices: devices, Dir: t.TempDir(), BootTime: 50 * time.Millisecond})
	return []harness.Option{
		harness.WithDrivers(append(extra, drv)...),
		harness.WithLockDir(t.TempDir()),
		harness.WithAcquireTimeout(10 * time.Second),
		harness.WithBootTimeout(20 * time.Second),
	}
}

func TestADriverThatCannotRunDoesNotHideTheOthers(t *testing.T) {
	t.Parallel()
	im := buildImages(t)
	opts := append(simDrivers(t, 2, brokenDriver{}), harness.WithImage(im.a), harness.WithTags("sim"))
	f := faketb.New(t)
	f.Run(func(tb testing.TB) {
		dut := harness.Acquire(tb, opts...)
		assert.Equal(t, "sim", dut.Device().Driver())
	})
	require.False(t, f.Failed(), f.Message())

	// Chosen by name, its failure is the test's.
	f = faketb.New(t)
	f.Run(func(tb testing.TB) { harness.Acquire(tb, append(opts, harness.WithDriver("broken-for-test"))...) })
	require.True(t, f.Failed())
	assert.Contains(t, f.Message(), "the emulator is not installed")
}

// TestWaiterGetsAUsableDeviceAfterTheHolderClosedIt: a test that waited for
// the only DUT while another held it must get a working device, not the
// object the holder's cleanup closed.
func TestWaiterGetsAUsableDeviceAfterTheHolderClosedIt(t *testing.T) {
	simEnv(t)
	im := buildImages(t)
	t.Setenv("DUT_IMAGE", im.a)
	t.Setenv("DUT_SIM_DEVICES", "1")
	holder, waiter := faketb.New(t), faketb.New(t)
	release := make(chan struct{})
	held := make(chan struct{})
	holderDone := make(chan struct{})
	go func() {
		defer close(holderDone)
		holder.Run(func(tb testing.TB) {
			harness.Acquire(tb)
			close(held)
			<-release
		})
	}()
	<-held
	done := make(chan struct{})
	go func() {
		defer close(done)
		waiter.Run(func(tb testing.TB) {
			dut := harness.Acquire(tb)
			dut.Flash()
			dut.PowerOn()
			assert.Equal(t, "1.0.0-A\n", dut.Login().Run("cat /etc/dut-release"))
		})
	}()
	waitForTicket(t, os.Getenv("DUT_LOCK_DIR"))
	close(release)
	<-done
	<-holderDone // its cleanups write into this test's temporary folders
	require.False(t, holder.Failed(), holder.Message())
	require.False(t, waiter.Failed(), waiter.Message())
}

// Without go test -artifacts, t.ArtifactDir is a temporary directory that a
// cleanup removes: the harness's cleanup must still find it to write the
// console log after a flash wrote its report there during the test (a real
// *testing.T here, not the fake: the order of cleanups is the point).
func TestEvidenceIsWrittenWithoutTheArtifactsFlag(t *testing.T) {
	t.Parallel()
	im := buildImages(t)
	opts := append(simDrivers(t, 2), harness.WithImage(im.a))
	var report string
	ok := t.Run("flash", func(t *testing.T) {
		dut := harness.Acquire(t, opts...)
		dut.Flash()
		report = filepath.Join(t.ArtifactDir(), harness.FlashReportFile)
		_, err := os.Stat(report)
		require.NoError(t, err, "the flash report is written at once")
		dut.Sub(t) // a Sub asks for the same directory
	})
	require.True(t, ok, "writing the console log at cleanup must not fail")
	_, err := os.Stat(report)
	assert.ErrorIs(t, err, os.ErrNotExist, "the temporary artifact directory is removed after the test")
}

func TestReadPowerRecordsTheReading(t *testing.T) {
	t.Parallel()
	im := buildImages(t)
	opts := append(simDrivers(t, 2), harness.WithImage(im.a))
	f := faketb.New(t)
	var on, off driver.PowerReading
	f.Run(func(tb testing.TB) {
		dut := harness.Acquire(tb, opts...)
		off = dut.ReadPower()
		dut.Flash()
		dut.PowerOn()
		dut.Login()
		on = dut.ReadPower()
	})
	require.False(t, f.Failed(), f.Message())
	assert.Zero(t, off.Watts, "nothing drawn while off")
	assert.Greater(t, on.Watts, 0.0)
	assert.Equal(t, 1, f.AttrCount(harness.AttrPowerWatts), "one property, the last reading")
}

// countingSim is a sim driver whose devices count their power-offs.
type countingSim struct {
	*sim.Driver
	offs *atomic.Int32
}

func (c countingSim) Open(ctx context.Context, info driver.Info) (driver.Device, error) {
	d, err := c.Driver.Open(ctx, info)
	if err != nil {
		return nil, err
	}
	return countingDevice{d.(*sim.Device), c.offs}, nil
}

type countingDevice struct {
	*sim.Device
	offs *atomic.Int32
}

func (d countingDevice) PowerOff(ctx context.Context) error {
	d.offs.Add(1)
	return d.Device.PowerOff(ctx)
}

// TestCleanupPowersOffOnce: the cleanup's power-off is the only one at the
// end of a test; Close does not power the DUT off a second time. A test
// with its own driver value and no environment runs in parallel.
func TestCleanupPowersOffOnce(t *testing.T) {
	t.Parallel()
	im := buildImages(t)
	offs := new(atomic.Int32)
	drv := countingSim{sim.New(sim.Options{Devices: 1, Dir: t.TempDir(), BootTime: 50 * time.Millisecond}), offs}
	f := faketb.New(t)
	var atAcquire int32
	f.Run(func(tb testing.TB) {
		dut := harness.Acquire(tb, harness.WithDrivers(drv), harness.WithLockDir(t.TempDir()), harness.WithImage(im.a))
		atAcquire = offs.Load()
		dut.Flash()
		dut.PowerOn()
		dut.Login()
	})
	require.False(t, f.Failed(), f.Message())
	assert.Equal(t, int32(1), atAcquire, "Acquire powers off once (the known state)")
	assert.Equal(t, int32(3), offs.Load(), "one more for the flash, one at cleanup: %d", offs.Load())
}
