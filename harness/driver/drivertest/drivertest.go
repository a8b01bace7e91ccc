package drivertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

// Option adapts the contract to what one driver's devices promise and show.
type Option func(*config)

// ConsoleSpec says what a device prints on its console after every
// power-on, so that the contract can check that the console shows the board
// reacting and that no byte is lost or reordered across power cycles.
type ConsoleSpec struct {
	// Boot are texts the console shows, in this order, after every
	// power-on (and after a reset, unless the "reset-reboots" check is
	// skipped). Each must follow the one before it. Make them long: a
	// dropped byte is noticed only inside them.
	Boot []string
	// Send, when not empty, is written to the console once Boot has
	// shown; Reply are the texts that must then follow, in order.
	Send  string
	Reply []string
	// Reset are texts the console shows, in order, after Reset; nil
	// means Boot.
	Reset []string
	// Rescue are texts the console shows, in order, after Rescue.
	Rescue []string
}

type config struct {
	console    *ConsoleSpec
	powerState func(driver.Device) bool
	timeout    time.Duration
	scale      float64
	skips      map[string]string
	hostWhenOn bool
	configKey  string
	configVal  string
	logf       func(format string, args ...any)
	unplug     func(driver.Device)
	pinLevel   func(driver.Device, string) driver.PinLevel
}

// Console declares the console output the device shows; see [ConsoleSpec].
// Without it the contract cannot see the board react and checks less.
func Console(spec ConsoleSpec) Option { return func(c *config) { c.console = &spec } }

// PowerState gives the contract a way to observe whether the device is
// powered (a driver's test hook, such as the simulator's PowerState): after
// every power operation it must report what was asked for, and after a
// call that failed on its context, what was there before.
func PowerState(on func(dev driver.Device) bool) Option {
	return func(c *config) { c.powerState = on }
}

// Timeout sets how long the contract waits for one thing to happen (console
// output, a call to return); the default is 10s. Calls with a context that
// has ended must return within a tenth of it; calls whose deadline ends
// while they run, within a quarter of it after the deadline.
func Timeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// TimeoutScale multiplies every timeout, for slow devices (a QEMU VM under
// TCG on a busy host).
func TimeoutScale(f float64) Option { return func(c *config) { c.scale = f } }

// Skip leaves out the check (or part of a check) named name, for the reason
// given, which is reported. The names are those of the package
// documentation, e.g. "console-busy" or "reset-reboots".
func Skip(name, reason string) Option {
	return func(c *config) { c.skips[name] = reason }
}

// HostStorageWhilePowered declares that the device lets its storage move to
// the host while it is powered on (its driver documents that), instead of
// refusing with an error wrapping [driver.ErrPoweredOn].
func HostStorageWhilePowered() Option { return func(c *config) { c.hostWhenOn = true } }

// ConfigKey names a configuration key the device takes and a value for it,
// for the config round trip; the original value is put back.
func ConfigKey(key, value string) Option {
	return func(c *config) { c.configKey, c.configVal = key, value }
}

// PinLevel gives the contract a way to observe the level a pin is driven
// to (a driver's test hook): after every SetPin it must report the level
// set.
func PinLevel(level func(dev driver.Device, pin string) driver.PinLevel) Option {
	return func(c *config) { c.pinLevel = level }
}

// Unplug gives the contract a way to make an open device vanish (a
// driver's test hook: the simulator's Unplug, unplugging a simulated
// board), for the "gone" check. Without it that check is skipped.
func Unplug(unplug func(dev driver.Device)) Option {
	return func(c *config) { c.unplug = unplug }
}

// Logf receives what the contract reports besides violations (skipped
// checks and why, timings). [TestDevice] sends it to t.Logf.
func Logf(logf func(format string, args ...any)) Option {
	return func(c *config) { c.logf = logf }
}

func newConfig(opts []Option) *config {
	c := &config{timeout: 10 * time.Second, scale: 1, skips: map[string]string{}, logf: func(string, ...any) {}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// wait is how long to wait for one event.
func (c *config) wait() time.Duration { return time.Duration(float64(c.timeout) * c.scale) }

// prompt is how long a call whose context had ended may take to return.
func (c *config) prompt() time.Duration { return c.wait() / 10 }

// settle is how long after its deadline a call may take to return: a
// driver may have to undo an interrupted step (switch a mux back off,
// bring a board's firmware back to console mode).
func (c *config) settle() time.Duration { return c.wait() / 4 }

// Check runs the contract against devices made by open, each check on a
// fresh device, which it closes. It returns nil when the devices keep the
// contract, else an error listing every violation found, one per line,
// prefixed with the name of its check.
func Check(open func() (driver.Device, error), opts ...Option) error {
	cfg := newConfig(opts)
	caps, err := probe(open)
	if err != nil {
		return err
	}
	var errs []error
	for _, ch := range checks {
		if !ch.applies(caps) {
			continue
		}
		if reason := ch.skipReason(cfg); reason != "" {
			cfg.logf("%s: %s", ch.name, reason)
			continue
		}
		errs = append(errs, runCheck(cfg, ch, open)...)
	}
	return errors.Join(errs...)
}

// TestDevice runs the contract as subtests of t, one per check, each on a
// fresh device from open (which may register the device's cleanup with the
// subtest's t). A violation fails the subtest with its description; a
// skipped check skips its subtest with the reason.
func TestDevice(t *testing.T, open func(t *testing.T) driver.Device, opts ...Option) {
	t.Helper()
	opts = append([]Option{Logf(t.Logf)}, opts...)
	cfg := newConfig(opts)
	caps, err := probe(func() (driver.Device, error) { return open(t), nil })
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range checks {
		if !ch.applies(caps) {
			continue
		}
		t.Run(ch.name, func(t *testing.T) {
			if reason := ch.skipReason(cfg); reason != "" {
				t.Skip(reason)
			}
			sub := *cfg
			sub.logf = t.Logf
			for _, e := range runCheck(&sub, ch, func() (driver.Device, error) { return open(t), nil }) {
				t.Error(e)
			}
		})
	}
}

// probe opens one device to learn its capabilities and closes it.
func probe(open func() (driver.Device, error)) ([]string, error) {
	dev, err := open()
	if err != nil {
		return nil, fmt.Errorf("drivertest: open: %w", err)
	}
	caps := driver.CapabilitiesOf(dev)
	closeDevice(dev)
	return caps, nil
}

func closeDevice(dev driver.Device) {
	if c, ok := dev.(driver.Closer); ok {
		_ = c.Close()
	}
}

// check is one named part of the contract.
type check struct {
	name string
	need string // the capability it needs, "" for every device
	run  func(r *run)
	// unable, when set, says why the options do not let the check run
	// ("" when they do).
	unable func(*config) string
}

// skipReason says why ch does not run with cfg, or "".
func (ch check) skipReason(cfg *config) string {
	if reason, ok := cfg.skips[ch.name]; ok {
		return "skipped: " + reason
	}
	if ch.unable != nil {
		return ch.unable(cfg)
	}
	return ""
}

func (ch check) applies(caps []string) bool {
	if ch.need == "" {
		return true
	}
	for _, c := range caps {
		if c == ch.need {
			return true
		}
	}
	return false
}

// run is one check running on one device.
type run struct {
	cfg  *config
	name string
	dev  driver.Device
	errs []error
	cons []*transcript
}

func runCheck(cfg *config, ch check, open func() (driver.Device, error)) []error {
	dev, err := open()
	if err != nil {
		return []error{fmt.Errorf("%s: open: %w", ch.name, err)}
	}
	r := &run{cfg: cfg, name: ch.name, dev: dev}
	defer func() {
		for _, c := range r.cons {
			c.stop()
		}
		closeDevice(dev)
	}()
	ch.run(r)
	return r.errs
}

// errorf records a violation.
func (r *run) errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("%s: %s", r.name, fmt.Sprintf(format, args...)))
}

// skipped reports whether the part called name is skipped, logging why.
func (r *run) skipped(name string) bool {
	reason, ok := r.cfg.skips[name]
	if ok {
		r.cfg.logf("%s: %s skipped: %s", r.name, name, reason)
	}
	return ok
}

// ctx returns a context for one call, bounded by the wait.
func (r *run) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), r.cfg.wait())
}

// call runs fn with a fresh bounded context and records a violation named
// what when it fails. It reports whether fn succeeded.
func (r *run) call(what string, fn func(ctx context.Context) error) bool {
	ctx, cancel := r.ctx()
	defer cancel()
	if err := fn(ctx); err != nil {
		r.errorf("%s: %v", what, err)
		return false
	}
	return true
}

// wantErr runs fn and records a violation unless it fails with an error
// matching sentinel.
func (r *run) wantErr(what string, sentinel error, fn func(ctx context.Context) error) {
	ctx, cancel := r.ctx()
	defer cancel()
	err := fn(ctx)
	switch {
	case err == nil:
		r.errorf("%s: succeeded, want an error wrapping %q", what, sentinel)
	case !errors.Is(err, sentinel):
		r.errorf("%s: error %q does not wrap %q (code %q)", what, err, sentinel, driver.Code(sentinel))
	}
}

// wantEither is wantErr for a call that may fail with either of two
// sentinels.
func (r *run) wantEither(what string, one, other error, fn func(ctx context.Context) error) {
	ctx, cancel := r.ctx()
	defer cancel()
	err := fn(ctx)
	if !errors.Is(err, one) && !errors.Is(err, other) {
		r.errorf("%s: %v, want an error wrapping %q or %q", what, err, one, other)
	}
}

// console opens the device's console and reads it in the background.
func (r *run) console() *transcript {
	cp := r.dev.(driver.ConsolePort)
	ctx, cancel := r.ctx()
	defer cancel()
	rw, err := cp.OpenConsole(ctx)
	if err != nil {
		r.errorf("OpenConsole: %v", err)
		return nil
	}
	c := newTranscript(rw)
	r.cons = append(r.cons, c)
	return c
}

// wantPower checks, as far as the device lets it be seen, that its power is
// on (or off) after what: the PowerState option and the meter.
func (r *run) wantPower(what string, on bool) {
	if r.cfg.powerState != nil && r.cfg.powerState(r.dev) != on {
		r.errorf("after %s the device reports power %s, want %s", what, onOff(!on), onOff(on))
	}
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// observable reports whether a power state can be seen at all.
func (r *run) observable() bool {
	_, meter := driver.Has[driver.PowerMeter](r.dev)
	return r.cfg.powerState != nil || meter || r.cfg.console != nil
}

// expect waits for texts in order on c; what names the event for messages.
func (r *run) expect(c *transcript, what string, texts ...string) bool {
	if c == nil {
		return false
	}
	if err := c.waitFor(r.cfg.wait(), texts...); err != nil {
		r.errorf("%s: %v", what, err)
		return false
	}
	return true
}

// readOnce runs one Read, bounded by timeout (ok is false when it still
// blocks then), for a Read that must fail at once.
func readOnce(rw io.Reader, timeout time.Duration) (n int, err error, ok bool) {
	type res struct {
		n   int
		err error
	}
	ch := make(chan res, 1)
	go func() {
		n, err := rw.Read(make([]byte, 64))
		ch <- res{n, err}
	}()
	select {
	case v := <-ch:
		return v.n, v.err, true
	case <-time.After(timeout):
		return 0, nil, false
	}
}
