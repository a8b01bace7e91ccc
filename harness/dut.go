package harness

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/console"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/step"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/bytesize"
)

// flashLogEvery is the least time between two progress lines of a flash.
const flashLogEvery = 5 * time.Second

// DUT is the test-facing handle on an acquired device under test. Its
// methods fail the test with a useful message instead of returning errors;
// [DUT.Session] gives the error-returning core.
//
// A DUT is bound to the test that acquired it; [DUT.Sub] binds it to a
// subtest, so that failures, properties and console logs land on the subtest.
type DUT struct {
	t    testing.TB
	s    *Session
	root *DUT   // the acquiring DUT; nil for itself
	role string // the DUT's role among several (AcquireAll); "" for a test's only DUT
	mark console.Mark
	log  testLogger
	// tracer traces the hardware steps of d's test to its log and, through
	// steps, to its StepsFile.
	tracer *step.Tracer
	steps  *step.JSONL
	// reserve is the time kept for cleanup before the test's deadline,
	// fixed at Acquire (see Config.CleanupReserve).
	reserve time.Duration

	// hashPending says the last flash recorded on d returned before its
	// image's SHA-256 was known; wroteFlashReport, that d's artifacts hold
	// its report.
	hashPending, wroteFlashReport bool

	propsMu sync.Mutex
	props   map[string]string // emitted with t.Attr once, at cleanup, with their last values
}

type deadliner interface {
	Deadline() (time.Time, bool)
}

// errTestDeadline is the cause of contexts that end because the test's own
// deadline (go test -timeout, less the cleanup reserve) passed.
var errTestDeadline = errors.New("the test's deadline (go test -timeout minus the cleanup reserve) was reached")

// Acquire returns the DUT for test t: it reads the configuration (a dut.env
// file found from the test's folder upward, then the DUT_* environment,
// which wins), applies opts, selects and locks a device, puts it into a known
// state (power off, storage off) and opens its console. When no DUT is
// configured the test is skipped with a message naming what to set, or
// failed when DUT_REQUIRE is set. Bad configuration (unknown driver,
// malformed tags, missing image, no matching device) fails the test as a
// configuration error, the user's, not the lab's.
//
// A test that acquired a DUT is never answered from go test's cache: its
// result is always the device's, whatever flags go test was given.
//
// Cleanup, whatever way the test ends (failure, t.Fatal, panic), writes the
// test's console log into t.ArtifactDir() (and, for a failed test, keeps it
// and shows its tail), powers the DUT off, disconnects its storage and
// releases the lock.
//
// Every hardware step (acquire, power, storage, flash, login, each command,
// and the driver's own steps within them) is logged when it starts and
// when it ends, so that a step that hangs shows in the log as the one
// running, and recorded in [StepsFile] in t.ArtifactDir().
func Acquire(t testing.TB, opts ...Option) *DUT {
	t.Helper()
	d := &DUT{t: t, log: testLogger{t}}
	cfg := d.configure(opts)
	d.startTrace()
	// Open before registering cleanup, with its own deadline: a failed
	// Open leaves nothing held.
	ctx, cancel := d.Context()
	defer cancel()
	s, err := Open(ctx, cfg, holderFor(t.Name()), d.log.logf)
	if err != nil {
		d.fail(err, ctx)
	}
	d.start(s)
	return d
}

// Want is one DUT of [AcquireAll]: its role in the test ("client",
// "server") and the options that select it, on top of the environment.
type Want struct {
	Role    string
	Options []Option
}

// AcquireAll returns one DUT per want, all taken at once: it waits until
// every one is free, holding none meanwhile, so that two tests that want the
// same DUTs in opposite orders never deadlock (acquiring them one by one
// with [Acquire] can: each test holds one and waits for the other until its
// acquire timeout). No two wants get the same DUT; a want that matches
// nothing fails the test as Acquire does.
//
// Each DUT records its properties under its role, "dut.<role>.name",
// "dut.<role>.image_sha256", ..., and writes "<role>-console.log" (and
// "<role>-flash.json") into the test's artifact folder. Roles must be
// distinct and non-empty.
func AcquireAll(t testing.TB, wants ...Want) []*DUT {
	t.Helper()
	duts := make([]*DUT, len(wants))
	cfgs := make([]Config, len(wants))
	seen := map[string]bool{}
	for i, w := range wants {
		if w.Role == "" || seen[w.Role] || strings.ContainsAny(w.Role, " ./\\\t\n") {
			t.Fatalf("jumpstarter: AcquireAll: role %q of DUT %d is empty, repeated or holds spaces, dots or slashes: give each DUT a distinct one-word role, such as client and server", w.Role, i+1)
		}
		seen[w.Role] = true
		duts[i] = &DUT{t: t, log: testLogger{t}, role: w.Role}
		cfgs[i] = duts[i].configure(w.Options)
	}
	tracers := make([]*step.Tracer, len(duts))
	for i, d := range duts {
		d.startTrace()
		tracers[i] = d.tracer
	}
	ctx, cancel := duts[0].Context()
	defer cancel()
	ctx = step.WithTracer(ctx, acquireAllTracer(duts))
	sessions, err := openAll(ctx, cfgs, holderFor(t.Name()), duts[0].log.logf, tracers)
	if err != nil {
		duts[0].fail(err, ctx)
	}
	for i, d := range duts {
		d.start(sessions[i])
	}
	return duts
}

// configure reads the configuration (dut.env, the environment, opts), skips
// or fails the test when no DUT is configured, makes its result uncacheable
// and fixes the cleanup reserve.
func (d *DUT) configure(opts []Option) Config {
	t := d.t
	t.Helper()
	envFile, err := loadEnvFileOnce()
	if err != nil {
		d.fail(err, nil)
	}
	cfg, err := ConfigFromEnv()
	if err != nil {
		d.fail(err, nil)
	}
	for _, o := range opts {
		o(&cfg)
	}
	if !cfg.Configured() {
		msg := fmt.Sprintf("no DUT configured: set %s (e.g. %s=sim for the simulated DUT), %s or %s to run this hardware test, in the environment or in a %s file",
			Env.Driver, Env.Driver, Env.Name, Env.Tags, EnvFileName)
		if cfg.Require {
			t.Fatalf("jumpstarter: %s (%s is set, so this is a failure, not a skip)", msg, Env.Require)
		}
		t.Skipf("jumpstarter: %s; set %s=1 to fail instead of skipping", msg, Env.Require)
	}
	// A hardware result must come from the hardware, never from go test's
	// cache: the image may have changed in place, the board may have died.
	defeatTestCache()
	if envFile != "" {
		d.log.logf("jumpstarter: configuration from %s (the environment overrides it)", envFile)
	}
	d.reserve = defaultCleanupReserve
	if dl, ok := testDeadline(t); ok {
		d.reserve = cleanupReserve(dl, cfg)
		if left := time.Until(dl); d.reserve >= left {
			d.fail(&ConfigError{Step: "acquire", Err: fmt.Errorf("%w: %s=%s leaves nothing of the test's %s (go test -timeout): lower it, or raise -timeout",
				ErrBadConfig, Env.CleanupReserve, cfg.CleanupReserve, left.Round(time.Second))}, nil)
		}
	} else if cfg.CleanupReserve > 0 {
		d.reserve = cfg.CleanupReserve
	}
	return cfg
}

// start binds the open session s to d and registers d's cleanup.
func (d *DUT) start(s *Session) {
	d.s, d.mark = s, markOf(s)
	// Without go test -artifacts the artifact directory is a temporary one
	// that a cleanup removes; asking for it now registers that cleanup
	// before ours, so it runs after ours (cleanups run last-in first-out)
	// and the console log and flash report can still be written.
	d.t.ArtifactDir()
	d.t.Cleanup(d.cleanup)
	d.recordDevice()
}

// cleanup ends the test's use of the DUT: evidence first, then power off,
// storage off and the lock released.
func (d *DUT) cleanup() {
	s, t := d.s, d.t
	cctx, cancel := d.cleanupContext()
	defer cancel()
	// The power the DUT draws as the test leaves it, where the board has a
	// meter: evidence of what it was doing.
	if s.on {
		d.recordPower(cctx)
	}
	// Power first: whatever else fails, the DUT must end powered off.
	offErr := s.PowerOff(cctx)
	d.writeConsole()
	if err := s.Close(cctx); err != nil {
		d.attr(AttrFailure, FailureInfrastructure)
		d.attr(AttrFailureStep, "cleanup")
		what := "check it by hand"
		if offErr != nil {
			what = "it is marked as not powered off, so its next user powers it off before anything else; check it by hand"
		}
		t.Errorf("jumpstarter: cleanup of DUT %s failed; it may still be powered; %s: %v", s.dev.Name(), what, err)
	}
	// The board is free again; the image's hash may still need a moment.
	d.recordDeferredHash(cctx)
	d.flushAttrs()
}

func markOf(s *Session) console.Mark {
	if s.con == nil {
		return console.Mark{}
	}
	return s.con.Mark()
}

// Context returns a context for hardware steps of this test: it ends at the
// test's deadline less the cleanup reserve (fixed when the DUT was
// acquired), or when the test ends, and it carries the test's step tracer,
// so that the steps of a driver called with it are logged and recorded as
// the harness's are. Call the returned cancel function when done.
func (d *DUT) Context() (context.Context, context.CancelFunc) {
	ctx := d.traced(d.t.Context())
	if dl, ok := testDeadline(d.t); ok {
		return context.WithDeadlineCause(ctx, dl.Add(-d.rootDUT().reserve), errTestDeadline)
	}
	return context.WithCancel(ctx)
}

// cleanupContext bounds cleanup: until just before the test binary's
// deadline (steps end a whole reserve before it, so cleanup always has that
// reserve less a fifth, at most a second, kept as margin), or the reserve
// when there is no deadline.
func (d *DUT) cleanupContext() (context.Context, context.CancelFunc) {
	reserve := d.rootDUT().reserve
	ctx := d.traced(context.Background())
	if dl, ok := testDeadline(d.t); ok {
		return context.WithDeadline(ctx, dl.Add(-min(time.Second, reserve/5)))
	}
	return context.WithTimeout(ctx, reserve)
}

func testDeadline(t testing.TB) (time.Time, bool) {
	if d, ok := t.(deadliner); ok {
		return d.Deadline()
	}
	return time.Time{}, false
}

// Sub returns the DUT bound to subtest t: its failures fail t, and t gets the
// DUT's properties and its own slice of the console log.
func (d *DUT) Sub(t testing.TB) *DUT {
	t.Helper()
	root := d.rootDUT()
	sub := &DUT{t: t, s: d.s, root: root, role: d.role, mark: markOf(d.s), log: testLogger{t}}
	t.ArtifactDir() // before our cleanup: see Acquire
	sub.startTrace()
	t.Cleanup(func() {
		sub.writeConsole()
		ctx, cancel := sub.cleanupContext()
		defer cancel()
		sub.recordDeferredHash(ctx)
		sub.flushAttrs()
	})
	sub.recordDevice()
	if rep, ok := d.s.LastFlash(); ok {
		sub.recordFlash(rep)
		sub.hashPending = rep.SHA256 == ""
	}
	if d.s.boot > 0 {
		sub.apply(bootProperties(d.s.boot))
	}
	return sub
}

func (d *DUT) rootDUT() *DUT {
	if d.root != nil {
		return d.root
	}
	return d
}

// Session returns the error-returning core, for steps the helpers lack.
func (d *DUT) Session() *Session { return d.s }

// Device returns the driver's device, for capabilities the harness has no
// helper for (pins, power meter): use a type assertion or [driver.As].
func (d *DUT) Device() driver.Device { return d.s.Device() }

// Name returns the device's name.
func (d *DUT) Name() string { return d.s.dev.Name() }

// Flash writes the configured image (DUT_IMAGE) onto the DUT's storage,
// logging progress, and records the image path, SHA-256, bytes and MB/s as
// test properties.
func (d *DUT) Flash() flash.Report {
	d.t.Helper()
	return d.FlashImage(d.s.cfg.Image)
}

// FlashImage writes the image at path onto the DUT's storage; see [DUT.Flash].
// A missing, unreadable or corrupt image is a configuration error (the
// user's), as the same file in DUT_IMAGE is at Acquire.
func (d *DUT) FlashImage(path string) flash.Report {
	d.t.Helper()
	ctx, cancel := d.Context()
	defer cancel()
	if path == "" {
		d.fail(&ConfigError{Step: "flash", Device: d.Name(), Err: fmt.Errorf("%w: no image given: set %s or call FlashImage with a path", ErrBadConfig, Env.Image)}, ctx)
	}
	d.log.logf("jumpstarter: flashing %s onto %s", path, d.Name())
	var last time.Time
	rep, err := d.s.Flash(ctx, path, func(p flash.Progress) {
		if time.Since(last) < flashLogEvery && (p.Total < 0 || p.Done < p.Total) {
			return
		}
		last = time.Now()
		of := "?"
		if p.Total >= 0 {
			of = bytesize.Format(p.Total)
		}
		d.log.logf("jumpstarter: flash %s: %.0f%%, %s of %s, %.1f MB/s", d.Name(), 100*p.Fraction, bytesize.Format(p.Done), of, p.Rate())
	})
	if rep.Image != "" {
		d.writeFlashReport(rep, err)
		d.wroteFlashReport = err == nil
	}
	if err != nil {
		d.fail(err, ctx)
	}
	d.recordFlash(rep)
	d.hashPending = rep.SHA256 == ""
	if d.root != nil {
		d.root.recordFlash(rep)
		d.root.hashPending = d.hashPending
	}
	return rep
}

// recordDeferredHash waits, within ctx, for the SHA-256 of the image the
// last flash wrote, when the flash returned before it was known, and
// records it (and d's flash report again, when d wrote it): the property is
// exact and recorded before the test ends. A hash that fails fails the test.
func (d *DUT) recordDeferredHash(ctx context.Context) {
	if !d.hashPending {
		return
	}
	d.hashPending = false
	sum, err := d.s.ImageHash(ctx)
	if err != nil {
		d.t.Errorf("jumpstarter: %v", err)
		return
	}
	rep, _ := d.s.LastFlash()
	rep.SHA256 = sum
	d.recordImageHash(rep)
	if d.wroteFlashReport {
		d.writeFlashReport(rep, nil)
	}
}

// PowerOn connects the storage to the DUT and powers it on.
func (d *DUT) PowerOn() {
	d.t.Helper()
	ctx, cancel := d.Context()
	defer cancel()
	if err := d.s.PowerOn(ctx); err != nil {
		d.fail(err, ctx)
	}
}

// PowerOff powers the DUT off.
func (d *DUT) PowerOff() {
	d.t.Helper()
	ctx, cancel := d.Context()
	defer cancel()
	if err := d.s.PowerOff(ctx); err != nil {
		d.fail(err, ctx)
	}
}

// PowerCycle powers the DUT off and on again.
func (d *DUT) PowerCycle() {
	d.t.Helper()
	ctx, cancel := d.Context()
	defer cancel()
	if err := d.s.PowerCycle(ctx); err != nil {
		d.fail(err, ctx)
	}
}

// Login waits through the boot for the login prompt, logs in (DUT_USER,
// DUT_PASSWORD; root without password by default) and returns a shell,
// within DUT_BOOT_TIMEOUT of the call. It records the seconds from power-on
// to the login prompt as the property dut.boot_seconds.
func (d *DUT) Login() *Shell {
	d.t.Helper()
	ctx, cancel := d.Context()
	defer cancel()
	res, err := d.s.Login(ctx)
	if err != nil {
		d.fail(fmt.Errorf("the DUT did not reach a logged-in shell: %w", err), ctx)
	}
	if !d.s.poweredAt.IsZero() && !res.PromptAt.IsZero() {
		d.s.boot = res.PromptAt.Sub(d.s.poweredAt)
		d.apply(bootProperties(d.s.boot))
		d.log.logf("jumpstarter: %s reached the login prompt %.3fs after power-on", d.Name(), d.s.boot.Seconds())
	}
	return &Shell{d: d}
}
