package dutlinke2e_test

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/faketb"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
)

// setup builds, in code, what a test of lab needs: a dutlink driver value
// over lab (transport tr, then mods applied to its options), a private
// lock directory, bounded timeouts, and a random image of 512 KiB, which it
// returns. Nothing is read from or written to the environment, so tests
// using it run in parallel.
func setup(t *testing.T, lab *dutlinksim.Lab, tr dutlink.TransportKind, mods ...func(*dutlink.Options)) ([]harness.Option, []byte) {
	t.Helper()
	o := lab.Options()
	o.Transport = tr
	for _, m := range mods {
		m(&o)
	}
	img := make([]byte, 512<<10)
	_, _ = rand.Read(img)
	path := filepath.Join(t.TempDir(), "os.img")
	require.NoError(t, os.WriteFile(path, img, 0o644))
	return []harness.Option{
		harness.WithDrivers(dutlink.New(o)),
		harness.WithLockDir(t.TempDir()),
		harness.WithAcquireTimeout(10 * time.Second),
		harness.WithStepTimeout(30 * time.Second),
		harness.WithCommandTimeout(30 * time.Second), // generous: the tests run in parallel, under -race
		harness.WithImage(path),
	}, img
}

// filter sets the storage filter of every board.
func filter(f string) func(*dutlink.Options) {
	return func(o *dutlink.Options) { o.StorageFilter = f }
}

// TestHarnessEndToEnd drives every capability through harness.Acquire for
// both firmware dutlinksim.Generations and both transports: acquire (known state),
// flash (storage host, disk identified, CheckTarget, flush, eject), power on
// with the storage at the DUT, the console (DUT banner, input and echo),
// pins, reset, meter, config, rescue, force power, and cleanup (DUT off,
// storage off, lock free).
func TestHarnessEndToEnd(t *testing.T) {
	t.Parallel()
	for _, g := range dutlinksim.Generations {
		t.Run(g.Name, func(t *testing.T) {
			t.Parallel()
			lab := dutlinksim.NewTestLab(t)
			b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: g.Version, Config: map[string]string{"name": "bench-1", "tags": "orin"}})
			stranger, err := lab.AddDisk("stranger", 1<<20)
			require.NoError(t, err)
			opts, img := setup(t, lab, g.Transport)
			opts = append(opts, harness.WithTags("orin"))

			f := faketb.New(t)
			var lockPath string
			f.Run(func(tb testing.TB) {
				dut := harness.Acquire(tb, opts...)
				dev, ok := dut.Device().(*dutlink.Device)
				require.True(t, ok, "device is %T", dut.Device())
				assert.Equal(t, "bench-1", dut.Name())
				assert.Equal(t, g.Want, dev.Transport())
				lockPath = dut.Session().LockPath()
				assert.Contains(t, lockPath, "dutlink_bench-1")
				assert.False(t, b.Power())
				assert.Equal(t, "off", b.Storage())

				rep := dut.Flash()
				assert.Equal(t, int64(len(img)), rep.Bytes)
				assert.True(t, dutlinksim.DiskHas(t, b.DiskFile(), img), "the image is on the board's disk")
				assert.Equal(t, "off", b.Storage(), "flash disconnects the storage again")
				assert.Len(t, b.Ejected(), 1)
				assert.NotContains(t, string(mustRead(t, stranger)), string(img[:64]), "the foreign disk is untouched")

				dut.PowerOn()
				assert.True(t, b.Power())
				assert.Equal(t, "dut", b.Storage())
				con := dut.Console()
				con.ExpectString("DUT " + b.Serial() + ": booted")
				con.SendLine("ping")
				con.ExpectString("echo: ping")

				ctx, cancel := dut.Context()
				defer cancel()
				require.NoError(t, dev.SetPin(ctx, "a", driver.PinLow))
				assert.Equal(t, "l", b.Pin("a"))
				require.NoError(t, dev.Reset(ctx))
				assert.Equal(t, "z", b.Pin("r"))
				r, err := dev.ReadPower(ctx)
				require.NoError(t, err)
				assert.InDelta(t, 3.0, r.Watts, 0.001)
				// Output after shell exchanges still reaches the console.
				b.DUTPrint("after-ops\r\n")
				con.ExpectString("after-ops")
				con.SendLine("pong")
				con.ExpectString("echo: pong")

				require.NoError(t, dev.SetConfig(ctx, "power_rescue", "p1,aL,w1,aZ"))
				dut.PowerOff()
				assert.False(t, b.Power())
				require.NoError(t, dev.Rescue(ctx))
				assert.True(t, b.Power())
				assert.Contains(t, strings.Join(b.Events(), "|"), "power on|pin a l|wait 100ms|pin a z")
				require.NoError(t, dev.ForceOff(ctx))
				require.NoError(t, dev.ForceOn(ctx))
				dut.PowerCycle()
				assert.True(t, b.Power())
			})
			require.False(t, f.Failed(), f.Message())
			assert.False(t, b.Power(), "cleanup powered the DUT off")
			assert.Equal(t, "off", b.Storage(), "cleanup disconnected the storage")
			// The lock is free: a second acquire gets the board at once.
			f2 := faketb.New(t)
			f2.Run(func(tb testing.TB) { harness.Acquire(tb, opts...) })
			require.False(t, f2.Failed(), f2.Message())
		})
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return b
}

// TestHarnessFailures checks that what goes wrong in the lab fails the test
// as an infrastructure failure, with an error that says what to do, the DUT
// powered off and nothing written to a disk that is not the board's.
func TestHarnessFailures(t *testing.T) {
	type env struct {
		lab *dutlinksim.Lab
		b   *dutlinksim.Board
		img []byte
	}
	cases := []struct {
		name    string
		gen     int // index into dutlinksim.Generations
		opts    dutlinksim.BoardOptions
		mods    []func(*dutlink.Options)
		acquire []harness.Option
		body    func(t *testing.T, tb testing.TB, dut *harness.DUT, e env)
		want    []string
		errIs   error
		untouch func(e env) []string // disks that must still be blank
	}{
		{
			name: "unknown board", gen: 1,
			acquire: []harness.Option{harness.WithName("nosuch")},
			want:    []string{`no matching device: wanted name "nosuch"`, "found jp-"},
		},
		{
			name: "two disks appear at once", gen: 1, opts: dutlinksim.BoardOptions{TwoDisks: true},
			body:    func(t *testing.T, tb testing.TB, dut *harness.DUT, e env) { dut.Flash() },
			want:    []string{"more than one disk", "remove the extra disk", "DUTLINK_STORAGE_FILTER"},
			errIs:   dutlink.ErrAmbiguousDisk,
			untouch: func(e env) []string { return []string{e.b.DiskFile(), e.b.DiskFile() + ".second"} },
		},
		{
			name: "no disk appears", gen: 0, opts: dutlinksim.BoardOptions{NoDisk: true},
			mods:    []func(*dutlink.Options){func(o *dutlink.Options) { o.StorageTimeout = 300 * time.Millisecond }},
			body:    func(t *testing.T, tb testing.TB, dut *harness.DUT, e env) { dut.Flash() },
			want:    []string{"no disk appeared on the storage port", "within 300ms", "check that the USB storage is plugged"},
			errIs:   dutlink.ErrNoDisk,
			untouch: func(e env) []string { return []string{e.b.DiskFile()} },
		},
		{
			name: "tty closed mid-operation", gen: 0,
			body: func(t *testing.T, tb testing.TB, dut *harness.DUT, e env) {
				e.b.Unplug()
				dut.PowerOn()
			},
			want:  []string{"DUTlink board gone"},
			errIs: dutlink.ErrGone,
		},
		{
			name: "USB transfer error", gen: 1,
			body: func(t *testing.T, tb testing.TB, dut *harness.DUT, e env) {
				e.b.FailUSB(errors.New("libusb: input/output error [code -1]"))
				tb.Cleanup(func() { e.b.FailUSB(nil) }) // runs before the harness's cleanup
				dut.PowerOn()
			},
			want: []string{"usb storage dut", "input/output error"},
		},
		{
			name: "USB board unplugged", gen: 1,
			body: func(t *testing.T, tb testing.TB, dut *harness.DUT, e env) {
				e.b.Unplug()
				dut.PowerOn()
			},
			want:  []string{"the board is gone; check its USB cable and power"},
			errIs: dutlink.ErrGone,
		},
	}
	t.Parallel()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			g := dutlinksim.Generations[c.gen]
			lab := dutlinksim.NewTestLab(t)
			o := c.opts
			o.Version = g.Version
			b := lab.AddBoardT(t, o)
			stranger, err := lab.AddDisk("stranger", 1<<20)
			require.NoError(t, err)
			before := mustRead(t, stranger)
			opts, img := setup(t, lab, g.Transport, c.mods...)
			opts = append(opts, c.acquire...)
			e := env{lab: lab, b: b, img: img}
			f := faketb.New(t)
			f.Run(func(tb testing.TB) {
				dut := harness.Acquire(tb, opts...)
				// A hook to observe the power state after the failure but
				// before the harness's own cleanup.
				c.body(t, tb, dut, e)
			})
			require.True(t, f.Failed(), "the test must fail")
			msg := f.Message()
			for _, w := range c.want {
				assert.Contains(t, msg, w)
			}
			assert.False(t, b.Power(), "the DUT ends powered off")
			assert.Equal(t, before, mustRead(t, stranger), "the foreign disk is untouched")
			if c.untouch != nil {
				for _, p := range c.untouch(e) {
					assert.True(t, dutlinksim.Zeroed(t, p), "%s must not be written", p)
				}
				assert.Equal(t, "off", b.Storage(), "the mux is switched off again")
			}
			if c.errIs != nil {
				assert.Contains(t, msg, c.errIs.Error())
			}
		})
	}
}

// TestHarnessStorageFilterOverride picks the disk by its by-id name when
// the board's storage_filter (json config) or DUTLINK_STORAGE_FILTER says
// so, and refuses a filter that matches a foreign disk too.
func TestHarnessStorageFilterOverride(t *testing.T) {
	t.Parallel()
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.07", Config: map[string]string{"json": `{"storage_filter":"DUTlinkSim_Storage"}`}})
	stranger, err := lab.AddDisk("stranger", 1<<20)
	require.NoError(t, err)
	opts, img := setup(t, lab, dutlink.TransportAuto)
	f := faketb.New(t)
	f.Run(func(tb testing.TB) { harness.Acquire(tb, opts...).Flash() })
	require.False(t, f.Failed(), f.Message())
	assert.True(t, dutlinksim.DiskHas(t, b.DiskFile(), img))

	// A filter that matches every usb-* disk, the foreign one too: only
	// disks below the board's own hub count, so the board's is picked and
	// the stranger stays untouched.
	before, err := os.ReadFile(stranger)
	require.NoError(t, err)
	opts, _ = setup(t, lab, dutlink.TransportAuto, filter("_"))
	f = faketb.New(t)
	f.Run(func(tb testing.TB) { harness.Acquire(tb, opts...).Flash() })
	require.False(t, f.Failed(), f.Message())
	after, err := os.ReadFile(stranger)
	require.NoError(t, err)
	assert.Equal(t, before, after, "the foreign disk the filter also names is untouched")
}

func TestHarnessStorageFilterMatchingTwoOfTheBoardsDisks(t *testing.T) {
	t.Parallel()
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.07", TwoDisks: true})
	opts, _ := setup(t, lab, dutlink.TransportAuto, filter("DUTlinkSim"))
	f := faketb.New(t)
	f.Run(func(tb testing.TB) { harness.Acquire(tb, opts...).Flash() })
	require.True(t, f.Failed())
	assert.Contains(t, f.Message(), "more than one disk")
	assert.Equal(t, "off", b.Storage())
}

// TestUSBConsole reads the DUT console from the separate USB UART named by
// usb_console while the board's own tty stays free for the shell.
func TestUSBConsole(t *testing.T) {
	t.Parallel()
	for _, g := range dutlinksim.Generations {
		t.Run(g.Name, func(t *testing.T) {
			t.Parallel()
			lab := dutlinksim.NewTestLab(t)
			b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: g.Version, USBConsole: "Orin_1421", Config: map[string]string{"usb_console": "Orin_1421"}})
			opts, _ := setup(t, lab, g.Transport)
			f := faketb.New(t)
			f.Run(func(tb testing.TB) {
				dut := harness.Acquire(tb, opts...)
				dev := dut.Device().(*dutlink.Device)
				p, err := dev.ConsolePath()
				require.NoError(t, err)
				assert.Contains(t, p, "serial/by-id/usb-NVIDIA_Tegra_Orin_1421")
				dut.PowerOn()
				con := dut.Console()
				con.ExpectString("DUT " + b.Serial() + ": booted")
				con.SendLine("over-uart")
				con.ExpectString("echo: over-uart")
			})
			require.False(t, f.Failed(), f.Message())
		})
	}

	lab := dutlinksim.NewTestLab(t)
	lab.AddBoardT(t, dutlinksim.BoardOptions{Config: map[string]string{"usb_console": "Missing"}})
	opts, _ := setup(t, lab, "")
	f := faketb.New(t)
	f.Run(func(tb testing.TB) { harness.Acquire(tb, opts...) })
	require.True(t, f.Failed())
	assert.Contains(t, f.Message(), `usb_console="Missing"`)
	assert.Contains(t, f.Message(), "clear usb_console")
}

// TestTwoTestsWaitForOneBoard shows that the harness's lock (keyed by the
// stable name) serializes two tests on one board, and that the board's tty
// held by the first does not hide the board from the second.
func TestTwoTestsWaitForOneBoard(t *testing.T) {
	t.Parallel()
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.07", Config: map[string]string{"name": "shared"}})
	opts, _ := setup(t, lab, "")
	first := faketb.New(t)
	release := make(chan struct{})
	acquired := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		first.Run(func(tb testing.TB) {
			dut := harness.Acquire(tb, opts...)
			dut.PowerOn()
			close(acquired)
			<-release
		})
	}()
	<-acquired
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cfg harness.Config
	for _, o := range opts {
		o(&cfg)
	}
	cfg = cfg.WithDefaults()
	type opened struct {
		s   *harness.Session
		err error
	}
	second := make(chan opened, 1)
	go func() {
		s, err := harness.Open(ctx, cfg, harness.Holder{Test: "second", PID: os.Getpid()}, t.Logf)
		second <- opened{s, err}
	}()
	// The second test queues a ticket in the lock directory while it waits.
	require.Eventually(t, func() bool {
		tickets, _ := filepath.Glob(filepath.Join(cfg.LockDir, "queue", "*.ticket"))
		return len(tickets) > 0
	}, 10*time.Second, 5*time.Millisecond, "the second test waits for the lock")
	close(release)
	got := <-second
	require.NoError(t, got.err)
	s := got.s
	assert.Equal(t, "shared", s.Device().Name())
	<-done
	require.False(t, first.Failed(), first.Message())
	assert.False(t, b.Power(), "the second test starts with the DUT off")
	require.NoError(t, s.Close(context.Background()))
}
