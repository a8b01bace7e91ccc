package dutlink_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func scanOne(t *testing.T, lab *dutlinksim.Lab, tr dutlink.TransportKind) *dutlink.Device {
	t.Helper()
	o := lab.Options()
	o.Transport = tr
	return openOnly(t, dutlink.New(o))
}

// openOnly scans with dr, which must find exactly one usable board and no
// problems, and opens that board (closed when the test ends).
func openOnly(t *testing.T, dr *dutlink.Driver) *dutlink.Device {
	t.Helper()
	devs := openAll(t, dr)
	require.Len(t, devs, 1)
	return devs[0]
}

// openAll scans with dr, which must report no problems, and opens every
// usable board (closed when the test ends).
func openAll(t *testing.T, dr *dutlink.Driver) []*dutlink.Device {
	t.Helper()
	s, err := dr.Scan(testCtx(t))
	require.NoError(t, err)
	require.Empty(t, s.Problems)
	var devs []*dutlink.Device
	for _, info := range s.Devices {
		d, err := dr.Open(testCtx(t), info)
		require.NoError(t, err)
		t.Cleanup(func() { _ = d.(*dutlink.Device).Close() })
		devs = append(devs, d.(*dutlink.Device))
	}
	return devs
}

func TestEveryCapabilityDirect(t *testing.T) {
	for _, g := range dutlinksim.Generations {
		t.Run(g.Name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			lab := dutlinksim.NewTestLab(t)
			b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: g.Version, Config: map[string]string{
				"name": "orin-1", "tags": "orin,arm64", "power_on": "p1,bL,w1,bZ",
			}})
			d := scanOne(t, lab, g.Transport)
			assert.Equal(t, "orin-1", d.Name())
			assert.Equal(t, []string{"orin", "arm64"}, d.Tags())
			assert.Equal(t, b.Serial(), d.Serial())
			assert.Equal(t, g.Want, d.Transport())
			assert.Equal(t, g.Version, d.Board().Version.String())

			require.NoError(t, d.PowerOn(ctx))
			assert.True(t, b.Power())
			ev := strings.Join(b.Events(), "|")
			assert.Contains(t, ev, "power on|pin b l|wait 100ms|pin b z", "the power_on sequence ran")
			r, err := d.ReadPower(ctx)
			require.NoError(t, err)
			assert.Equal(t, driver.PowerReading{Volts: 5, Amps: 0.6, Watts: 3}, r)

			require.NoError(t, d.PowerOff(ctx))
			assert.False(t, b.Power())
			r, err = d.ReadPower(ctx)
			require.NoError(t, err)
			assert.Zero(t, r.Watts)
			require.NoError(t, d.ForceOn(ctx))
			assert.True(t, b.Power())
			require.NoError(t, d.ForceOff(ctx))
			assert.False(t, b.Power())
			require.NoError(t, d.Rescue(ctx))
			assert.True(t, b.Power())
			require.NoError(t, d.Cycle(ctx, 10*time.Millisecond))
			assert.True(t, b.Power())
			require.NoError(t, d.PowerOff(ctx))

			for _, p := range []struct {
				pin, letter string
				level       driver.PinLevel
				want        string
			}{{"a", "a", driver.PinHigh, "h"}, {"b", "b", driver.PinLow, "l"}, {"c", "c", driver.PinFloating, "z"}, {"d", "d", driver.PinHigh, "h"}, {"reset", "r", driver.PinLow, "l"}} {
				require.NoError(t, d.SetPin(ctx, p.pin, p.level))
				assert.Equal(t, p.want, b.Pin(p.letter), p.pin)
			}
			start := time.Now()
			before := len(b.Events())
			require.NoError(t, d.Reset(ctx))
			assert.GreaterOrEqual(t, time.Since(start), dutlink.ResetPulse)
			assert.Equal(t, []string{"pin r l", "pin r z"}, b.Events()[before:])
			assert.Error(t, d.SetPin(ctx, "e", driver.PinLow))

			v, err := d.FirmwareVersion(ctx)
			require.NoError(t, err)
			assert.Equal(t, g.Version+" git-ref: dutlinksim", v)

			cfg, err := d.Config(ctx)
			require.NoError(t, err)
			assert.Equal(t, "orin-1", cfg["name"])
			assert.Equal(t, "p1,bL,w1,bZ", cfg["power_on"])
			assert.Equal(t, b.Serial(), cfg["serial"])
			require.NoError(t, d.SetConfig(ctx, "tags", "orin, arm64 ,lab-2"))
			assert.Equal(t, "orin,arm64,lab-2", b.Config()["tags"])
			require.NoError(t, d.SetConfig(ctx, "power_off", "bL,w1,p0"))
			assert.Equal(t, "bL,w1,p0", b.Config()["power_off"])

			// Storage: host shows the board's disk, which CheckTarget accepts;
			// dut flushes and ejects it first.
			require.NoError(t, d.SetStorage(ctx, driver.StorageHost))
			assert.Equal(t, "host", b.Storage())
			target, err := d.BlockTarget(ctx)
			require.NoError(t, err)
			f, err := os.OpenFile(target, os.O_RDWR, 0)
			require.NoError(t, err)
			require.NoError(t, d.CheckTarget(f))
			_, err = f.WriteAt([]byte("hello DUT"), 0)
			require.NoError(t, err)
			require.NoError(t, f.Close())
			require.NoError(t, d.SetStorage(ctx, driver.StorageDUT))
			assert.Equal(t, "dut", b.Storage())
			assert.Len(t, b.Ejected(), 1, "the disk was ejected through sysfs before the switch")
			data, err := os.ReadFile(b.DiskFile())
			require.NoError(t, err)
			assert.True(t, bytes.HasPrefix(data, []byte("hello DUT")))
			_, err = d.BlockTarget(ctx)
			assert.ErrorIs(t, err, dutlink.ErrStorageNotOnHost)
			require.NoError(t, d.SetStorage(ctx, driver.StorageOff))
			assert.Equal(t, "off", b.Storage())

			assert.False(t, b.AtShell(), "the shell transport returns the board to console mode")
			assert.Empty(t, strings.Trim(string(b.DUTInput()), "\x02"), "no command reached the DUT, only the escape")
		})
	}
}

func TestConfigSurvivesRebootAndRenames(t *testing.T) {
	for _, g := range dutlinksim.Generations {
		t.Run(g.Name, func(t *testing.T) {
			ctx := testCtx(t)
			lab := dutlinksim.NewTestLab(t)
			b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: g.Version})
			d := scanOne(t, lab, g.Transport)
			assert.Equal(t, "jp-"+b.Serial(), d.Name(), "default name")
			require.NoError(t, d.SetConfig(ctx, "name", "bench-3"))
			assert.Equal(t, "jp-"+b.Serial(), d.Name(), "a device's name is stable")
			b.Reboot()
			d2 := scanOne(t, lab, g.Transport)
			assert.Equal(t, "bench-3", d2.Name())
			require.NoError(t, d2.SetConfig(ctx, "name", ""))
			assert.Equal(t, "jp-"+b.Serial(), scanOne(t, lab, g.Transport).Name())
		})
	}
}

func TestConfigTheFirmwareCannotStore(t *testing.T) {
	for _, g := range dutlinksim.Generations {
		t.Run(g.Name, func(t *testing.T) {
			ctx := testCtx(t)
			lab := dutlinksim.NewTestLab(t)
			b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: g.Version, Config: map[string]string{"name": "keep"}})
			d := scanOne(t, lab, g.Transport)
			for _, c := range []struct{ key, value, want string }{
				{"name", strings.Repeat("n", 65), "at most 64"},
				{"name", "two words", "letters, digits"},
				{"tags", strings.Repeat("t", 257), "at most 256"},
				{"tags", "a,,b", "tag 2 is empty"},
				{"usb_console", "has space", "white space"},
				{"usb_console", strings.Repeat("u", 65), "at most 64"},
				{"power_on", "p1,bL,w5,bZ,w5,aL,w5,aZ,w5,rL,w50", "at most 32"},
				{"power_on", "p1,xQ", "token 2"},
				{"power_off", "p2", "token 1"},
				{"json", "{not json", "not valid JSON"},
				{"colour", "red", "unknown key"},
				{"serial", "x", "read-only"},
			} {
				err := d.SetConfig(ctx, c.key, c.value)
				require.Error(t, err, "%s=%q", c.key, c.value)
				assert.ErrorIs(t, err, dutlink.ErrBadConfig)
				assert.Contains(t, err.Error(), c.want)
			}
			assert.Equal(t, "keep", b.Config()["name"])
			assert.Empty(t, b.Config()["power_on"])

			// The flash refuses the write: the reply (shell) or the read-back
			// (USB) shows it.
			b.FailConfigWrites(true)
			err := d.SetConfig(ctx, "name", "new")
			require.Error(t, err)
			if g.Want == dutlink.TransportUSB {
				assert.ErrorIs(t, err, dutlink.ErrBadConfig)
			} else {
				assert.ErrorIs(t, err, dutlink.ErrReply)
				assert.Contains(t, err.Error(), "flash write failed")
			}
			assert.Equal(t, "keep", b.Config()["name"])
		})
	}
}

func TestDiscoveryCopesWithBrokenBoards(t *testing.T) {
	ctx := testCtx(t)
	lab := dutlinksim.NewTestLab(t)
	good := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.08", Config: map[string]string{"name": "good"}})
	old := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.07", Config: map[string]string{"name": "old"}})
	dfu := lab.AddBoardT(t, dutlinksim.BoardOptions{DFU: true})
	// A board that vanished between the directory listing and reading its
	// attributes: idVendor/idProduct are there, serial is not.
	half := lab.Sys + "/bus/usb/devices/1-77"
	require.NoError(t, os.MkdirAll(half, 0o755))
	require.NoError(t, os.WriteFile(half+"/idVendor", []byte("2b23\n"), 0o644))
	require.NoError(t, os.WriteFile(half+"/idProduct", []byte("1012\n"), 0o644))

	s, err := dutlink.New(lab.Options()).Scan(ctx)
	require.NoError(t, err)
	var names []string
	for _, d := range s.Devices {
		names = append(names, d.Name)
	}
	assert.Equal(t, []string{"good", "old"}, names, "sorted by serial")
	require.Len(t, s.Problems, 2)
	var sawDFU, sawGone bool
	for _, p := range s.Problems {
		sawDFU = sawDFU || errors.Is(p.Err, dutlink.ErrDFU) && strings.Contains(p.Err.Error(), dfu.Serial())
		sawGone = sawGone || errors.Is(p.Err, dutlink.ErrGone) && strings.Contains(p.Where, "1-77")
	}
	assert.True(t, sawDFU, "DFU board reported: %v", s.Problems)
	assert.True(t, sawGone, "vanished board reported: %v", s.Problems)

	// Another process holds the 0.07 board's tty (the old tools' flock):
	// its config cannot be read over the shell. A process that never saw
	// the board (no state remembered) reports it busy, the other board
	// stays; one whose state directory remembers it (an earlier scan,
	// in any process) still finds it by name, so a test can wait for its
	// lock instead of finding no device.
	fresh := lab.Options()
	fresh.StateDir = t.TempDir()
	held := holdTTY(t, old.TTY())
	s, err = dutlink.New(fresh).Scan(ctx)
	require.NoError(t, err)
	require.Len(t, s.Devices, 1)
	assert.Equal(t, "good", s.Devices[0].Name)
	assert.True(t, slices.ContainsFunc(s.Problems, func(p dutlink.Problem) bool { return errors.Is(p.Err, dutlink.ErrBusy) }), "%v", s.Problems)
	other := dutlink.New(lab.Options()) // a new process: nothing in memory
	s, err = other.Scan(ctx)
	require.NoError(t, err)
	names = nil
	for _, d := range s.Devices {
		names = append(names, d.Name)
	}
	assert.Equal(t, []string{"good", "old"}, names, "the held board is found by its remembered name")
	held.Close()
	s, err = other.Scan(ctx)
	require.NoError(t, err)
	assert.Len(t, s.Devices, 2)
	_ = good

	// A USB-only transport on shell-only firmware is explained.
	o := lab.Options()
	o.Transport = dutlink.TransportUSB
	s, err = dutlink.New(o).Scan(ctx)
	require.NoError(t, err)
	require.Len(t, s.Devices, 1)
	assert.True(t, slices.ContainsFunc(s.Problems, func(p dutlink.Problem) bool {
		return errors.Is(p.Err, dutlink.ErrNoUSB) && strings.Contains(p.Err.Error(), "DUTLINK_TRANSPORT=shell")
	}), "%v", s.Problems)

	_, err = dutlink.New(lab.Options()).OpenBoard(ctx, "nosuch")
	require.ErrorIs(t, err, driver.ErrNoDevice)
	assert.Contains(t, err.Error(), "found good")
	assert.Contains(t, err.Error(), "DFU mode")
}

func TestCheckTargetRefusesOtherFiles(t *testing.T) {
	ctx := testCtx(t)
	lab := dutlinksim.NewTestLab(t)
	lab.AddBoardT(t, dutlinksim.BoardOptions{})
	stranger, err := lab.AddDisk("other", 1<<20)
	require.NoError(t, err)
	d := scanOne(t, lab, dutlink.TransportAuto)
	f, err := os.Open(stranger)
	require.NoError(t, err)
	defer f.Close()
	assert.ErrorIs(t, d.CheckTarget(f), dutlink.ErrStorageNotOnHost, "nothing is accepted while the storage is not at the host")
	require.NoError(t, d.SetStorage(ctx, driver.StorageHost))
	err = d.CheckTarget(f)
	assert.ErrorIs(t, err, dutlink.ErrNotBoardDisk)
	target, err := d.BlockTarget(ctx)
	require.NoError(t, err)
	own, err := os.Open(target)
	require.NoError(t, err)
	defer own.Close()
	require.NoError(t, d.CheckTarget(own))

	// Without FileDisks a regular file is never a disk.
	o := lab.Options()
	o.FileDisks = false
	strict := openOnly(t, dutlink.New(o))
	require.NoError(t, strict.SetStorage(ctx, driver.StorageHost))
	err = strict.CheckTarget(own)
	assert.ErrorIs(t, err, dutlink.ErrNotBoardDisk)
	assert.Contains(t, err.Error(), "not a block device")
	require.NoError(t, strict.SetStorage(ctx, driver.StorageOff))
}

// The firmware's shell prints get-config in one 512-byte reply: values that
// would not fit together are refused before anything is stored, and what
// fits is read back whole.
func TestSetConfigKeepsTheWholeConfigPrintable(t *testing.T) {
	for _, g := range dutlinksim.Generations {
		t.Run(g.Name, func(t *testing.T) {
			lab := dutlinksim.NewTestLab(t)
			lab.AddBoardT(t, dutlinksim.BoardOptions{Version: g.Version})
			d := scanOne(t, lab, g.Transport)
			ctx := testCtx(t)
			require.NoError(t, d.SetConfig(ctx, "tags", strings.Repeat("t", 250)))
			require.NoError(t, d.SetConfig(ctx, "usb_console", strings.Repeat("u", 60)))
			require.NoError(t, d.SetConfig(ctx, "name", strings.Repeat("n", 60)))
			require.NoError(t, d.SetConfig(ctx, "power_on", "p1,w1,bl,w1,bz,w1,al,w1,az"))
			require.NoError(t, d.SetConfig(ctx, "power_off", "p0,w1,bl,w1,bz,w1,al,w1,az")) // a 505-byte reply
			err := d.SetConfig(ctx, "power_rescue", "p1,w1,bl,w1,bz")
			require.ErrorIs(t, err, dutlink.ErrBadConfig)
			assert.Contains(t, err.Error(), "512-byte buffer")
			assert.Contains(t, err.Error(), "tags: 250 bytes", "it names what to shorten")
			cfg, err := d.Config(ctx)
			require.NoError(t, err)
			assert.Empty(t, d.ConfigCut(), "a config that fits arrives whole")
			assert.Empty(t, cfg["power_rescue"], "nothing stored")
			assert.Equal(t, "p0,w1,bl,w1,bz,w1,al,w1,az", cfg["power_off"])
			assert.Equal(t, strings.Repeat("t", 250), cfg["tags"])
		})
	}
}
