package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/console"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
)

// Property keys the harness records on each test with t.Attr (gotestsum turns
// them into JUnit testcase properties).
const (
	AttrDriver      = "dut.driver"
	AttrName        = "dut.name"
	AttrSerial      = "dut.serial"
	AttrImage       = "dut.image"
	AttrImageSHA256 = "dut.image_sha256"
	AttrFlashBytes  = "dut.flash_bytes"
	AttrFlashMBps   = "dut.flash_mbps"
	// AttrFlashMapped is the fraction of the image that was written (bmap
	// or sparse holes leave the rest); AttrFlashVerified says whether the
	// written ranges were read back and matched.
	AttrFlashMapped   = "dut.flash_mapped_fraction"
	AttrFlashVerified = "dut.flash_verified"
	// AttrFlashWritten is how many bytes reached the storage;
	// AttrFlashVerifySeconds what the read-back added to the flash;
	// AttrFlashReport the path of the flash report artifact.
	AttrFlashWritten       = "dut.flash_written_bytes"
	AttrFlashVerifySeconds = "dut.flash_verify_seconds"
	AttrFlashReport        = "dut.flash_report"
	// AttrPowerW, AttrPowerV and AttrPowerA are the DUT's power draw, from
	// the board's meter (where it has one), read at the end of a test that
	// powered the DUT, or by [DUT.ReadPower].
	AttrPowerW      = "dut.power_w"
	AttrPowerV      = "dut.power_v"
	AttrPowerA      = "dut.power_a"
	AttrBootSeconds = "dut.boot_seconds"
	AttrConsoleLog  = "dut.console_log"
	// AttrFailure is "infrastructure" when the harness, not the product,
	// failed the test; AttrFailureStep names the harness step.
	AttrFailure     = "dut.failure"
	AttrFailureStep = "dut.failure_step"
)

// Artifact file names written into t.ArtifactDir().
const (
	ConsoleLogFile  = "console.log" // the test's slice of the console, cleaned, timestamped
	ConsoleRawFile  = "console.raw" // the same slice, raw bytes
	FlashReportFile = "flash.json"  // the last flash's report (also of a failed flash)
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
	root *DUT // the acquiring DUT; nil for itself
	mark console.Mark

	propsMu sync.Mutex
	props   map[string]string // emitted with t.Attr once, at cleanup, with their last values
}

type deadliner interface {
	Deadline() (time.Time, bool)
}

// errTestDeadline is the cause of contexts that end because the test's own
// deadline (go test -timeout, less the cleanup reserve) passed.
var errTestDeadline = errors.New("the test's deadline (go test -timeout minus the cleanup reserve) was reached")

// Acquire returns the DUT for test t: it reads the DUT_* environment, applies
// opts, selects and locks a device, puts it into a known state (power off,
// storage off) and opens its console. When no DUT is configured the test is
// skipped with a message naming what to set, or failed when DUT_REQUIRE is
// set. Bad configuration (unknown driver, malformed tags, missing image, no
// matching device) fails the test.
//
// Cleanup, whatever way the test ends (failure, t.Fatal, panic), writes the
// test's console log into t.ArtifactDir(), powers the DUT off, disconnects
// its storage and releases the lock.
func Acquire(t testing.TB, opts ...Option) *DUT {
	t.Helper()
	cfg, err := ConfigFromEnv()
	if err != nil {
		t.Fatalf("jumpstarter: %v", err)
	}
	for _, o := range opts {
		o(&cfg)
	}
	if !cfg.Configured() {
		msg := fmt.Sprintf("no DUT configured: set %s (e.g. %s=sim for the simulated DUT), %s or %s to run this hardware test",
			Env.Driver, Env.Driver, Env.Name, Env.Tags)
		if cfg.Require {
			t.Fatalf("jumpstarter: %s (%s is set, so this is a failure, not a skip)", msg, Env.Require)
		}
		t.Skipf("jumpstarter: %s; set %s=1 to fail instead of skipping", msg, Env.Require)
	}
	// Open before registering cleanup, with its own deadline: a failed
	// Open leaves nothing held.
	ctx, cancel := stepContext(t, cfg)
	defer cancel()
	s, err := Open(ctx, cfg, holderFor(t.Name()), t.Logf)
	if err != nil {
		d := &DUT{t: t}
		d.fail(err, ctx)
	}
	d := &DUT{t: t, s: s, mark: markOf(s)}
	// Without go test -artifacts the artifact directory is a temporary one
	// that a cleanup removes; asking for it now registers that cleanup
	// before ours, so it runs after ours (cleanups run last-in first-out)
	// and the console log and flash report can still be written.
	t.ArtifactDir()
	t.Cleanup(func() {
		cctx, cancel := cleanupContext(t, cfg)
		defer cancel()
		// The power the DUT draws as the test leaves it, where the board
		// has a meter: evidence of what it was doing.
		if !s.PoweredAt().IsZero() {
			d.recordPower(cctx)
		}
		// Power first: whatever else fails, the DUT must end powered off.
		_ = s.PowerOff(cctx)
		d.writeConsole()
		if err := s.Close(cctx); err != nil {
			d.attr(AttrFailure, "infrastructure")
			d.attr(AttrFailureStep, "cleanup")
			t.Errorf("jumpstarter: cleanup of DUT %s failed; it may still be powered; check it by hand: %v", s.dev.Name(), err)
		}
		d.flushAttrs()
	})
	d.recordDevice()
	return d
}

func markOf(s *Session) console.Mark {
	if s.con == nil {
		return console.Mark{}
	}
	return s.con.Mark()
}

// stepContext returns the context hardware steps of test t run under: it
// ends at the test's deadline minus the cleanup reserve, or when the test
// ends.
func stepContext(t testing.TB, cfg Config) (context.Context, context.CancelFunc) {
	ctx := t.Context()
	if dl, ok := testDeadline(t); ok {
		return context.WithDeadlineCause(ctx, dl.Add(-reserve(dl, cfg)), errTestDeadline)
	}
	return context.WithCancel(ctx)
}

// reserve is the time kept for cleanup before deadline dl: cfg.CleanupReserve,
// but at most a quarter of the time left, so that a short go test -timeout
// (an IDE's 30 s) still leaves most of it to the test.
func reserve(dl time.Time, cfg Config) time.Duration {
	return min(cfg.CleanupReserve, time.Until(dl)/4)
}

// cleanupContext bounds cleanup: until just before the test binary's
// deadline, or cfg.CleanupReserve when there is none.
func cleanupContext(t testing.TB, cfg Config) (context.Context, context.CancelFunc) {
	if dl, ok := testDeadline(t); ok {
		return context.WithDeadline(context.Background(), dl.Add(-time.Second))
	}
	return context.WithTimeout(context.Background(), cfg.CleanupReserve)
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
	sub := &DUT{t: t, s: d.s, root: root, mark: markOf(d.s)}
	t.ArtifactDir() // before our cleanup: see Acquire
	t.Cleanup(func() {
		sub.writeConsole()
		sub.flushAttrs()
	})
	sub.recordDevice()
	if rep, ok := d.s.LastFlash(); ok {
		sub.recordFlash(rep)
	}
	if d.s.bootSeconds != "" {
		sub.attr(AttrBootSeconds, d.s.bootSeconds)
	}
	return sub
}

func (d *DUT) rootDUT() *DUT {
	if d.root != nil {
		return d.root
	}
	return d
}

func (d *DUT) recordDevice() {
	dev := d.s.dev
	d.attr(AttrDriver, dev.Driver())
	d.attr(AttrName, dev.Name())
	if s := dev.Serial(); s != "" {
		d.attr(AttrSerial, s)
	}
}

func (d *DUT) recordFlash(rep flash.Report) {
	abs, err := filepath.Abs(rep.Image)
	if err != nil {
		abs = rep.Image
	}
	d.attr(AttrImage, oneLine(abs))
	d.attr(AttrImageSHA256, rep.SHA256)
	d.attr(AttrFlashBytes, strconv.FormatInt(rep.Bytes, 10))
	d.attr(AttrFlashMBps, strconv.FormatFloat(rep.MBps(), 'f', 1, 64))
	d.attr(AttrFlashMapped, strconv.FormatFloat(rep.MappedFraction, 'f', 3, 64))
	d.attr(AttrFlashVerified, strconv.FormatBool(rep.Verified))
	d.attr(AttrFlashWritten, strconv.FormatInt(rep.MappedBytes, 10))
	d.attr(AttrFlashVerifySeconds, strconv.FormatFloat(rep.VerifyDuration.Seconds(), 'f', 3, 64))
}

// flashReport is the flash report artifact (FlashReportFile).
type flashReport struct {
	Image          string  `json:"image"`
	SHA256         string  `json:"sha256,omitempty"`
	SHA256Cached   bool    `json:"sha256_cached,omitempty"`
	Format         string  `json:"format"`
	Decoder        string  `json:"decoder,omitempty"`
	Target         string  `json:"target"`
	Bmap           string  `json:"bmap,omitempty"`
	Sparse         bool    `json:"sparse,omitempty"`
	Bytes          int64   `json:"bytes"`
	WrittenBytes   int64   `json:"written_bytes"`
	MappedFraction float64 `json:"mapped_fraction"`
	Direct         bool    `json:"direct"`
	WriteSeconds   float64 `json:"write_seconds"`
	MBps           float64 `json:"mbps"`
	Verified       bool    `json:"verified"`
	VerifySeconds  float64 `json:"verify_seconds"`
	Error          string  `json:"error,omitempty"`
}

// writeFlashReport writes rep (and err, for a failed flash) as the test's
// flash report artifact and records its path as a property.
func (d *DUT) writeFlashReport(rep flash.Report, err error) {
	r := flashReport{
		Image: rep.Image, SHA256: rep.SHA256, SHA256Cached: rep.SHA256Cached, Format: string(rep.Format),
		Decoder: rep.Decoder, Target: rep.Target, Bmap: rep.Bmap, Sparse: rep.Sparse, Bytes: rep.Bytes,
		WrittenBytes: rep.MappedBytes, MappedFraction: rep.MappedFraction, Direct: rep.Direct,
		WriteSeconds: rep.Duration.Seconds(), MBps: rep.MBps(), Verified: rep.Verified,
		VerifySeconds: rep.VerifyDuration.Seconds(),
	}
	if err != nil {
		r.Error = err.Error()
	}
	b, merr := json.MarshalIndent(r, "", "  ")
	if merr != nil {
		d.t.Errorf("jumpstarter: flash report: %v", merr)
		return
	}
	path := filepath.Join(d.t.ArtifactDir(), FlashReportFile)
	if werr := os.WriteFile(path, append(b, '\n'), 0o644); werr != nil {
		d.t.Errorf("jumpstarter: writing the flash report: %v", werr)
		return
	}
	d.attr(AttrFlashReport, oneLine(path))
}

// attr records a property; flushAttrs emits the last value of each at
// cleanup, so a test that flashes or logs in twice carries each property
// once.
func (d *DUT) attr(key, value string) {
	d.propsMu.Lock()
	defer d.propsMu.Unlock()
	if d.props == nil {
		d.props = map[string]string{}
	}
	d.props[key] = value
}

func (d *DUT) flushAttrs() {
	d.propsMu.Lock()
	defer d.propsMu.Unlock()
	keys := make([]string, 0, len(d.props))
	for k := range d.props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		d.t.Attr(k, d.props[k])
	}
	d.props = nil
}

// oneLine makes a property value safe: no newlines.
func oneLine(s string) string { return strings.NewReplacer("\n", " ", "\r", " ").Replace(s) }

// writeConsole writes the test's slice of the console into its artifact
// directory.
func (d *DUT) writeConsole() {
	con := d.s.con
	if con == nil {
		return
	}
	dir := d.t.ArtifactDir()
	end := con.Mark()
	var errs []error
	if f, err := os.Create(filepath.Join(dir, ConsoleLogFile)); err == nil {
		errs = append(errs, con.WriteLog(f, d.mark, end), f.Close())
	} else {
		errs = append(errs, err)
	}
	if f, err := os.Create(filepath.Join(dir, ConsoleRawFile)); err == nil {
		errs = append(errs, con.WriteRaw(f, d.mark, end), f.Close())
	} else {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		d.t.Errorf("jumpstarter: writing the console log: %v", err)
		return
	}
	d.attr(AttrConsoleLog, oneLine(filepath.Join(dir, ConsoleLogFile)))
}

// fail fails the test with err, marking infrastructure failures as such.
func (d *DUT) fail(err error, ctx context.Context) {
	d.t.Helper()
	hint := ""
	if ctx != nil && errors.Is(context.Cause(ctx), errTestDeadline) {
		hint = fmt.Sprintf("\n(%v: raise go test -timeout or lower %s)", errTestDeadline, Env.CleanupReserve)
	}
	var ie *InfraError
	if errors.As(err, &ie) {
		d.attr(AttrFailure, "infrastructure")
		d.attr(AttrFailureStep, oneLine(ie.Step))
		if d.s == nil {
			d.flushAttrs() // Acquire failed: no cleanup of ours will run
		}
		d.t.Fatalf("jumpstarter: %v%s\nThis is an infrastructure failure (the lab, not the product under test).", err, hint)
	}
	d.t.Fatalf("jumpstarter: %v%s", err, hint)
}

// Session returns the error-returning core, for steps the helpers lack.
func (d *DUT) Session() *Session { return d.s }

// Device returns the driver's device, for capabilities the harness has no
// helper for (pins, power meter): use a type assertion or [driver.As].
func (d *DUT) Device() driver.Device { return d.s.dev }

// Name returns the device's name.
func (d *DUT) Name() string { return d.s.dev.Name() }

// powerReadTimeout bounds the meter reading at cleanup.
const powerReadTimeout = 5 * time.Second

// recordPower reads the meter, when the device has one, and records the
// reading as properties; a failure is only logged (it is evidence, not a
// test step).
func (d *DUT) recordPower(ctx context.Context) {
	m, ok := d.s.dev.(driver.PowerMeter)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, powerReadTimeout)
	defer cancel()
	r, err := m.ReadPower(ctx)
	if err != nil {
		d.t.Logf("jumpstarter: reading the power meter of %s: %v", d.Name(), err)
		return
	}
	d.recordReading(r)
}

func (d *DUT) recordReading(r driver.PowerReading) {
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
	d.attr(AttrPowerW, f(r.Watts))
	d.attr(AttrPowerV, f(r.Volts))
	d.attr(AttrPowerA, f(r.Amps))
}

// ReadPower reads the DUT's power draw from the board's meter and records
// it as the properties dut.power_w, dut.power_v and dut.power_a (the last
// reading of a test wins; cleanup reads once more while the DUT is still
// on). It fails the test when the device has no meter.
func (d *DUT) ReadPower() driver.PowerReading {
	d.t.Helper()
	ctx, cancel := d.Context()
	defer cancel()
	m, err := driver.As[driver.PowerMeter](d.s.dev)
	if err != nil {
		d.fail(&InfraError{Step: "read power", Device: d.Name(), Err: err}, ctx)
	}
	r, err := m.ReadPower(ctx)
	if err != nil {
		d.fail(&InfraError{Step: "read power", Device: d.Name(), Err: err}, ctx)
	}
	d.recordReading(r)
	return r
}

// Context returns a context for hardware steps of this test: it ends at the
// test's deadline less the cleanup reserve, or when the test ends. Call the
// returned cancel function when done.
func (d *DUT) Context() (context.Context, context.CancelFunc) { return stepContext(d.t, d.s.cfg) }

// Flash writes the configured image (DUT_IMAGE) onto the DUT's storage,
// logging progress, and records the image path, SHA-256, bytes and MB/s as
// test properties.
func (d *DUT) Flash() flash.Report {
	d.t.Helper()
	return d.FlashImage(d.s.cfg.Image)
}

// FlashImage writes the image at path onto the DUT's storage; see [DUT.Flash].
func (d *DUT) FlashImage(path string) flash.Report {
	d.t.Helper()
	ctx, cancel := d.Context()
	defer cancel()
	if path == "" {
		d.fail(&InfraError{Step: "flash", Device: d.Name(), Err: fmt.Errorf("%w: no image given: set %s or call FlashImage with a path", flash.ErrImage, Env.Image)}, ctx)
	}
	d.t.Logf("jumpstarter: flashing %s onto %s", path, d.Name())
	var last time.Time
	rep, err := d.s.Flash(ctx, path, func(p flash.Progress) {
		if time.Since(last) < flashLogEvery && (p.Total < 0 || p.Done < p.Total) {
			return
		}
		last = time.Now()
		of := "?"
		if p.Total >= 0 {
			of = strconv.FormatInt(p.Total>>20, 10)
		}
		d.t.Logf("jumpstarter: flash %s: %.0f%%, %d/%s MiB, %.1f MB/s", d.Name(), 100*p.Fraction, p.Done>>20, of, p.Rate())
	})
	if rep.Image != "" {
		d.writeFlashReport(rep, err)
	}
	if err != nil {
		d.fail(err, ctx)
	}
	d.recordFlash(rep)
	if d.root != nil {
		d.root.recordFlash(rep)
	}
	return rep
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

// Shell returns the shell of a DUT that is logged in (see [DUT.Login]),
// bound to this DUT's test: in a subtest, use dut.Sub(t).Shell() so that a
// failing command fails the subtest, not its parent.
func (d *DUT) Shell() *Shell { return &Shell{d: d} }

// PowerCycle powers the DUT off and on again.
func (d *DUT) PowerCycle() {
	d.t.Helper()
	d.PowerOff()
	d.PowerOn()
}

// Console returns the test-facing console of the DUT.
func (d *DUT) Console() *Console {
	d.t.Helper()
	con, err := d.s.Console()
	if err != nil {
		d.fail(err, nil)
	}
	return &Console{d: d, c: con}
}

// Login waits through the boot for the login prompt, logs in (DUT_USER,
// DUT_PASSWORD; root without password by default) and returns a shell.
// It records the seconds from power-on to the login prompt as the property
// dut.boot_seconds.
func (d *DUT) Login() *Shell {
	d.t.Helper()
	ctx, cancel := d.Context()
	defer cancel()
	res, err := d.s.Login(ctx)
	if err != nil {
		d.fail(fmt.Errorf("the DUT did not reach a logged-in shell: %w", err), ctx)
	}
	if !d.s.poweredAt.IsZero() && !res.PromptAt.IsZero() {
		secs := strconv.FormatFloat(res.PromptAt.Sub(d.s.poweredAt).Seconds(), 'f', 3, 64)
		d.s.bootSeconds = secs
		d.attr(AttrBootSeconds, secs)
		d.t.Logf("jumpstarter: %s reached the login prompt %ss after power-on", d.Name(), secs)
	}
	return &Shell{d: d}
}

// Shell runs commands on a logged-in console shell.
type Shell struct{ d *DUT }

// Run runs cmd and returns its exact output; a non-zero exit code fails the
// test with the output.
func (sh *Shell) Run(cmd string) string {
	sh.d.t.Helper()
	out, code := sh.RunCode(cmd)
	if code != 0 {
		sh.d.t.Fatalf("jumpstarter: %s: command %q exited with code %d; output:\n%s", sh.d.Name(), cmd, code, out)
	}
	return out
}

// RunCode runs cmd and returns its exact output and exit code; only a
// failure to run it (timeout, console gone) fails the test.
func (sh *Shell) RunCode(cmd string) (string, int) {
	sh.d.t.Helper()
	ctx, cancel := sh.d.Context()
	defer cancel()
	res, err := sh.d.s.Run(ctx, cmd)
	if err != nil {
		sh.d.fail(err, ctx)
	}
	return res.Output, res.ExitCode
}

// Console is the test-facing console: expects that fail the test with the
// unmatched output, and sends.
type Console struct {
	d *DUT
	c *console.Console
}

// Engine returns the underlying expect engine, whose methods return errors.
func (c *Console) Engine() *console.Console { return c.c }

// Expect waits for one of patterns (see [console.Console.Expect]) within
// DUT_COMMAND_TIMEOUT and the test's deadline, and fails the test when none
// appears.
func (c *Console) Expect(patterns ...console.Pattern) *console.Match {
	c.d.t.Helper()
	ctx, cancel := c.d.Context()
	defer cancel()
	ctx, cancel2 := context.WithTimeout(ctx, c.d.s.cfg.CommandTimeout)
	defer cancel2()
	m, err := c.c.Expect(ctx, patterns...)
	if err != nil {
		c.d.fail(c.d.s.classify("expect", err), ctx)
	}
	return m
}

// ExpectString waits for s; see [Console.Expect].
func (c *Console) ExpectString(s string) *console.Match {
	c.d.t.Helper()
	return c.Expect(console.String(s))
}

// Send writes s to the console.
func (c *Console) Send(s string) {
	c.d.t.Helper()
	ctx, cancel := c.d.Context()
	defer cancel()
	if err := c.c.Send(ctx, s); err != nil {
		c.d.fail(c.d.s.classify("send", err), ctx)
	}
}

// SendLine writes s and a line ending to the console.
func (c *Console) SendLine(s string) {
	c.d.t.Helper()
	c.Send(s + "\n")
}
