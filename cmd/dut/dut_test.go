package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
)

// hold locks the device name as another process's test would, until the
// returned function is called (or the test ends).
func hold(t *testing.T, name string, who lease.Holder) (release func()) {
	t.Helper()
	r, err := lease.Acquire(t.Context(), lease.Request{Name: name, Dir: os.Getenv("DUT_LOCK_DIR"), Logf: t.Logf}, who)
	require.NoError(t, err)
	var once bool
	release = func() {
		if !once {
			once = true
			require.NoError(t, r.Release())
		}
	}
	t.Cleanup(release)
	return release
}

var other = lease.Holder{Test: "TestNightlyFlash", PID: 4242, Host: "lab7"}

func TestListShowsDevicesLocksAndProblems(t *testing.T) {
	lab := env(t)
	lab.AddBoardT(t, dutlinksim.BoardOptions{Serial: "1a2b3c4d", Version: "0.08", Config: map[string]string{"name": "bench-1", "tags": "orin,arm64"}})
	lab.AddBoardT(t, dutlinksim.BoardOptions{Serial: "0badf00d", DFU: true})
	hold(t, "sim-1", other)

	r := dut(t, "list")
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := strings.Split(r.stdout, "\n")
	require.Regexp(t, `^DRIVER\s+NAME\s+SERIAL\s+TAGS\s+FIRMWARE\s+TRANSPORT\s+LOCK$`, lines[0])
	row := func(name string) string {
		for _, l := range lines {
			if f := strings.Fields(l); len(f) > 1 && f[1] == name {
				return l
			}
		}
		t.Fatalf("no row for %s in:\n%s", name, r.stdout)
		return ""
	}
	assert.Regexp(t, `^sim\s+sim-0\s+SIM00000\s+sim,virtual,even\s+-\s+-\s+free$`, row("sim-0"))
	assert.Regexp(t, `^sim\s+sim-1\s+SIM00001\s+sim,virtual,odd\s+-\s+-\s+held by TestNightlyFlash \(pid 4242 on host lab7\) since \d{4}-\d\d-\d\dT`, row("sim-1"))
	assert.Regexp(t, `^dutlink\s+bench-1\s+1a2b3c4d\s+orin,arm64\s+0\.08\s+(usb|shell)\s+free$`, row("bench-1"))
	assert.Regexp(t, `^bare\s+bare-0\s+-\s+bare\s+-\s+-\s+free$`, row("bare-0"))
	// The unusable: the board in DFU mode and the driver that cannot run.
	_, problems, ok := strings.Cut(r.stdout, "\nNot usable:\n")
	require.True(t, ok, "no problem section in:\n%s", r.stdout)
	assert.Regexp(t, `(?m)^\s+dutlink\s+.*DFU`, problems)
	assert.Regexp(t, `(?m)^\s+qemu\s+driver:\s+.*nonexistent/qemu-system-x86_64`, problems)
	assert.NotContains(t, problems, "bench-1")
}

func TestUnknownDeviceMentionsUnusableBoards(t *testing.T) {
	lab := env(t)
	lab.AddBoardT(t, dutlinksim.BoardOptions{Serial: "0badf00d", DFU: true})
	r := dut(t, "power", "on", "0badf00d")
	assert.Equal(t, exitNoDevice, r.code)
	assert.Regexp(t, `found but not usable now: dutlink .*DFU mode \(serial 0badf00d`, r.stderr)
	assert.NotContains(t, r.stderr, "qemu", "drivers that cannot run are not boards")
}

func TestListJSON(t *testing.T) {
	lab := env(t)
	lab.AddBoardT(t, dutlinksim.BoardOptions{Serial: "1a2b3c4d", Config: map[string]string{"name": "bench-1"}})
	lab.AddBoardT(t, dutlinksim.BoardOptions{Serial: "0badf00d", DFU: true})
	hold(t, "sim-0", other)

	r := dut(t, "list", "--json")
	require.Equal(t, exitOK, r.code, r.stderr)
	var l listing
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&l))
	byName := map[string]listedDevice{}
	for _, d := range l.Devices {
		byName[d.Name] = d
	}
	require.Contains(t, byName, "sim-0")
	s0 := byName["sim-0"]
	require.True(t, s0.Lock.Held)
	require.NotNil(t, s0.Lock.Holder)
	assert.Equal(t, "TestNightlyFlash", s0.Lock.Holder.Test)
	assert.Equal(t, 4242, s0.Lock.Holder.PID)
	assert.Equal(t, "lab7", s0.Lock.Holder.Host)
	assert.WithinDuration(t, time.Now(), s0.Lock.Holder.Since, time.Minute)
	assert.False(t, byName["sim-1"].Lock.Held)
	assert.Nil(t, byName["sim-1"].Lock.Holder)
	b := byName["bench-1"]
	assert.Equal(t, "dutlink", b.Driver)
	assert.Equal(t, "1a2b3c4d", b.Serial)
	assert.Equal(t, "0.08", b.Firmware)
	assert.NotEmpty(t, b.Transport)
	var drivers []string
	for _, p := range l.Problems {
		drivers = append(drivers, p.Driver)
		assert.NotEmpty(t, p.Reason)
	}
	assert.ElementsMatch(t, []string{"dutlink", "qemu"}, drivers)
	assert.Equal(t, 0, l.Hidden)
}

func TestListSelection(t *testing.T) {
	env(t)
	r := dut(t, "--driver", "sim", "--tags", "ODD", "list")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "sim-1")
	assert.NotContains(t, r.stdout, "sim-0")
	assert.NotContains(t, r.stdout, "bare-0", "--driver sim leaves other drivers out")
	assert.NotContains(t, r.stdout, "qemu", "a driver not selected is not asked")
	assert.Contains(t, r.stdout, "(1 more device(s) not shown")

	t.Setenv("DUT_TAGS", "even")
	r = dut(t, "list", "--json")
	require.Equal(t, exitOK, r.code)
	var l listing
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &l))
	require.Len(t, l.Devices, 1, "DUT_TAGS narrows the list as it narrows a test's choice")
	assert.Equal(t, "sim-0", l.Devices[0].Name)

	r = dut(t, "--driver", "nosuch", "list")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, `unknown driver "nosuch"`)
	assert.Contains(t, r.stderr, "sim")

	r = dut(t, "--tags", "a,,b", "list")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "--tags")
}

func TestPowerSim(t *testing.T) {
	env(t)
	r := dut(t, "power", "on", "sim-0")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, "sim-0: powered on\n", r.stdout)
	d := simDevice(t, "sim-0")
	assert.Equal(t, sim.PowerStateOn, d.PowerState())
	assert.Equal(t, driver.StorageDUT, d.StorageState(), "power on connects the storage to the DUT first")

	r = dut(t, "power", "off", "SIM00000") // by serial
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, sim.PowerStateOff, d.PowerState())

	require.Equal(t, exitOK, dut(t, "storage", "sim-0", "off").code)
	r = dut(t, "power", "on", "sim-0", "--keep-storage")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, driver.StorageOff, d.StorageState())

	r = dut(t, "power", "force-off", "sim-0")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, sim.PowerStateOff, d.PowerState())
	assert.Equal(t, "sim-0: forced off\n", r.stdout)

	r = dut(t, "power", "force-on", "sim-0")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, sim.PowerStateOn, d.PowerState())

	r = dut(t, "power", "cycle", "sim-0", "--off-time", "10ms")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, sim.PowerStateOn, d.PowerState())
	assert.Equal(t, driver.StorageDUT, d.StorageState())
	assert.Contains(t, r.stdout, "power cycled (off for 10ms)")

	r = dut(t, "power", "rescue", "sim-0")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, sim.PowerStateOn, d.PowerState())

	r = dut(t, "power", "sim-0")
	assert.Equal(t, exitUsage, r.code)
	r = dut(t, "power", "toggle", "sim-0")
	assert.Equal(t, exitUsage, r.code)

	// The lock is free again after each command.
	assert.False(t, held(t, d))
}

func TestResetPinsStorageConfigMeterSim(t *testing.T) {
	env(t)
	d := simDevice(t, "sim-1")

	r := dut(t, "reset", "sim-1")
	assert.Equal(t, exitFailure, r.code, "reset of a board that is off fails")
	assert.Contains(t, r.stderr, "powered off")

	require.Equal(t, exitOK, dut(t, "power", "on", "sim-1").code)
	r = dut(t, "reset", "sim-1")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, "sim-1: reset\n", r.stdout)

	for _, c := range []struct{ arg, want string }{{"low", "low"}, {"high", "high"}, {"z", "z"}, {"L", "low"}, {"floating", "z"}} {
		r = dut(t, "pin", "sim-1", "a", c.arg)
		require.Equal(t, exitOK, r.code, r.stderr)
		assert.Equal(t, driver.PinLevel(c.want), d.Pin("a"), c.arg)
	}
	r = dut(t, "pin", "sim-1", "reset", "low")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, driver.PinLow, d.Pin("reset"))
	r = dut(t, "pin", "sim-1", "e", "low")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "its pins are reset, a, b, c, d")
	r = dut(t, "pin", "sim-1", "a", "sideways")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "use low, high or z")

	r = dut(t, "meter", "sim-1")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Regexp(t, `^sim-1: 5\.00 V  \d\.\d{3} A  \d\.\d\d W\n$`, r.stdout)
	r = dut(t, "meter", "sim-1", "--watch", "5ms", "--count", "3")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Len(t, regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d\.\d{3} sim-1: 5\.00 V`).FindAllString(r.stdout, -1), 3)

	require.Equal(t, exitOK, dut(t, "power", "off", "sim-1").code)
	r = dut(t, "storage", "sim-1", "host")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, d.DiskPath()+"\n", r.stdout, "storage host prints the block target")
	assert.Equal(t, driver.StorageHost, d.StorageState())
	r = dut(t, "storage", "sim-1", "dut")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, driver.StorageDUT, d.StorageState())
	r = dut(t, "storage", "sim-1", "sideways")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "use off, host or dut")

	r = dut(t, "config", "sim-1", "get")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, "name: sim-1\nserial: SIM00001\ntags: sim,virtual,odd\n", r.stdout)
	r = dut(t, "config", "sim-1", "set", "tags", "sim,virtual,odd,rack2")
	require.Equal(t, exitOK, r.code, r.stderr)
	r = dut(t, "config", "sim-1", "get", "tags")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, "sim,virtual,odd,rack2\n", r.stdout)
	r = dut(t, "--tags", "rack2", "config", "sim-1", "get", "name")
	require.Equal(t, exitOK, r.code, "the new tag selects it")
	r = dut(t, "config", "sim-1", "set", "serial", "X")
	assert.Equal(t, exitUsage, r.code, "a read-only key is the user's mistake")
	assert.Equal(t, "dut: sim-1: set config: the serial number is read-only\n", r.stderr, "the driver's complaint, as it is")
	r = dut(t, "config", "sim-1", "set", "color", "red")
	assert.Equal(t, exitUsage, r.code, "an unknown key is the user's mistake")
	assert.Contains(t, r.stderr, `unknown key "color": the keys are name and tags`, "the driver's words")
	assert.Contains(t, r.stderr, "\nusage: dut config DEV get [KEY] | DEV set KEY VALUE")
	assert.NotContains(t, r.stderr, "note:", "nothing was set, so nothing to forget")
	r = dut(t, "config", "sim-1", "get", "colour")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "its keys are name, serial, tags")
	for _, args := range [][]string{{"config", "sim-1"}, {"config", "sim-1", "put", "a", "b"}, {"config", "sim-1", "set", "name"}, {"config", "sim-1", "get", "a", "b"}} {
		r = dut(t, args...)
		assert.Equal(t, exitUsage, r.code, args)
	}
}

func TestDUTlinkCommands(t *testing.T) {
	for _, tr := range []string{"usb", "shell"} {
		t.Run(tr, func(t *testing.T) {
			lab := env(t)
			t.Setenv("DUTLINK_TRANSPORT", tr)
			b := lab.AddBoardT(t, dutlinksim.BoardOptions{Serial: "1a2b3c4d", Config: map[string]string{"name": "bench-1", "tags": "orin"}})

			r := dut(t, "--driver", "dutlink", "power", "on", "bench-1")
			require.Equal(t, exitOK, r.code, r.stderr)
			assert.True(t, b.Power())
			assert.NotContains(t, r.stderr, "note:", "a board keeps its state")
			assert.Equal(t, "dut", b.Storage())

			r = dut(t, "meter", "1a2b3c4d")
			require.Equal(t, exitOK, r.code, r.stderr)
			assert.Equal(t, "bench-1: 5.00 V  0.600 A  3.00 W\n", r.stdout)

			require.Equal(t, exitOK, dut(t, "pin", "bench-1", "b", "low").code)
			assert.Equal(t, "l", b.Pin("b"))
			require.Equal(t, exitOK, dut(t, "pin", "bench-1", "b", "z").code)
			assert.Equal(t, "z", b.Pin("b"))

			require.Equal(t, exitOK, dut(t, "reset", "bench-1").code)
			assert.Equal(t, "z", b.Pin("r"), "reset releases the line")
			assert.Contains(t, strings.Join(b.Events(), "\n"), "pin r l", "reset pulled it low")

			require.Equal(t, exitOK, dut(t, "power", "force-off", "bench-1").code)
			assert.False(t, b.Power())
			r = dut(t, "storage", "bench-1", "host")
			require.Equal(t, exitOK, r.code, r.stderr)
			assert.Equal(t, "host", b.Storage())
			assert.True(t, strings.HasPrefix(r.stdout, lab.Dev), "a disk of the lab: %s", r.stdout)
			require.Equal(t, exitOK, dut(t, "storage", "bench-1", "off").code)
			assert.Equal(t, "off", b.Storage())

			r = dut(t, "config", "bench-1", "get", "tags")
			require.Equal(t, exitOK, r.code, r.stderr)
			assert.Equal(t, "orin\n", r.stdout)
			r = dut(t, "config", "bench-1", "set", "power_on", "p1,bL,w5,bZ")
			require.Equal(t, exitOK, r.code, r.stderr)
			assert.Empty(t, r.stderr, "no note: the board stores it")
			assert.Equal(t, "p1,bL,w5,bZ", b.Config()["power_on"])
			r = dut(t, "config", "bench-1", "set", "power_on", "p1,jump")
			assert.Equal(t, exitUsage, r.code, "a value the board refuses is a usage error")
			assert.Contains(t, r.stderr, `token 2 ("jump") is not a pin and level`)
			assert.Equal(t, "p1,bL,w5,bZ", b.Config()["power_on"], "nothing stored")
			r = dut(t, "config", "bench-1", "set", "colour", "red")
			assert.Equal(t, exitUsage, r.code, "an unknown key")
			assert.Contains(t, r.stderr, `unknown key "colour"`)
			r = dut(t, "config", "bench-1", "set", "firmware", "9.99")
			assert.Equal(t, exitUsage, r.code, "a read-only key")
			assert.Contains(t, r.stderr, "firmware is read-only")
		})
	}
}

func TestUnknownDeviceAndMissingCapability(t *testing.T) {
	env(t)
	r := dut(t, "power", "on", "sim-9")
	assert.Equal(t, exitNoDevice, r.code)
	assert.Contains(t, r.stderr, `no matching device: wanted name "sim-9"`)
	assert.Contains(t, r.stderr, "sim-0 (serial SIM00000)", "the message lists what there is")

	r = dut(t, "--tags", "odd", "power", "on", "sim-0")
	assert.Equal(t, exitNoDevice, r.code, "the tags must match too")
	assert.NotContains(t, r.stderr, "not usable now", "no board-level problems to mention")

	r = dut(t, "--driver", "bare", "reset", "bare-0")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "device bare-0 (driver bare) has no driver.Resetter")
	for _, args := range [][]string{
		{"power", "on", "bare-0"}, {"power", "force-on", "bare-0"}, {"power", "rescue", "bare-0"},
		{"pin", "bare-0", "a", "low"}, {"storage", "bare-0", "off"}, {"flash", "bare-0", writeImage(t, 4096)},
		{"console", "bare-0"}, {"config", "bare-0", "get"}, {"meter", "bare-0"},
	} {
		r = dut(t, args...)
		assert.Equal(t, exitUsage, r.code, args)
		assert.Contains(t, r.stderr, "has no driver.", args)
	}

	r = dut(t, "frobnicate")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "dut --help")
	r = dut(t, "power", "on")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "missing DEV")
	r = dut(t, "meter", "sim-0", "--wach", "1s")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "unknown flag: --wach")
	r = dut(t, "power", "on", "")
	assert.Equal(t, exitUsage, r.code)

	t.Setenv("DUT_ACQUIRE_TIMEOUT", "soon")
	r = dut(t, "power", "on", "sim-0")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, `DUT_ACQUIRE_TIMEOUT="soon"`)
	t.Setenv("DUT_ACQUIRE_TIMEOUT", "10s")

	// A driver's bad variable is a usage error too, whether or not its
	// driver was asked for by name.
	t.Setenv("DUT_SIM_DEVICES", "many")
	for _, args := range [][]string{{"--driver", "sim", "power", "on", "sim-0"}, {"power", "on", "sim-0"}} {
		r = dut(t, args...)
		assert.Equal(t, exitUsage, r.code, args)
		assert.Contains(t, r.stderr, `DUT_SIM_DEVICES="many"`, args)
	}
}

func TestBusyDeviceTimesOutNamingTheHolder(t *testing.T) {
	env(t)
	hold(t, "sim-0", other)
	start := time.Now()
	r := dut(t, "--timeout", "300ms", "power", "on", "sim-0")
	assert.Equal(t, exitBusy, r.code)
	assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "it waited")
	assert.Contains(t, r.stderr, "dut: sim-0 is held by TestNightlyFlash (pid 4242 on host lab7) since ")
	assert.Contains(t, r.stderr, "waiting up to 300ms")
	assert.Regexp(t, `acquire: waited \d+ms for sim/sim-0: held by TestNightlyFlash \(pid 4242 on host lab7\)`, r.stderr)
	assert.Contains(t, r.stderr, "; raise --timeout (DUT_ACQUIRE_TIMEOUT) or wait for that test to finish\n")
	assert.Equal(t, sim.PowerStateOff, simDevice(t, "sim-0").PowerState(), "nothing was switched")

	// DUT_ACQUIRE_TIMEOUT is the default of --timeout.
	t.Setenv("DUT_ACQUIRE_TIMEOUT", "50ms")
	r = dut(t, "reset", "sim-0")
	assert.Equal(t, exitBusy, r.code)
	assert.Contains(t, r.stderr, "waiting up to 50ms")
}

func TestBusyDeviceIsWaitedFor(t *testing.T) {
	env(t)
	release := hold(t, "sim-0", other)
	cmd := start(t, t.Context(), strings.NewReader(""), "--timeout", "20s", "power", "on", "sim-0")
	cmd.stderr.waitFor(t, "waiting up to 20s")
	release()
	require.Equal(t, exitOK, cmd.wait(t))
	assert.Equal(t, "sim-0: powered on\n", cmd.stdout.String())
}

// TestTestsAndDutExcludeEachOther: while dut works on a device, a test's
// harness.Open waits for it and names the dut command.
func TestTestsAndDutExcludeEachOther(t *testing.T) {
	env(t)
	require.Equal(t, exitOK, dut(t, "power", "on", "sim-0").code)
	stdin, feed := io.Pipe()
	t.Cleanup(func() { feed.Close() })
	con := start(t, t.Context(), stdin, "console", "sim-0")
	con.stderr.waitFor(t, "press Ctrl-] to exit")

	cfg, err := harness.ConfigFromEnv()
	require.NoError(t, err)
	cfg.Name, cfg.AcquireTimeout = "sim-0", 100*time.Millisecond
	_, err = harness.Open(t.Context(), cfg, harness.Holder{Test: "TestBoot"}, t.Logf)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "held by dut console sim-0 (pid ")
	assert.Equal(t, sim.PowerStateOn, simDevice(t, "sim-0").PowerState(), "the test did not touch the device")

	_, err = feed.Write([]byte{exitKey})
	require.NoError(t, err)
	require.Equal(t, exitOK, con.wait(t))
	s, err := harness.Open(t.Context(), cfg, harness.Holder{Test: "TestBoot"}, t.Logf)
	require.NoError(t, err, "free once the console is closed")
	require.NoError(t, s.Close(t.Context()))
}

// writeImage writes n random bytes to a new image file.
func writeImage(t *testing.T, n int) string {
	t.Helper()
	img := make([]byte, n)
	_, _ = rand.Read(img)
	p := filepath.Join(t.TempDir(), "os.img")
	require.NoError(t, os.WriteFile(p, img, 0o644))
	return p
}

func TestFlashSim(t *testing.T) {
	env(t)
	img := writeImage(t, 1<<20)
	data, err := os.ReadFile(img)
	require.NoError(t, err)
	sum := sha256.Sum256(data)
	d := simDevice(t, "sim-0")
	require.Equal(t, exitOK, dut(t, "power", "on", "sim-0").code)

	r := dut(t, "flash", "sim-0", img)
	require.Equal(t, exitOK, r.code, r.stderr)
	disk, err := os.ReadFile(d.DiskPath())
	require.NoError(t, err)
	assert.True(t, bytes.HasPrefix(disk, data), "the image is on the disk")
	assert.Equal(t, sim.PowerStateOff, d.PowerState(), "flash powers the DUT off first")
	assert.Equal(t, driver.StorageOff, d.StorageState(), "and leaves the storage off")
	assert.Contains(t, r.stderr, "dut: flashing "+img+" onto sim-0 ("+d.DiskPath()+")")
	assert.Regexp(t, `(?m)^flash: 100% 1\.0 MiB / 1\.0 MiB, [\d.]+ MB/s, 0:\d\d elapsed$`, r.stderr, "plain progress when not a terminal")
	assert.Contains(t, r.stdout, "flashed "+img+" (raw) onto sim-0 ("+d.DiskPath()+")\n")
	assert.Contains(t, r.stdout, "  bytes    1048576 (1.0 MiB)\n")
	assert.Regexp(t, `(?m)^  written  \d+ \(\d+% of the image`, r.stdout)
	assert.Regexp(t, `(?m)^  rate     [\d.]+ MB/s \(`, r.stdout)
	assert.Regexp(t, `(?m)^  verify   \+\S+ \(read back and matched\)$`, r.stdout)
	assert.Contains(t, r.stdout, "  sha256   "+hex.EncodeToString(sum[:]))

	r = dut(t, "flash", "sim-0", img, "--no-verify")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "  verify   skipped\n")

	// DUT_IMAGE stands in for IMAGE.
	t.Setenv("DUT_IMAGE", img)
	r = dut(t, "flash", "sim-0")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "flashed "+img)
}

func TestFlashBmap(t *testing.T) {
	env(t)
	img := writeImage(t, 1<<20)
	// A bmap mapping the first 64 KiB only.
	data, err := os.ReadFile(img)
	require.NoError(t, err)
	sum := sha256.Sum256(data[:64<<10])
	bmap := filepath.Join(t.TempDir(), "os.bmap")
	const zero = "0000000000000000000000000000000000000000000000000000000000000000"
	text := fmt.Sprintf(`<?xml version="1.0" ?>
<bmap version="2.0">
    <ImageSize> %d </ImageSize>
    <BlockSize> 4096 </BlockSize>
    <BlocksCount> 256 </BlocksCount>
    <MappedBlocksCount> 16 </MappedBlocksCount>
    <ChecksumType> sha256 </ChecksumType>
    <BmapFileChecksum> %s </BmapFileChecksum>
    <BlockMap>
        <Range chksum="%x"> 0-15 </Range>
    </BlockMap>
</bmap>
`, 1<<20, zero, sum)
	// The bmap's own checksum is taken with its field zeroed.
	own := sha256.Sum256([]byte(text))
	text = strings.Replace(text, zero, hex.EncodeToString(own[:]), 1)
	require.NoError(t, os.WriteFile(bmap, []byte(text), 0o644))
	r := dut(t, "flash", "sim-0", img, "--bmap", bmap)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "  written  65536 (6% of the image, bmap "+bmap+")")

	r = dut(t, "flash", "sim-0", img, "--bmap", filepath.Join(t.TempDir(), "missing.bmap"))
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "--bmap")
}

func TestFlashBadImage(t *testing.T) {
	env(t)
	d := simDevice(t, "sim-0")
	require.Equal(t, exitOK, dut(t, "power", "on", "sim-0").code)

	// gzip by its magic bytes, then garbage: the stream breaks mid-flash.
	bad := filepath.Join(t.TempDir(), "bad.img.gz")
	require.NoError(t, os.WriteFile(bad, append([]byte{0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 0xff}, bytes.Repeat([]byte("not deflate"), 1000)...), 0o644))
	r := dut(t, "flash", "sim-0", bad)
	assert.Equal(t, exitFailure, r.code)
	assert.Contains(t, r.stderr, "dut: flash "+bad+" onto sim-0: ")
	assert.Contains(t, r.stderr, "gzip")
	assert.Equal(t, sim.PowerStateOff, d.PowerState(), "the DUT is off after a failed flash")
	assert.Equal(t, driver.StorageOff, d.StorageState(), "and its storage disconnected")
	assert.NotContains(t, r.stdout, "flashed")

	// Images refused before any hardware is touched.
	require.Equal(t, exitOK, dut(t, "power", "on", "sim-0").code)
	empty := filepath.Join(t.TempDir(), "empty.img")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	for _, img := range []string{filepath.Join(t.TempDir(), "missing.img"), empty, t.TempDir()} {
		r = dut(t, "flash", "sim-0", img)
		assert.Equal(t, exitUsage, r.code, img)
		assert.Contains(t, r.stderr, "bad image", img)
		assert.Equal(t, sim.PowerStateOn, d.PowerState(), "untouched: %s", img)
	}
	r = dut(t, "flash", "sim-0")
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "give IMAGE or set DUT_IMAGE")
}

func TestFlashInterrupted(t *testing.T) {
	env(t)
	d := simDevice(t, "sim-0")
	require.Equal(t, exitOK, dut(t, "power", "on", "sim-0").code)
	img := writeImage(t, 24<<20)

	// Ctrl-C as soon as the first progress line shows.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out bytes.Buffer
	errb := newSyncBuf()
	errb.onWrite = func(s string) {
		if strings.Contains(s, "flash: ") {
			cancel()
		}
	}
	code := runWith(ctx, drivers(t), []string{"flash", "sim-0", img}, strings.NewReader(""), &out, errb)
	t.Logf("stderr:\n%s", errb)
	assert.Equal(t, exitInterrupted, code)
	assert.Contains(t, errb.String(), "flash of sim-0 interrupted after ")
	assert.Contains(t, errb.String(), "flash it again")
	assert.Equal(t, sim.PowerStateOff, d.PowerState())
	assert.Equal(t, driver.StorageOff, d.StorageState())
	assert.False(t, held(t, d))
}

func TestConsoleDUTlink(t *testing.T) {
	for _, tr := range []string{"usb", "shell"} {
		t.Run(tr, func(t *testing.T) {
			lab := env(t)
			t.Setenv("DUTLINK_TRANSPORT", tr)
			b := lab.AddBoardT(t, dutlinksim.BoardOptions{Serial: "1a2b3c4d", Config: map[string]string{"name": "bench-1"}, BootDelay: time.Hour})
			require.Equal(t, exitOK, dut(t, "power", "on", "bench-1").code)

			stdin, feed := io.Pipe()
			t.Cleanup(func() { feed.Close() })
			con := start(t, t.Context(), stdin, "console", "bench-1")
			con.stderr.waitFor(t, "dut: connected to the console of bench-1; press Ctrl-] to exit\n")
			b.DUTPrint("hello from the DUT\r\n")
			con.stdout.waitFor(t, "hello from the DUT\r\n")
			_, err := feed.Write([]byte("ping\r"))
			require.NoError(t, err)
			con.stdout.waitFor(t, "echo: ping\r\n")
			// Ctrl-C is sent on; the exit key and what follows it are not.
			_, err = feed.Write([]byte("\x03pong\r"))
			require.NoError(t, err)
			con.stdout.waitFor(t, "echo: pong\r\n")
			_, err = feed.Write([]byte("\x1dnot sent\r"))
			require.NoError(t, err)
			require.Equal(t, exitOK, con.wait(t))
			in := string(b.DUTInput())
			assert.Contains(t, in, "ping\r\x03pong\r")
			assert.NotContains(t, in, "not sent")
			assert.NotContains(t, in, "\x1d")
			assert.True(t, b.Power(), "the DUT keeps running")
		})
	}
}

func TestConsoleSimPowerOn(t *testing.T) {
	env(t)
	stdin, feed := io.Pipe()
	t.Cleanup(func() { feed.Close() })
	con := start(t, t.Context(), stdin, "console", "sim-0", "--power-on")
	con.stdout.waitFor(t, "SimBIOS 1.0 (sim-0)\r\n")
	con.stdout.waitFor(t, "No bootable device.")
	_, err := feed.Write([]byte{exitKey})
	require.NoError(t, err)
	require.Equal(t, exitOK, con.wait(t))
	d := simDevice(t, "sim-0")
	assert.Equal(t, sim.PowerStateOn, d.PowerState())
	assert.Equal(t, driver.StorageDUT, d.StorageState())
}

func TestConsoleEnds(t *testing.T) {
	env(t)
	require.Equal(t, exitOK, dut(t, "power", "on", "sim-0").code)

	t.Run("stdin ends", func(t *testing.T) {
		con := start(t, t.Context(), strings.NewReader("root\r"), "console", "sim-0")
		require.Equal(t, exitOK, con.wait(t))
	})
	t.Run("interrupted", func(t *testing.T) {
		stdin, feed := io.Pipe()
		t.Cleanup(func() { feed.Close() })
		ctx, cancel := context.WithCancel(t.Context())
		con := start(t, ctx, stdin, "console", "sim-0")
		con.stderr.waitFor(t, "press Ctrl-] to exit")
		cancel()
		assert.Equal(t, exitInterrupted, con.wait(t))
	})
	t.Run("device gone", func(t *testing.T) {
		stdin, feed := io.Pipe()
		t.Cleanup(func() { feed.Close() })
		con := start(t, t.Context(), stdin, "console", "sim-1")
		con.stderr.waitFor(t, "press Ctrl-] to exit")
		simDevice(t, "sim-1").Unplug()
		assert.Equal(t, exitFailure, con.wait(t))
		assert.Contains(t, con.stderr.String(), "console of sim-1 ended")
	})
	d := simDevice(t, "sim-0")
	assert.False(t, held(t, d), "every way out releases the lock")
}

func TestMeterWatchEndsAtCtrlC(t *testing.T) {
	env(t)
	ctx, cancel := context.WithCancel(t.Context())
	m := start(t, ctx, strings.NewReader(""), "meter", "sim-0", "--watch", "1ms")
	m.stdout.waitFor(t, "sim-0: 0.00 V")
	cancel()
	assert.Equal(t, exitOK, m.wait(t), "Ctrl-C is how a watch ends")
}

func TestHelpHasExamples(t *testing.T) {
	env(t)
	for _, path := range [][]string{
		{}, {"list"}, {"power"}, {"power", "on"}, {"power", "off"}, {"power", "force-on"}, {"power", "force-off"},
		{"power", "rescue"}, {"power", "cycle"}, {"reset"}, {"pin"}, {"storage"}, {"flash"}, {"console"},
		{"config"}, {"meter"},
	} {
		r := dut(t, append(path, "--help")...)
		require.Equal(t, exitOK, r.code, path)
		_, ex, ok := strings.Cut(r.stdout, "\nExamples:\n")
		require.True(t, ok, "%v --help has no examples:\n%s", path, r.stdout)
		want := strings.Join(append([]string{"dut"}, path...), " ")
		if len(path) == 2 {
			want = "dut power " + path[1]
		}
		assert.Contains(t, ex, "  "+want, path)
	}
	r := dut(t, "console", "--help")
	assert.Contains(t, r.stdout, "Ctrl-]")
}

func TestExitCodes(t *testing.T) {
	live := context.Background()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	busy := fmt.Errorf("acquire: %w", &lease.BusyError{Err: context.DeadlineExceeded})
	for _, c := range []struct {
		ctx  context.Context
		err  error
		want int
	}{
		{live, errors.New("EIO"), exitFailure},
		{live, fmt.Errorf("power on: %w", errors.New("stall")), exitFailure},
		{live, busy, exitBusy},
		{live, fmt.Errorf("power on: %w", context.DeadlineExceeded), exitFailure},
		{live, fmt.Errorf("select: %w", driver.ErrNoDevice), exitNoDevice},
		{live, fmt.Errorf("x: %w", lease.ErrBadRequest), exitUsage},
		{live, fmt.Errorf("set config: %w", driver.ErrInvalidArgument), exitUsage},
		{live, usagef("x"), exitUsage},
		{live, fmt.Errorf("x: %w", errBadEnv), exitUsage},
		{live, fmt.Errorf("x: %w", driver.ErrUnsupported), exitUsage},
		{live, fmt.Errorf("discover: %w", driver.ErrBadConfig), exitUsage},
		{cancelled, fmt.Errorf("x: %w", context.Canceled), exitInterrupted},
		{live, fmt.Errorf("x: %w", context.Canceled), exitFailure},
		{live, flash.ErrImage, exitFailure},
	} {
		assert.Equal(t, c.want, exitCode(c.ctx, c.err), "%v", c.err)
	}
	assert.Equal(t, "acquire:  (a longer --timeout waits longer)", message(busy))
}

func TestProgressRendering(t *testing.T) {
	p := flash.Progress{Done: 50 << 20, Total: 100 << 20, Fraction: 0.5, Elapsed: 2 * time.Second}
	assert.Equal(t, " 50% 50 MiB / 100 MiB, 26.2 MB/s, 0:02 elapsed", progressText(p))
	b := bar(p, 100)
	assert.LessOrEqual(t, len(b), 100)
	assert.Regexp(t, `^\[=+> +\]  50% 50 MiB / 100 MiB, 26\.2 MB/s, 0:02 elapsed, 0:02 left$`, b)
	full := bar(flash.Progress{Done: 3 << 29, Total: 3 << 29, Fraction: 1, Elapsed: time.Hour + 61*time.Second}, 120)
	assert.Regexp(t, `^\[=+\] 100% 1\.5 GiB / 1\.5 GiB, 0\.4 MB/s, 1:01:01 elapsed$`, full)
	unknown := progressText(flash.Progress{Done: 2048, Total: -1, Fraction: 0.25, Elapsed: time.Second})
	assert.Equal(t, " 25% 2.0 KiB, 0.0 MB/s, 0:01 elapsed", unknown)
	assert.NotContains(t, bar(p, 30), "[", "too narrow for a bar: text only")
	// A small image reads in a unit that fits, never "0 MiB / 0 MiB".
	small := progressText(flash.Progress{Done: 300 << 10, Total: 600 << 10, Fraction: 0.5, Elapsed: time.Second})
	assert.Equal(t, " 50% 300 KiB / 600 KiB, 0.3 MB/s, 0:01 elapsed", small)
	assert.Equal(t, "100% 512 B / 512 B, 0.0 MB/s, 0:00 elapsed", progressText(flash.Progress{Done: 512, Total: 512, Fraction: 1}))

	var w bytes.Buffer
	pr := &progress{w: &w, tty: true, width: 80}
	pr.update(p)
	pr.update(flash.Progress{Done: 100 << 20, Total: 100 << 20, Fraction: 1, Elapsed: 3 * time.Second}) // within barEvery: not drawn yet
	pr.finish()
	assert.Equal(t, 2, strings.Count(w.String(), "\r"), "first state and final state")
	assert.True(t, strings.HasSuffix(w.String(), "100% 100 MiB / 100 MiB, 35.0 MB/s, 0:03 elapsed\x1b[K\n"), "%q", w.String())
}
