package dutlink_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
)

// The tests in this file check the driver against the firmware facts of
// ../shared/docs/dutlink.md that testfixtures/dutlinksim models: a board on
// a root port, USB packets in console mode, OUT requests that complete
// before they act, 0.08's snapshot, the shell's 512-byte reply, a board
// left at its shell.

// scanWith scans lab with o's transport set to tr and returns the board.
func scanWith(t *testing.T, o dutlink.Options, tr dutlink.TransportKind) *dutlink.Device {
	t.Helper()
	o.Transport = tr
	return openOnly(t, dutlink.New(o))
}

// A board on a root port cannot tell its disk by topology. A filter for
// every board (DUTLINK_STORAGE_FILTER=SanDisk) is refused as its identity
// before the mux moves, even though a stranger's stick that matches it
// appears 100 ms after the switch and the board's own only 300 ms after;
// with the board's own filter (its stick's serial) the board's disk is
// taken and the stranger is never written, whatever the transport.
func TestRootPortBoardNeverTakesAStrangersDisk(t *testing.T) {
	for _, g := range dutlinksim.Generations {
		t.Run(g.Name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			lab := dutlinksim.NewTestLab(t)
			b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: g.Version, RootPort: true,
				DiskID: "SanDisk_Ultra_4C530001", DiskAppearDelay: 300 * time.Millisecond})
			before, err := lab.AddDisk("SanDisk_Cruzer_0BEF0RE", 1<<20)
			require.NoError(t, err)

			shared := lab.Options()
			shared.StorageFilter = "SanDisk"
			d := scanWith(t, shared, g.Transport)
			during := lab.ForeignOnSwitch(t, b, "SanDisk_Cruzer_1DUR1NG", 100*time.Millisecond)
			err = d.SetStorage(ctx, driver.StorageHost)
			require.ErrorIs(t, err, dutlink.ErrUnprovenDisk)
			assert.Contains(t, err.Error(), "dut config "+b.Serial()+" set storage_filter")
			assert.Equal(t, "off", b.Storage())
			assert.NotContains(t, b.Events(), "storage host", "refused before the mux moved")

			own := lab.Options()
			own.StorageFilters = map[string]string{b.Serial(): "4C530001"}
			d = scanWith(t, own, g.Transport)
			require.NoError(t, d.SetStorage(ctx, driver.StorageHost))
			after, err := lab.AddDiskAfter("SanDisk_Cruzer_2AFTER", 1<<20, 0)
			require.NoError(t, err)
			require.NoError(t, writeTarget(ctx, d, []byte("the board's image")))
			require.NoError(t, d.SetStorage(ctx, driver.StorageOff))
			assert.True(t, dutlinksim.DiskHas(t, b.DiskFile(), []byte("the board's image")))
			dutlinksim.Untouched(t, before)
			dutlinksim.Untouched(t, during())
			dutlinksim.Untouched(t, after)
		})
	}
}

// The board's own filter can be set with SetConfig (dut config BOARD set
// storage_filter), is kept by this host whatever the transport, reaches the
// next process, and is refused when it names more than one disk.
func TestStorageFilterKeptByThisHost(t *testing.T) {
	ctx := testCtx(t)
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{RootPort: true, DiskID: "SanDisk_Ultra_4C530001"})
	_, err := lab.AddDisk("SanDisk_Cruzer_77AA", 1<<20)
	require.NoError(t, err)
	d := scanOne(t, lab, dutlink.TransportAuto)
	require.Equal(t, dutlink.TransportUSB, d.Transport(), "the board's json is out of reach: only this host can keep the filter")
	require.ErrorIs(t, d.SetStorage(ctx, driver.StorageHost), dutlink.ErrUnprovenDisk)

	err = d.SetConfig(ctx, "storage_filter", "SanDisk")
	require.ErrorIs(t, err, dutlink.ErrBadConfig, "SanDisk names a stranger's stick already")
	require.NoError(t, d.SetConfig(ctx, "storage_filter", "4C530001"))
	next := scanOne(t, lab, dutlink.TransportAuto) // another process
	cfg, err := next.Config(ctx)
	require.NoError(t, err)
	assert.Equal(t, "4C530001", cfg["storage_filter"])
	require.NoError(t, next.SetStorage(ctx, driver.StorageHost))
	f, err := openTarget(ctx, next)
	require.NoError(t, err, "the board's disk, proved")
	require.NoError(t, f.Close())
	require.NoError(t, next.SetStorage(ctx, driver.StorageOff))
	assert.Equal(t, "off", b.Storage())
}

// Two root-port boards whose sticks both match "SanDisk", flashed at once:
// each writes its own disk, never the other's; with the shared filter both
// are refused.
func TestTwoRootPortBoardsFlashedAtOnce(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	boards := []*dutlinksim.Board{
		lab.AddBoardT(t, dutlinksim.BoardOptions{RootPort: true, DiskID: "SanDisk_Ultra_AAAA0001", DiskAppearDelay: 200 * time.Millisecond}),
		lab.AddBoardT(t, dutlinksim.BoardOptions{RootPort: true, DiskID: "SanDisk_Ultra_BBBB0002", DiskAppearDelay: 50 * time.Millisecond}),
	}
	for _, shared := range []bool{true, false} {
		o := lab.Options()
		if shared {
			o.StorageFilter = "SanDisk"
		} else {
			o.StorageFilters = map[string]string{boards[0].Serial(): "AAAA0001", boards[1].Serial(): "BBBB0002"}
		}
		devs := openAll(t, dutlink.New(o))
		require.Len(t, devs, 2)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, d := range devs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = flashOnce(testCtx(t), d, []byte("image of "+d.Serial()))
			}()
		}
		wg.Wait()
		for i, d := range devs {
			b := boards[i]
			require.Equal(t, b.Serial(), d.Serial())
			if shared {
				assert.ErrorIs(t, errs[i], dutlink.ErrUnprovenDisk)
				continue
			}
			require.NoError(t, errs[i])
			assert.True(t, dutlinksim.DiskHas(t, b.DiskFile(), []byte("image of "+b.Serial())), "board %s has its own image", b.Serial())
		}
	}
}

// openTarget opens the board's disk, at the host already, for writing,
// and proves it is the board's, as the flash engine does.
func openTarget(ctx context.Context, d *dutlink.Device) (*os.File, error) {
	target, err := d.BlockTarget(ctx)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(target, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	if err := d.CheckTarget(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// writeTarget writes data at the start of the board's disk, at the host.
func writeTarget(ctx context.Context, d *dutlink.Device, data []byte) error {
	f, err := openTarget(ctx, d)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// flashOnce writes img to the board's disk the way the flash engine does.
func flashOnce(ctx context.Context, d *dutlink.Device, img []byte) error {
	if err := d.SetStorage(ctx, driver.StorageHost); err != nil {
		return err
	}
	if err := writeTarget(ctx, d, img); err != nil {
		return err
	}
	return d.SetStorage(ctx, driver.StorageDUT)
}

// Behind a hub, strangers' disks plugged before, during and after the
// switch are never taken, even when a filter for every board names them.
func TestHubBoardNeverTakesAStrangersDisk(t *testing.T) {
	ctx := testCtx(t)
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{DiskID: "SanDisk_Ultra_4C530001", DiskAppearDelay: 300 * time.Millisecond})
	before, err := lab.AddDisk("SanDisk_Cruzer_0BEF0RE", 1<<20)
	require.NoError(t, err)
	o := lab.Options()
	o.StorageFilter = "SanDisk"
	d := scanWith(t, o, dutlink.TransportAuto)
	during := lab.ForeignOnSwitch(t, b, "SanDisk_Cruzer_1DUR1NG", 100*time.Millisecond)
	img := make([]byte, 4096)
	_, _ = rand.Read(img)
	require.NoError(t, flashOnce(ctx, d, img))
	assert.True(t, dutlinksim.DiskHas(t, b.DiskFile(), img))
	dutlinksim.Untouched(t, before)
	dutlinksim.Untouched(t, during())
}

// The shell transport waits for the escape's answer: from console mode
// (how 0.08 and 0.09 boot, and how the driver leaves every board), every
// exchange works and no command is typed into the DUT.
func TestShellExchangesFromConsoleModeNeverReachTheDUT(t *testing.T) {
	for _, version := range []string{"0.07", "0.08", "0.09"} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			lab := dutlinksim.NewTestLab(t)
			b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: version, Config: map[string]string{"name": "n1"}})
			for i := range 10 {
				d := scanWith(t, lab.Options(), dutlink.TransportShell) // a dut list
				_, err := d.FirmwareVersion(ctx)
				require.NoError(t, err, "exchange %d", i)
				require.NoError(t, d.SetPin(ctx, "a", driver.PinHigh), "exchange %d", i)
			}
			assert.Empty(t, strings.Trim(string(b.DUTInput()), "\x02"), "only the escape reaches the DUT")
			assert.False(t, b.AtShell())
		})
	}
}

// Over USB, a power request completes before its sequence runs, and 0.08
// runs the sequence of its last snapshot: after a reboot (no snapshot) and
// after power_on was changed at the shell, power on must still run the
// sequence in flash, and return only once it has.
func TestUSBPowerRunsTheSequenceInFlash(t *testing.T) {
	for _, version := range []string{"0.08", "0.09"} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			lab := dutlinksim.NewTestLab(t)
			b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: version, Config: map[string]string{"power_on": "p1,bL,w5,bZ"}})
			d := scanWith(t, lab.Options(), dutlink.TransportUSB)
			b.Reboot()
			n := len(b.Events())
			require.NoError(t, d.PowerOn(ctx))
			assert.Equal(t, []string{"power on", "pin b l", "wait 500ms", "pin b z"}, b.Events()[n:], "the sequence ran, and had run when PowerOn returned")

			require.NoError(t, d.PowerOff(ctx))
			sh := scanWith(t, lab.Options(), dutlink.TransportShell) // another tool, at the shell
			require.NoError(t, sh.SetConfig(ctx, "power_on", "p1,cL"))
			n = len(b.Events())
			require.NoError(t, d.PowerOn(ctx))
			assert.Equal(t, []string{"power on", "pin c l"}, b.Events()[n:])
		})
	}
}

// offTimes returns how long the DUT stayed off before each power on.
func offTimes(log []dutlinksim.PowerChange) []time.Duration {
	var out []time.Duration
	var off time.Time
	for _, c := range log {
		if !c.On {
			off = c.At
		} else if !off.IsZero() {
			out = append(out, c.At.Sub(off))
		}
	}
	return out
}

// Cycle keeps the DUT off for the time asked, counted from the moment its
// power was really cut: with power_off=w5,p0 the cut comes 500 ms after
// the request completed; with p0,w5 it comes first and the sequence's own
// wait counts.
func TestCycleCountsFromTheRealPowerCut(t *testing.T) {
	for _, g := range dutlinksim.Generations {
		for _, seq := range []string{"w5,p0", "p0,w5"} {
			t.Run(g.Name+"/"+seq, func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t)
				lab := dutlinksim.NewTestLab(t)
				b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: g.Version, Config: map[string]string{"power_off": seq}})
				d := scanWith(t, lab.Options(), g.Transport)
				require.NoError(t, d.PowerOn(ctx))
				require.NoError(t, d.Cycle(ctx, 300*time.Millisecond))
				assert.True(t, b.Power())
				offs := offTimes(b.PowerLog())
				require.Len(t, offs, 1)
				assert.GreaterOrEqual(t, offs[0], 300*time.Millisecond)
				if seq == "p0,w5" && g.Want == dutlink.TransportUSB {
					assert.Less(t, offs[0], 1500*time.Millisecond, "the wait after the cut counts toward the off time")
				}
				t.Logf("off for %s", offs[0])
			})
		}
	}
}

// Whoever switches the mux away from the host flushes and ejects the disk
// there, also when another process switched it to the host.
func TestStorageLeftAtTheHostByAnotherProcessIsEjected(t *testing.T) {
	for _, g := range dutlinksim.Generations {
		t.Run(g.Name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			lab := dutlinksim.NewTestLab(t)
			b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: g.Version})
			first := scanWith(t, lab.Options(), g.Transport)
			require.NoError(t, first.SetStorage(ctx, driver.StorageHost))
			target, err := first.BlockTarget(ctx)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(target, []byte("written by the first process"), 0))

			second := scanWith(t, lab.Options(), g.Transport)
			require.NoError(t, second.SetStorage(ctx, driver.StorageDUT))
			assert.Len(t, b.Ejected(), 1, "the second process ejected the disk it found at the host")
			assert.Equal(t, "dut", b.Storage())
			assert.True(t, dutlinksim.DiskHas(t, b.DiskFile(), []byte("written by the first process")))
		})
	}
}

// A shell exchange that fails (here: its context ends while the board is
// busy with a USB power sequence) still returns the board to console mode,
// or the DUT's output would be discarded afterwards.
func TestFailedExchangeReturnsToConsoleMode(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.08", Config: map[string]string{"power_on": "p1,w15"}})
	usb := scanWith(t, lab.Options(), dutlink.TransportUSB)
	sh := scanWith(t, lab.Options(), dutlink.TransportShell)
	powered := make(chan error, 1)
	go func() { powered <- usb.PowerOn(testCtx(t)) }()
	require.Eventually(t, b.Power, 5*time.Second, time.Millisecond, "the sequence started")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := sh.FirmwareVersion(ctx)
	require.Error(t, err, "the board is busy for 1.5 s")
	require.NoError(t, <-powered)
	require.Eventually(t, func() bool { return bytes.Contains(b.DUTInput(), []byte("\x02\x02\x02\x02\x02")) }, 5*time.Second, time.Millisecond, "the firmware took the escape")
	// It switches to its shell right after it forwarded the escape's packet.
	assert.Never(t, b.AtShell, 300*time.Millisecond, time.Millisecond, "the failed exchange returned the board to console mode")
}

// A board that another program left at its shell is put back in console
// mode when its console opens, whatever the transport: the DUT's output
// reaches the console.
func TestConsoleOpensInConsoleMode(t *testing.T) {
	for _, g := range dutlinksim.Generations {
		t.Run(g.Name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			lab := dutlinksim.NewTestLab(t)
			b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: g.Version})
			leaveAtShell(t, b)
			d := scanWith(t, lab.Options(), g.Transport)
			con, err := d.OpenConsole(ctx)
			require.NoError(t, err)
			defer con.Close()
			assert.False(t, b.AtShell())
			require.NoError(t, d.PowerOn(ctx))
			want := "DUT " + b.Serial() + ": booted"
			got := readUntil(t, con, want)
			assert.Contains(t, got, want)
		})
	}
}

// leaveAtShell escapes the board to its shell, as another program would,
// and closes the tty.
func leaveAtShell(t *testing.T, b *dutlinksim.Board) {
	t.Helper()
	f := holdTTY(t, b.TTY())
	if !b.AtShell() {
		_, err := f.Write([]byte("\x02\x02\x02\x02\x02"))
		require.NoError(t, err)
		require.Eventually(t, b.AtShell, 5*time.Second, time.Millisecond)
	}
	require.NoError(t, f.Close())
}

// readUntil reads r until want arrived, within 10 s.
func readUntil(t *testing.T, r interface{ Read([]byte) (int, error) }, want string) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		var buf []byte
		p := make([]byte, 256)
		for {
			n, err := r.Read(p)
			buf = append(buf, p[:n]...)
			if bytes.Contains(buf, []byte(want)) || err != nil {
				got <- string(buf)
				return
			}
		}
	}()
	select {
	case s := <-got:
		return s
	case <-time.After(10 * time.Second):
		t.Fatalf("no %q within 10 s", want)
		return ""
	}
}

// A board whose config (written by another tool) overflows the shell's
// 512-byte get-config reply is still discovered: what arrived is parsed,
// the cut keys are named with what to clear, only shrinking writes are
// taken, and json can be cleared whatever the transport.
func TestConfigThatOverflowsTheShellReply(t *testing.T) {
	js := fmt.Sprintf(`{"note":%q}`, strings.Repeat("x", 440))
	for _, g := range dutlinksim.Generations {
		t.Run(g.Name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			lab := dutlinksim.NewTestLab(t)
			b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: g.Version, Config: map[string]string{"name": "full-1", "json": js}})
			var logs strings.Builder
			var mu sync.Mutex
			o := lab.Options()
			o.Logf = func(f string, a ...any) { mu.Lock(); fmt.Fprintf(&logs, f+"\n", a...); mu.Unlock() }
			d := scanWith(t, o, g.Transport)
			assert.Equal(t, "full-1", d.Name(), "discovered by name")
			if g.Want == dutlink.TransportShell {
				assert.Equal(t, []string{"power_off", "power_rescue"}, d.ConfigCut())
				mu.Lock()
				assert.Contains(t, logs.String(), "dut config "+b.Serial()+" set json ''")
				mu.Unlock()
			}
			err := d.SetConfig(ctx, "tags", "a,b")
			require.ErrorIs(t, err, dutlink.ErrBadConfig, "json counts toward the reply over USB too")
			assert.Contains(t, err.Error(), "json")
			assert.Empty(t, b.Config()["tags"])
			require.NoError(t, d.SetConfig(ctx, "json", ""))
			assert.Empty(t, b.Config()["json"])
			require.NoError(t, d.SetConfig(ctx, "tags", "a,b"))
			_, err = d.Config(ctx)
			require.NoError(t, err)
			assert.Empty(t, d.ConfigCut())
		})
	}
}

// A root-port board's own filter that also names a stranger's disk present
// before the switch is too broad: once that disk stays with the board's
// storage off, the switch is refused, nothing written. A disk the filter
// names before the switch that is the board's own (left at the host by
// another process) vanishes with the storage off, and the switch goes on.
func TestRootPortFilterThatNamesAStrangerIsRefused(t *testing.T) {
	ctx := testCtx(t)
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{RootPort: true, DiskID: "SanDisk_Ultra_4C530001"})
	before, err := lab.AddDisk("SanDisk_Cruzer_0BEF0RE", 1<<20)
	require.NoError(t, err)

	broad := lab.Options()
	broad.StorageFilters = map[string]string{b.Serial(): "SanDisk"}
	err = scanWith(t, broad, dutlink.TransportAuto).SetStorage(ctx, driver.StorageHost)
	require.ErrorIs(t, err, dutlink.ErrUnprovenDisk)
	assert.Contains(t, err.Error(), "stayed at the host")
	assert.Equal(t, "off", b.Storage())
	assert.NotContains(t, b.Events(), "storage host")
	dutlinksim.Untouched(t, before)

	own := lab.Options()
	own.StorageFilters = map[string]string{b.Serial(): "4C530001"}
	require.NoError(t, scanWith(t, own, dutlink.TransportAuto).SetStorage(ctx, driver.StorageHost))
	second := scanWith(t, own, dutlink.TransportAuto) // another process; the storage is at the host
	require.NoError(t, second.SetStorage(ctx, driver.StorageHost))
	f, err := openTarget(ctx, second)
	require.NoError(t, err, "the board's disk, proved")
	require.NoError(t, f.Close())
	require.NoError(t, second.SetStorage(ctx, driver.StorageOff))
}
