package drivertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

// checks are the contract's checks, in the order they run.
var checks = []check{
	{name: "identity", run: checkIdentity},
	{name: "power", need: "power", run: checkPower},
	{name: "force-power", need: "force_power", run: checkForcePower},
	{name: "rescue", need: "rescue", run: checkRescue},
	{name: "reset", need: "reset", run: checkReset},
	{name: "storage", need: "storage", run: checkStorage},
	{name: "storage-while-powered", need: "storage", run: checkStorageWhilePowered},
	{name: "console", need: "console", run: checkConsole},
	{name: "pins", need: "pins", run: checkPins},
	{name: "meter", need: "meter", run: checkMeter},
	{name: "config", need: "config", run: checkConfig},
	{name: "context", run: checkContext},
	{name: "close", run: checkClose},
	{name: "gone", run: checkGone, unable: func(c *config) string {
		if c.unplug == nil {
			return "no Unplug option: what a vanished device answers is not checked"
		}
		return ""
	}},
}

func checkIdentity(r *run) {
	if r.dev.Name() == "" {
		r.errorf("Name is empty")
	}
	if r.dev.Driver() == "" {
		r.errorf("Driver is empty")
	}
	for _, tag := range r.dev.Tags() {
		if tag == "" {
			r.errorf("Tags %q hold an empty tag", r.dev.Tags())
		}
	}
	info := driver.InfoOf(r.dev)
	if info.Key() != r.dev.Driver()+"/"+r.dev.Name() {
		r.errorf("InfoOf(dev).Key() = %q", info.Key())
	}
}

// expectBoot waits for the boot texts of the Console option on c.
func (r *run) expectBoot(c *transcript, what string) {
	if c != nil && r.cfg.console != nil && len(r.cfg.console.Boot) > 0 {
		r.expect(c, "boot output "+what, r.cfg.console.Boot...)
	}
}

// toDUT connects the storage to the DUT, where it has a mux, as the
// harness does before it powers a device on: a device boots from it.
func (r *run) toDUT() {
	if s, ok := driver.Has[driver.StorageMux](r.dev); ok {
		r.call("SetStorage(dut) before booting", func(ctx context.Context) error { return s.SetStorage(ctx, driver.StorageDUT) })
	}
}

// bootConsole opens a console for watching boots, when the device has one
// and the Console option says what a boot prints.
func (r *run) bootConsole() *transcript {
	if _, ok := driver.Has[driver.ConsolePort](r.dev); !ok || r.cfg.console == nil || len(r.cfg.console.Boot) == 0 {
		return nil
	}
	return r.console()
}

// reading reads the meter, when the device has one, checking that the
// reading is plausible; ok is false without a meter or on failure.
func (r *run) reading(what string) (driver.PowerReading, bool) {
	m, ok := driver.Has[driver.PowerMeter](r.dev)
	if !ok {
		return driver.PowerReading{}, false
	}
	var pr driver.PowerReading
	if !r.call("ReadPower "+what, func(ctx context.Context) (err error) { pr, err = m.ReadPower(ctx); return err }) {
		return pr, false
	}
	r.plausible(what, pr)
	return pr, true
}

// plausible checks one meter reading: finite, not negative, and W = V x A
// within 10% when all three are measured.
func (r *run) plausible(what string, pr driver.PowerReading) {
	for _, v := range []float64{pr.Volts, pr.Amps, pr.Watts} {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			r.errorf("ReadPower %s: implausible reading %+v", what, pr)
			return
		}
	}
	if pr.Volts > 0 && pr.Amps > 0 && pr.Watts > 0 && math.Abs(pr.Volts*pr.Amps-pr.Watts) > 0.1*pr.Watts+0.05 {
		r.errorf("ReadPower %s: %+v: watts are not volts times amps", what, pr)
	}
}

// meterFollows checks that the meter reads more with the power on.
func (r *run) meterFollows(off, on driver.PowerReading, what string) {
	if on.Watts <= off.Watts && !r.skipped("meter-follows-power") {
		r.errorf("the meter reads %.3f W with the power on (%s) and %.3f W off: the power did not switch, or the meter does not measure it", on.Watts, what, off.Watts)
	}
}

// cycle switches the power with on and off as a power check does: off,
// on, on again, off, off again, on, off; watching what it can.
func (r *run) cycle(onName string, on func(context.Context) error, offName string, off func(context.Context) error) {
	if !r.observable() {
		r.cfg.logf("%s: the power state cannot be observed (no PowerState or Console option, no meter): only the errors are checked", r.name)
	}
	con := r.bootConsole()
	r.toDUT()
	if !r.call(offName+" (from any state)", off) {
		return
	}
	r.wantPower(offName, false)
	offR, haveMeter := r.reading("after " + offName)
	if !r.call(onName, on) {
		return
	}
	r.wantPower(onName, true)
	r.expectBoot(con, "after "+onName)
	onR, haveOn := r.reading("after " + onName)
	if haveOn && haveMeter {
		r.meterFollows(offR, onR, "after "+onName)
	}
	r.call(onName+" when on", on)
	r.wantPower(onName+" when on", true)
	if !r.call(offName, off) {
		return
	}
	r.wantPower(offName, false)
	if offAgain, ok := r.reading("after " + offName); ok && haveOn {
		r.meterFollows(offAgain, onR, "before "+offName)
	}
	r.call(offName+" when off", off)
	r.wantPower(offName+" when off", false)
	if !r.call(onName+" after "+offName, on) {
		return
	}
	r.wantPower(onName+" after "+offName, true)
	r.expectBoot(con, "after "+offName+" and "+onName+" again (a power-off that cut nothing shows no new boot)")
	r.call(offName, off)
	r.wantPower(offName, false)
}

func checkPower(r *run) {
	p := r.dev.(driver.Power)
	r.cycle("PowerOn", p.PowerOn, "PowerOff", p.PowerOff)
}

func checkForcePower(r *run) {
	p := r.dev.(driver.ForcePower)
	r.cycle("ForceOn", p.ForceOn, "ForceOff", p.ForceOff)
}

// powerOff powers the device off at the end of a check, if it can.
func (r *run) powerOff() {
	if p, ok := driver.Has[driver.Power](r.dev); ok {
		r.call("PowerOff", p.PowerOff)
		r.wantPower("PowerOff", false)
	} else if p, ok := driver.Has[driver.ForcePower](r.dev); ok {
		r.call("ForceOff", p.ForceOff)
	}
}

func checkRescue(r *run) {
	var con *transcript
	spec := r.cfg.console
	if _, ok := driver.Has[driver.ConsolePort](r.dev); ok && spec != nil && len(spec.Rescue) > 0 {
		con = r.console()
	}
	r.toDUT()
	offR, haveMeter := r.reading("before Rescue")
	if !r.call("Rescue", r.dev.(driver.Rescuer).Rescue) {
		return
	}
	r.wantPower("Rescue", true)
	if con != nil {
		r.expect(con, "rescue output", spec.Rescue...)
	}
	if onR, ok := r.reading("after Rescue"); ok && haveMeter {
		r.meterFollows(offR, onR, "after Rescue")
	}
	r.powerOff()
}

func checkReset(r *run) {
	rs := r.dev.(driver.Resetter)
	p, hasPower := driver.Has[driver.Power](r.dev)
	if !hasPower {
		r.call("Reset", rs.Reset)
		return
	}
	con := r.bootConsole()
	r.toDUT()
	if !r.call("PowerOff", p.PowerOff) {
		return
	}
	ctx, cancel := r.ctx()
	err := rs.Reset(ctx)
	cancel()
	if err != nil && !errors.Is(err, driver.ErrPoweredOff) {
		r.errorf("Reset while powered off: %q: want success or an error wrapping %q", err, driver.ErrPoweredOff)
	}
	r.wantPower("Reset while off", false)
	if !r.call("PowerOn", p.PowerOn) {
		return
	}
	r.expectBoot(con, "after PowerOn")
	if r.call("Reset while on", rs.Reset) {
		r.wantPower("Reset", true)
		if spec := r.cfg.console; con != nil && !r.skipped("reset-reboots") {
			texts := spec.Reset
			if texts == nil {
				texts = spec.Boot
			}
			r.expect(con, "console output after Reset", texts...)
		}
	}
	r.powerOff()
}

// marker is written to the host-side target to prove it is the storage.
var marker = []byte("drivertest: this block is restored when the check ends\n")

func checkStorage(r *run) {
	s := r.dev.(driver.StorageMux)
	if _, ok := driver.Has[driver.Power](r.dev); ok {
		r.powerOff()
	}
	set := func(m driver.StorageMode) bool {
		return r.call(fmt.Sprintf("SetStorage(%s)", m), func(ctx context.Context) error { return s.SetStorage(ctx, m) })
	}
	notOnHost := func(at driver.StorageMode) {
		r.wantErr(fmt.Sprintf("BlockTarget at %s", at), driver.ErrStorageNotOnHost, func(ctx context.Context) error {
			_, err := s.BlockTarget(ctx)
			return err
		})
	}
	if !set(driver.StorageOff) {
		return
	}
	notOnHost(driver.StorageOff)
	if !set(driver.StorageHost) {
		return
	}
	orig, ok := r.writeTarget(s, nil)
	if !ok {
		set(driver.StorageOff)
		return
	}
	set(driver.StorageHost)
	if set(driver.StorageDUT) {
		notOnHost(driver.StorageDUT)
	}
	if set(driver.StorageOff) {
		notOnHost(driver.StorageOff)
	}
	if set(driver.StorageHost) {
		r.writeTarget(s, orig)
	}
	set(driver.StorageOff)
	r.wantErr(`SetStorage("sideways")`, driver.ErrInvalidArgument, func(ctx context.Context) error {
		return s.SetStorage(ctx, "sideways")
	})
}

// writeTarget opens the block target. With restore nil it saves the first
// bytes, writes the marker and returns what it saved; otherwise it checks
// that the marker is still there (the target is the same storage) and
// writes restore back.
func (r *run) writeTarget(s driver.StorageMux, restore []byte) ([]byte, bool) {
	var path string
	if !r.call("BlockTarget at host", func(ctx context.Context) (err error) { path, err = s.BlockTarget(ctx); return err }) {
		return nil, false
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		r.errorf("the block target at host cannot be opened for writing: %v", err)
		return nil, false
	}
	defer f.Close()
	if tc, ok := s.(driver.TargetChecker); ok {
		if err := tc.CheckTarget(f); err != nil {
			r.errorf("CheckTarget refuses the block target %s: %v", path, err)
			return nil, false
		}
	}
	got := make([]byte, len(marker))
	if _, err := f.ReadAt(got, 0); err != nil && !errors.Is(err, io.EOF) {
		r.errorf("reading the block target %s: %v", path, err)
		return nil, false
	}
	out := restore
	if restore == nil {
		out = got
		restore = marker
	} else if !bytes.Equal(got, marker) {
		r.errorf("the block target %s does not hold what was written to it before the storage went to the DUT and back: %q", path, got)
	}
	if _, err := f.WriteAt(restore, 0); err != nil {
		r.errorf("writing the block target %s at host: %v", path, err)
		return nil, false
	}
	if err := f.Sync(); err != nil {
		r.errorf("syncing the block target %s: %v", path, err)
	}
	return out, true
}

func checkStorageWhilePowered(r *run) {
	s := r.dev.(driver.StorageMux)
	p, ok := driver.Has[driver.Power](r.dev)
	if !ok {
		r.cfg.logf("%s: the device has no power switch", r.name)
		return
	}
	if !r.call("SetStorage(dut)", func(ctx context.Context) error { return s.SetStorage(ctx, driver.StorageDUT) }) ||
		!r.call("PowerOn", p.PowerOn) {
		return
	}
	toHost := func(ctx context.Context) error { return s.SetStorage(ctx, driver.StorageHost) }
	if r.cfg.hostWhenOn {
		r.call("SetStorage(host) while powered on (HostStorageWhilePowered)", toHost)
	} else {
		r.wantErr("SetStorage(host) while powered on", driver.ErrPoweredOn, toHost)
	}
	r.powerOff()
	r.call("SetStorage(host) once powered off", toHost)
	r.call("SetStorage(off)", func(ctx context.Context) error { return s.SetStorage(ctx, driver.StorageOff) })
}

func checkConsole(r *run) {
	cp := r.dev.(driver.ConsolePort)
	c := r.console()
	if c == nil {
		return
	}
	if !r.skipped("console-busy") {
		ctx, cancel := r.ctx()
		second, err := cp.OpenConsole(ctx)
		cancel()
		switch {
		case err == nil:
			_ = second.Close()
			r.errorf("a second OpenConsole while one is open succeeded, want an error wrapping %q", driver.ErrConsoleBusy)
		case !errors.Is(err, driver.ErrConsoleBusy):
			r.errorf("a second OpenConsole while one is open: %q does not wrap %q", err, driver.ErrConsoleBusy)
		}
	}
	r.consoleAcrossPowerCycles(c)
	r.consoleClose(cp, c)
}

// consoleAcrossPowerCycles boots twice on one stream: both boots must show
// in full, in order, and answer the Send line.
func (r *run) consoleAcrossPowerCycles(c *transcript) {
	spec := r.cfg.console
	p, ok := driver.Has[driver.Power](r.dev)
	if spec == nil || len(spec.Boot) == 0 || !ok {
		r.cfg.logf("%s: no Console option (or no power switch): the console's output across power cycles is not checked", r.name)
		return
	}
	r.toDUT()
	for i := 1; i <= 2; i++ {
		if !r.call(fmt.Sprintf("PowerOn (boot %d)", i), p.PowerOn) {
			return
		}
		if !r.expect(c, fmt.Sprintf("boot %d on one console stream", i), spec.Boot...) {
			return
		}
		if spec.Send != "" {
			if _, err := io.WriteString(c.rw, spec.Send); err != nil {
				r.errorf("console Write (boot %d): %v", i, err)
				return
			}
			r.expect(c, fmt.Sprintf("reply to %q (boot %d)", spec.Send, i), spec.Reply...)
		}
		if !r.call(fmt.Sprintf("PowerOff (boot %d)", i), p.PowerOff) {
			return
		}
	}
}

// consoleClose closes the console stream: a pending Read ends, later calls
// fail with driver.ErrClosed, Close again is fine and the console opens
// again.
func (r *run) consoleClose(cp driver.ConsolePort, c *transcript) {
	if err := c.rw.Close(); err != nil {
		r.errorf("console Close: %v", err)
	}
	if _, ok := c.ended(r.cfg.wait()); !ok {
		r.errorf("console Close did not end a pending Read within %v", r.cfg.wait())
	}
	if _, err := c.rw.Write([]byte("x")); !errors.Is(err, driver.ErrClosed) {
		r.errorf("console Write after Close: %v, want an error wrapping %q", err, driver.ErrClosed)
	}
	if _, err, ok := readOnce(c.rw, r.cfg.wait()); !ok {
		r.errorf("console Read after Close blocks")
	} else if !errors.Is(err, driver.ErrClosed) {
		r.errorf("console Read after Close: %v, want an error wrapping %q", err, driver.ErrClosed)
	}
	if err := c.rw.Close(); err != nil {
		r.errorf("console Close twice: %v", err)
	}
	ctx, cancel := r.ctx()
	defer cancel()
	again, err := cp.OpenConsole(ctx)
	if err != nil {
		r.errorf("OpenConsole after the console was closed: %v", err)
		return
	}
	if err := again.Close(); err != nil {
		r.errorf("console Close: %v", err)
	}
}

func checkPins(r *run) {
	pins := r.dev.(driver.Pins)
	names := pins.PinNames()
	if len(names) == 0 {
		r.errorf("PinNames is empty")
	}
	seen := map[string]bool{}
	for _, n := range names {
		if n == "" || seen[n] {
			r.errorf("PinNames %q holds an empty or repeated name", names)
		}
		seen[n] = true
	}
	for _, n := range names {
		for _, l := range []driver.PinLevel{driver.PinHigh, driver.PinLow, driver.PinFloating} {
			what := fmt.Sprintf("SetPin(%s, %s)", n, l)
			if r.call(what, func(ctx context.Context) error { return pins.SetPin(ctx, n, l) }) && r.cfg.pinLevel != nil {
				if got := r.cfg.pinLevel(r.dev, n); got != l {
					r.errorf("after %s the pin is %s", what, got)
				}
			}
		}
	}
	r.wantErr(`SetPin("no-such-pin")`, driver.ErrInvalidArgument, func(ctx context.Context) error {
		return pins.SetPin(ctx, "no-such-pin", driver.PinHigh)
	})
	if len(names) > 0 {
		r.wantErr(fmt.Sprintf(`SetPin(%s, "sideways")`, names[0]), driver.ErrInvalidArgument, func(ctx context.Context) error {
			return pins.SetPin(ctx, names[0], "sideways")
		})
	}
}

func checkMeter(r *run) {
	p, ok := driver.Has[driver.Power](r.dev)
	if !ok {
		r.reading("")
		return
	}
	if !r.call("PowerOff", p.PowerOff) {
		return
	}
	off, _ := r.reading("while off")
	if !r.call("PowerOn", p.PowerOn) {
		return
	}
	if on, ok := r.reading("while on"); ok {
		r.meterFollows(off, on, "while on")
	}
	r.powerOff()
}

func checkConfig(r *run) {
	c := r.dev.(driver.Configurer)
	var cfg map[string]string
	if !r.call("Config", func(ctx context.Context) (err error) { cfg, err = c.Config(ctx); return err }) {
		return
	}
	if cfg == nil {
		r.errorf("Config returned a nil map")
	}
	if !r.skipped("config-unknown-key") {
		r.wantErr(`SetConfig("drivertest-no-such-key")`, driver.ErrInvalidArgument, func(ctx context.Context) error {
			return c.SetConfig(ctx, "drivertest-no-such-key", "x")
		})
	}
	key, val := r.cfg.configKey, r.cfg.configVal
	if key == "" {
		r.cfg.logf("%s: no ConfigKey option: the round trip is not checked", r.name)
		return
	}
	orig, had := cfg[key]
	roundTrip := func(v string) {
		if !r.call(fmt.Sprintf("SetConfig(%s, %q)", key, v), func(ctx context.Context) error { return c.SetConfig(ctx, key, v) }) {
			return
		}
		var got map[string]string
		if r.call("Config", func(ctx context.Context) (err error) { got, err = c.Config(ctx); return err }) && got[key] != v {
			r.errorf("after SetConfig(%s, %q) Config()[%s] = %q", key, v, key, got[key])
		}
	}
	roundTrip(val)
	if had {
		roundTrip(orig)
	}
}

// ctxCall is one call of a capability method, for the context check.
type ctxCall struct {
	name string
	fn   func(ctx context.Context) error
}

// ctxCalls lists a call of every method the device claims that takes a
// context, with arguments that change its state.
func (r *run) ctxCalls() []ctxCall {
	var calls []ctxCall
	add := func(name string, fn func(ctx context.Context) error) { calls = append(calls, ctxCall{name, fn}) }
	if p, ok := driver.Has[driver.Power](r.dev); ok {
		add("PowerOn", p.PowerOn)
		add("PowerOff", p.PowerOff)
	}
	if p, ok := driver.Has[driver.ForcePower](r.dev); ok {
		add("ForceOn", p.ForceOn)
		add("ForceOff", p.ForceOff)
	}
	if p, ok := driver.Has[driver.Rescuer](r.dev); ok {
		add("Rescue", p.Rescue)
	}
	if p, ok := driver.Has[driver.Resetter](r.dev); ok {
		add("Reset", p.Reset)
	}
	if s, ok := driver.Has[driver.StorageMux](r.dev); ok {
		add("SetStorage(host)", func(ctx context.Context) error { return s.SetStorage(ctx, driver.StorageHost) })
		add("BlockTarget", func(ctx context.Context) error { _, err := s.BlockTarget(ctx); return err })
	}
	if cp, ok := driver.Has[driver.ConsolePort](r.dev); ok {
		add("OpenConsole", func(ctx context.Context) error {
			rw, err := cp.OpenConsole(ctx)
			if err == nil {
				_ = rw.Close()
			}
			return err
		})
	}
	if p, ok := driver.Has[driver.Pins](r.dev); ok && len(p.PinNames()) > 0 {
		pin := p.PinNames()[0]
		add("SetPin("+pin+", high)", func(ctx context.Context) error { return p.SetPin(ctx, pin, driver.PinHigh) })
	}
	if m, ok := driver.Has[driver.PowerMeter](r.dev); ok {
		add("ReadPower", func(ctx context.Context) error { _, err := m.ReadPower(ctx); return err })
	}
	if c, ok := driver.Has[driver.Configurer](r.dev); ok {
		add("Config", func(ctx context.Context) error { _, err := c.Config(ctx); return err })
		if r.cfg.configKey != "" {
			add("SetConfig("+r.cfg.configKey+")", func(ctx context.Context) error { return c.SetConfig(ctx, r.cfg.configKey, r.cfg.configVal) })
		}
	}
	return calls
}

func checkContext(r *run) {
	r.powerOff()
	if s, ok := driver.Has[driver.StorageMux](r.dev); ok {
		r.call("SetStorage(off)", func(ctx context.Context) error { return s.SetStorage(ctx, driver.StorageOff) })
	}
	calls := r.ctxCalls()
	for _, c := range calls {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r.wantCtxErr(c, "an already cancelled context", ctx, context.Canceled)
		ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		r.wantCtxErr(c, "an expired deadline", ctx, context.DeadlineExceeded)
		cancel()
	}
	// Nothing may have changed: the calls failed before they did anything.
	r.wantPower("calls with ended contexts", false)
	if s, ok := driver.Has[driver.StorageMux](r.dev); ok {
		r.wantErr("BlockTarget after SetStorage(host) with an ended context", driver.ErrStorageNotOnHost, func(ctx context.Context) error {
			_, err := s.BlockTarget(ctx)
			return err
		})
	}
	if cp, ok := driver.Has[driver.ConsolePort](r.dev); ok {
		r.call("OpenConsole after OpenConsole with an ended context", func(ctx context.Context) error {
			rw, err := cp.OpenConsole(ctx)
			if err == nil {
				err = rw.Close()
			}
			return err
		})
	}
	r.shortDeadlines(calls)
}

// wantCtxErr runs c with ctx, which has ended: it must fail promptly with
// an error wrapping want.
func (r *run) wantCtxErr(c ctxCall, how string, ctx context.Context, want error) {
	start := time.Now()
	err := c.fn(ctx)
	took := time.Since(start)
	switch {
	case err == nil:
		r.errorf("%s with %s succeeded, want an error wrapping %v", c.name, how, want)
	case !errors.Is(err, want):
		r.errorf("%s with %s: %q does not wrap %v", c.name, how, err, want)
	}
	if took > r.cfg.prompt() {
		r.errorf("%s with %s took %v, more than %v", c.name, how, took.Round(time.Millisecond), r.cfg.prompt())
	}
}

// shortDeadlines runs each call with deadlines a few milliseconds away
// (which end at different points of the call): it must return by then
// (give or take the settle time, for what a driver undoes after an
// interrupted step), with success or an error wrapping
// context.DeadlineExceeded.
func (r *run) shortDeadlines(calls []ctxCall) {
	for _, short := range []time.Duration{time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond} {
		for _, c := range calls {
			ctx, cancel := context.WithTimeout(context.Background(), short)
			start := time.Now()
			err := c.fn(ctx)
			took := time.Since(start)
			cancel()
			if err != nil && !errors.Is(err, context.DeadlineExceeded) && !expectedError(err) {
				r.errorf("%s with a %v deadline: %q neither succeeds nor wraps %v", c.name, short, err, context.DeadlineExceeded)
			}
			if took > short+r.cfg.settle() {
				r.errorf("%s with a %v deadline took %v", c.name, short, took.Round(time.Millisecond))
			}
		}
		r.powerOff()
		if s, ok := driver.Has[driver.StorageMux](r.dev); ok {
			r.call("SetStorage(off)", func(ctx context.Context) error { return s.SetStorage(ctx, driver.StorageOff) })
		}
	}
}

// expectedError reports whether err is one a call may return in the state
// the short-deadline calls leave the device in (Reset while off, storage
// to host while on, no block target).
func expectedError(err error) bool {
	return slices.ContainsFunc([]error{driver.ErrPoweredOff, driver.ErrPoweredOn, driver.ErrStorageNotOnHost}, func(s error) bool {
		return errors.Is(err, s)
	})
}

func checkClose(r *run) {
	cl, ok := driver.Has[driver.Closer](r.dev)
	if !ok {
		r.cfg.logf("%s: the device has no Close", r.name)
		return
	}
	var con *transcript
	if _, ok := driver.Has[driver.ConsolePort](r.dev); ok {
		con = r.console()
	}
	if err := cl.Close(); err != nil {
		r.errorf("Close: %v", err)
	}
	if con != nil {
		err, ended := con.ended(r.cfg.wait())
		switch {
		case !ended:
			r.errorf("Close did not end a pending console Read within %v", r.cfg.wait())
		case !errors.Is(err, driver.ErrClosed):
			r.errorf("console Read after the device's Close: %v, want an error wrapping %q", err, driver.ErrClosed)
		}
	}
	for _, c := range r.ctxCalls() {
		r.wantErr(c.name+" after Close", driver.ErrClosed, c.fn)
	}
	if err := cl.Close(); err != nil {
		r.errorf("Close twice: %v", err)
	}
}

func checkGone(r *run) {
	var con *transcript
	if _, ok := driver.Has[driver.ConsolePort](r.dev); ok {
		con = r.console()
	}
	r.cfg.unplug(r.dev)
	if con != nil {
		err, ended := con.ended(r.cfg.wait())
		switch {
		case !ended:
			r.errorf("a pending console Read did not end within %v of the device vanishing", r.cfg.wait())
		case !errors.Is(err, driver.ErrGone):
			r.errorf("console Read after the device vanished: %v, want an error wrapping %q", err, driver.ErrGone)
		}
	}
	for _, c := range r.ctxCalls() {
		if c.name == "BlockTarget" {
			// A query of state the device keeps may answer from it.
			r.wantEither(c.name+" after the device vanished", driver.ErrGone, driver.ErrStorageNotOnHost, c.fn)
			continue
		}
		r.wantErr(c.name+" after the device vanished", driver.ErrGone, c.fn)
	}
	if cl, ok := r.dev.(driver.Closer); ok {
		if err := cl.Close(); err != nil {
			r.errorf("Close after the device vanished: %v", err)
		}
	}
}
