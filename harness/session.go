package harness

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/console"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/step"
)

// ErrInfrastructure is matched by every [*InfraError]: the lab failed (lock,
// power, storage, flash, console), not the product under test.
var ErrInfrastructure = errors.New("infrastructure failure")

// InfraError is a failure of the test infrastructure in one harness step.
type InfraError struct {
	Step   string // "acquire", "power on", "flash", ...
	Device string // the DUT, when one was selected
	Err    error
}

func (e *InfraError) Error() string {
	if e.Device == "" {
		return fmt.Sprintf("infrastructure failure: %s: %v", e.Step, e.Err)
	}
	return fmt.Sprintf("infrastructure failure: %s on DUT %s: %v", e.Step, e.Device, e.Err)
}

// Unwrap returns the cause.
func (e *InfraError) Unwrap() error { return e.Err }

// Is reports whether target is [ErrInfrastructure].
func (e *InfraError) Is(target error) bool { return target == ErrInfrastructure }

// IsInfrastructure reports whether err is an infrastructure failure.
func IsInfrastructure(err error) bool { return errors.Is(err, ErrInfrastructure) }

// ErrNotConfigured is returned by [Open] when the configuration names no DUT.
var ErrNotConfigured = errors.New("no DUT configured")

// Holder says who holds a DUT; it is written into the lock file so that a
// waiting test can name the holder.
type Holder = lease.Holder

// Session is the error-returning core of the harness: one exclusively held
// DUT with its console open. Every method takes a context and returns once
// it is done; [DUT] is the test-facing layer over it.
type Session struct {
	cfg   Config
	dev   driver.Device
	lease *lease.Lease
	con   *console.Console
	logf  func(format string, args ...any)
	trace *step.Tracer // the tracer of Open's context, for calls whose context has none

	infraWatches map[string]bool
	poweredAt    time.Time
	on           bool           // the harness powered the DUT on and has not powered it off since
	knownOff     bool           // the last power step powered it off, and nobody took the raw device since
	loggedIn     bool           // Login succeeded since the last power on
	unclean      *uncleanRecord // the previous holder could not power the DUT off
	boot         time.Duration  // power-on to login prompt of the last Login, for properties
	flashed      *flash.Report
}

// Open selects a DUT as cfg says, locks it (waiting up to cfg.AcquireTimeout
// and ctx), puts it into a known state (power off, storage off) and opens its
// console, all as the step "acquire".
//
// Every hardware step of the session is traced (see package step) to the
// tracer of the call's context, else to the tracer of Open's context; when
// Open's context has none and logf is not nil, to logf, one line at each
// step's start and end with its arguments and duration. logf also receives
// what is not a step (discovery, the lock).
//
// A configuration mistake (a bad image, a name or
// tags that match none of the devices found) is a [*ConfigError] or wraps
// [ErrBadConfig]; every other failure is an [*InfraError]. Open leaves
// nothing locked or powered when it fails.
//
// When the DUT's previous holder could not power it off, Open says so in the
// log and powers it off before anything else; if that fails too, the DUT is
// left marked and Open fails naming both.
func Open(ctx context.Context, cfg Config, who Holder, logf func(string, ...any)) (*Session, error) {
	ctx = withLogTracer(ctx, logf)
	if logf == nil {
		logf = func(string, ...any) {}
	}
	cfg, err := checkConfig(cfg)
	if err != nil {
		return nil, err
	}
	ctx, st := step.Start(ctx, "acquire", acquireArgs(cfg)...)
	s, err := acquire(ctx, cfg, who, logf)
	if err != nil {
		return nil, st.End(err)
	}
	st.Set("device", driver.Describe(s.dev))
	st.End(nil)
	return s, nil
}

// acquire leases and opens the DUT cfg wants and makes its session.
func acquire(ctx context.Context, cfg Config, who Holder, logf func(string, ...any)) (*Session, error) {
	l, dev, err := takeLease(ctx, cfg, who, logf)
	if err != nil {
		return nil, err
	}
	return openSession(ctx, cfg, l, dev, logf)
}

// checkConfig applies cfg's defaults and checks it names a DUT and a good
// image.
func checkConfig(cfg Config) (Config, error) {
	cfg = cfg.WithDefaults()
	if !cfg.Configured() {
		return cfg, fmt.Errorf("%w: set %s (e.g. sim), %s or %s", ErrNotConfigured, Env.Driver, Env.Name, Env.Tags)
	}
	if cfg.Image != "" {
		if _, err := flash.CheckImage(cfg.Image); err != nil {
			return cfg, &ConfigError{Step: "acquire", Err: fmt.Errorf("%s: %w", Env.Image, err)}
		}
	}
	return cfg, nil
}

// openSession makes the session of the opened device dev under held lease
// l: it puts the DUT in a known state and opens its console, or closes
// everything and releases l.
func openSession(ctx context.Context, cfg Config, l *lease.Lease, dev driver.Device, logf func(string, ...any)) (*Session, error) {
	s := &Session{cfg: cfg, lease: l, dev: dev, logf: logf, trace: step.TracerFrom(ctx), infraWatches: map[string]bool{}}
	s.unclean = readUnclean(l.Path())
	if s.unclean != nil {
		logf("%s: its previous holder (%s) could not power it off at cleanup (%s): powering it off first", dev.Name(), s.unclean.Holder, s.unclean.Error)
	}
	if err := s.open(ctx); err != nil {
		_ = s.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return s, nil
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

// open puts the DUT in a known state and opens its console.
func (s *Session) open(ctx context.Context) error {
	if err := s.off(ctx); err != nil {
		if s.unclean != nil {
			return fmt.Errorf("%w (its previous holder, %s, could not power it off either: %s)", err, s.unclean.Holder, s.unclean.Error)
		}
		return err
	}
	if s.unclean != nil {
		clearUnclean(s.lease.Path())
		s.unclean = nil
	}
	if mux, ok := driver.Has[driver.StorageMux](s.dev); ok {
		if err := s.step(ctx, "storage off", func(ctx context.Context) error { return mux.SetStorage(ctx, driver.StorageOff) }); err != nil {
			return err
		}
	}
	port, err := driver.As[driver.ConsolePort](s.dev)
	if err != nil {
		return nil // a device without console: console helpers will say so
	}
	return s.step(ctx, "open console", func(ctx context.Context) error {
		rw, err := port.OpenConsole(ctx)
		if err != nil {
			return err
		}
		s.con = console.New(rw, console.Options{Name: s.dev.Name(), CharDelay: s.cfg.CharDelay, DefaultTimeout: s.cfg.CommandTimeout, MaxLine: s.cfg.MaxLine})
		for _, w := range s.cfg.Watches {
			re, err := regexp.Compile(w.Pattern)
			if err != nil {
				return fmt.Errorf("%w: watcher %q: %w", ErrBadConfig, w.Name, err)
			}
			s.con.Watch(w.Name, console.Regexp(re))
			s.infraWatches[w.Name] = w.Infrastructure
		}
		return nil
	})
}

// step runs one hardware step, traced under its name, bounded by
// cfg.StepTimeout, and turns its failure into an [*InfraError].
func (s *Session) step(ctx context.Context, name string, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(s.traced(ctx), s.cfg.StepTimeout)
	defer cancel()
	ctx, st := step.Start(ctx, name)
	if err := st.End(fn(ctx)); err != nil {
		return &InfraError{Step: name, Device: s.dev.Name(), Err: err}
	}
	return nil
}

// begin starts the traced step name that encloses other steps of this
// DUT; its caller ends it.
func (s *Session) begin(ctx context.Context, name string, args ...any) (context.Context, *step.Step) {
	return step.Start(s.traced(ctx), name, args...)
}

// traced returns ctx with the session's tracer, unless it has a tracer of
// its own, and with this DUT as the device of its steps.
func (s *Session) traced(ctx context.Context) context.Context {
	if s.trace != nil && step.TracerFrom(ctx) == nil {
		ctx = step.WithTracer(ctx, s.trace)
	}
	return step.WithDevice(ctx, s.dev.Name())
}

// Device returns the held device. A caller that uses it directly may
// change its power behind the session's back: Close then powers it off
// even when the session last did.
func (s *Session) Device() driver.Device {
	s.knownOff = false
	return s.dev
}

// Config returns the session's configuration.
func (s *Session) Config() Config { return s.cfg }

// Console returns the DUT's console, or an error when the device has none.
func (s *Session) Console() (*console.Console, error) {
	if s.con == nil {
		_, err := driver.As[driver.ConsolePort](s.dev)
		return nil, &InfraError{Step: "console", Device: s.dev.Name(), Err: err}
	}
	return s.con, nil
}

// LockPath returns the lock file that holds the DUT.
func (s *Session) LockPath() string { return s.lease.Path() }

// Flash writes the image at path (cfg.Image when empty) onto the DUT's
// storage: it checks the image, powers the DUT off, connects the storage to
// the host, writes and syncs, and disconnects the storage again, also when
// the write fails.
//
// Without a bmap the target ends byte-identical to the image; cfg.Bmap and
// cfg.SkipHoles ask otherwise. A missing, unreadable or corrupt image (or
// bmap) is a [*ConfigError]; a failure of the storage is an [*InfraError].
//
// Flash returns once the target is written, synced and verified: the
// image's SHA-256, unless the hash cache knew it, is then still being
// computed (at idle priority, while the DUT boots) and the report's SHA256
// is empty; [Session.ImageHash] waits for it.
func (s *Session) Flash(ctx context.Context, path string, progress func(flash.Progress)) (flash.Report, error) {
	if path == "" {
		path = s.cfg.Image
	}
	ctx, st := s.begin(ctx, "flash", "image", path)
	rep, err := s.flash(ctx, path, progress)
	if err == nil {
		st.Set("bytes", rep.Bytes, "written", rep.MappedBytes, "mode", rep.Mode, "mbps", fmt.Sprintf("%.1f", rep.MBps()), "verified", rep.Verified, "sha256", cmp.Or(rep.SHA256, "pending"))
	}
	return rep, st.End(err)
}

// flash is Flash with its image path given, inside its step.
func (s *Session) flash(ctx context.Context, path string, progress func(flash.Progress)) (flash.Report, error) {
	if _, err := flash.CheckImage(path); err != nil {
		return flash.Report{Image: path}, &ConfigError{Step: "flash", Device: s.dev.Name(), Err: err}
	}
	if f, ok := s.dev.(flash.Flasher); ok {
		return s.flashBy(ctx, f, path, progress)
	}
	mux, err := driver.As[driver.StorageMux](s.dev)
	if err != nil {
		return flash.Report{Image: path}, &InfraError{Step: "flash", Device: s.dev.Name(), Err: err}
	}
	if err := s.off(ctx); err != nil {
		return flash.Report{Image: path}, err
	}
	if err := s.step(ctx, "storage host", func(ctx context.Context) error { return mux.SetStorage(ctx, driver.StorageHost) }); err != nil {
		return flash.Report{Image: path}, err
	}
	defer func() {
		_ = s.step(context.WithoutCancel(ctx), "storage off", func(ctx context.Context) error { return mux.SetStorage(ctx, driver.StorageOff) })
	}()
	var target string
	if err := s.step(ctx, "find block target", func(ctx context.Context) (err error) {
		target, err = mux.BlockTarget(ctx)
		step.Current(ctx).Set("target", target)
		return err
	}); err != nil {
		return flash.Report{Image: path}, err
	}
	fctx, cancel := context.WithTimeout(ctx, s.cfg.FlashTimeout)
	defer cancel()
	opts := s.flashOptions(progress)
	fctx, st := step.Start(fctx, "write", "target", target, "timeout", s.cfg.FlashTimeout)
	rep, err := flash.Write(fctx, path, target, opts)
	st.Set("bytes", rep.Bytes)
	st.End(err)
	return s.wrote(rep, err, path, target)
}

// flashBy is flash for a device that writes images itself (a remote
// device: its exporter runs the engine beside the storage).
func (s *Session) flashBy(ctx context.Context, f flash.Flasher, path string, progress func(flash.Progress)) (flash.Report, error) {
	if err := s.off(ctx); err != nil {
		return flash.Report{Image: path}, err
	}
	fctx, cancel := context.WithTimeout(ctx, s.cfg.FlashTimeout)
	defer cancel()
	fctx, st := step.Start(fctx, "write", "by", s.dev.Driver(), "timeout", s.cfg.FlashTimeout)
	rep, err := f.FlashImage(fctx, path, s.flashOptions(progress))
	st.Set("bytes", rep.Bytes, "target", rep.Target)
	st.End(err)
	return s.wrote(rep, err, path, rep.Target)
}

// wrote logs and types the outcome of a write and records its report.
func (s *Session) wrote(rep flash.Report, err error, path, target string) (flash.Report, error) {
	if err != nil {
		s.logf("%s: flash %s -> %s failed after %d bytes: %v", s.dev.Name(), path, target, rep.Bytes, err)
		if IsConfiguration(err) {
			return rep, &ConfigError{Step: "flash", Device: s.dev.Name(), Err: err}
		}
		return rep, &InfraError{Step: "flash", Device: s.dev.Name(), Err: err}
	}
	cached := ""
	if rep.SHA256Cached {
		cached = " (from the hash cache)"
	}
	zeroed := ""
	if rep.ZeroedBytes > 0 {
		zeroed = fmt.Sprintf(", %d zeroed (%s)", rep.ZeroedBytes, rep.ZeroedBy)
	}
	s.logf("%s: flashed %s (%s) -> %s: %d bytes, %d written%s, mode %s, in %s (%.1f MB/s), verified %v (+%s), sha256 %s%s", s.dev.Name(), path, rep.Format, target, rep.Bytes, rep.MappedBytes, zeroed, rep.Mode, rep.Duration.Round(time.Millisecond), rep.MBps(), rep.Verified, rep.VerifyDuration.Round(time.Millisecond), cmp.Or(rep.SHA256, "still being computed"), cached)
	s.flashed = &rep
	return rep, nil
}

// ImageHash returns the SHA-256 of the image the last successful Flash
// wrote, waiting (until ctx ends) for it when the flash returned before it
// was complete. A hash that failed (the image file changed while it was
// flashed or hashed) wraps [flash.ErrImage]: the user's error.
func (s *Session) ImageHash(ctx context.Context) (string, error) {
	rep := s.flashed
	switch {
	case rep == nil:
		return "", fmt.Errorf("%w: no image was flashed", ErrBadConfig)
	case rep.SHA256 != "":
		return rep.SHA256, nil
	case rep.Hash == nil:
		return "", fmt.Errorf("the flash of %s left no SHA-256 to wait for", rep.Image)
	}
	sum, err := rep.Hash.Wait(ctx)
	if err != nil {
		return "", fmt.Errorf("the SHA-256 of %s: %w", rep.Image, err)
	}
	rep.SHA256 = sum
	s.logf("%s: image %s: sha256 %s (computed in %s, beside the rest of the test)", s.dev.Name(), rep.Image, sum, rep.Hash.Duration().Round(time.Millisecond))
	return sum, nil
}

// LastFlash returns the report of the last successful Flash, if any.
func (s *Session) LastFlash() (flash.Report, bool) {
	if s.flashed == nil {
		return flash.Report{}, false
	}
	return *s.flashed, true
}

// PowerOn connects the storage to the DUT (when it has a storage mux) and
// powers it on. The console's cursor moves to the end of the transcript
// first, so that later expects see this boot's output only.
func (s *Session) PowerOn(ctx context.Context) error {
	pw, err := driver.As[driver.Power](s.dev)
	if err != nil {
		return &InfraError{Step: "power on", Device: s.dev.Name(), Err: err}
	}
	ctx, st := s.begin(ctx, "power on")
	return st.End(s.powerOn(ctx, pw))
}

// PowerCycle powers the DUT off and on again (see [Session.PowerOff] and
// [Session.PowerOn]), as one step.
func (s *Session) PowerCycle(ctx context.Context) error {
	ctx, st := s.begin(ctx, "power cycle")
	err := s.off(ctx)
	if err == nil {
		err = s.PowerOn(ctx)
	}
	return st.End(err)
}

// powerOn is PowerOn inside its step: the storage to the DUT, then power.
func (s *Session) powerOn(ctx context.Context, pw driver.Power) error {
	if mux, ok := driver.Has[driver.StorageMux](s.dev); ok {
		if err := s.step(ctx, "storage dut", func(ctx context.Context) error { return mux.SetStorage(ctx, driver.StorageDUT) }); err != nil {
			return err
		}
	}
	if s.con != nil {
		// What the console says from now on belongs to this boot: expects
		// and Login must not match the previous boot's prompts.
		s.con.Discard()
	}
	s.poweredAt = time.Now()
	s.loggedIn = false
	s.knownOff = false
	if err := s.bounded(ctx, "power on", pw.PowerOn); err != nil {
		return err
	}
	s.on = true
	return nil
}

// bounded runs fn, a part of the current step that is no step of its own,
// bounded by cfg.StepTimeout, and turns its failure into an [*InfraError]
// of the step name.
func (s *Session) bounded(ctx context.Context, name string, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StepTimeout)
	defer cancel()
	if err := fn(ctx); err != nil {
		return &InfraError{Step: name, Device: s.dev.Name(), Err: err}
	}
	return nil
}

// poweredOff reports whether the harness powered the DUT off (or never on):
// then no new console output can come.
func (s *Session) poweredOff() bool {
	_, hasPower := driver.Has[driver.Power](s.dev)
	return hasPower && !s.on
}

// needShell says why there is no logged-in shell to run commands in, or nil.
func (s *Session) needShell() error {
	if s.con == nil {
		_, err := s.Console()
		return err
	}
	switch {
	case s.poweredOff():
		return fmt.Errorf("%s has no shell: it is powered off; call dut.PowerOn() and dut.Login() first", s.dev.Name())
	case !s.loggedIn:
		return fmt.Errorf("%s has no logged-in shell: call dut.Login() after dut.PowerOn() first (it waits for the login prompt and logs in); if the test logs in by itself through dut.Console(), run commands with dut.Session().Run", s.dev.Name())
	}
	return nil
}

// PoweredAt returns when the DUT was last powered on.
func (s *Session) PoweredAt() time.Time { return s.poweredAt }

// PowerOff powers the DUT off; when the graceful power-off fails and the
// device can cut power, it does that instead.
func (s *Session) PowerOff(ctx context.Context) error { return s.off(ctx) }

func (s *Session) off(ctx context.Context) error {
	err := s.cutPower(ctx)
	s.knownOff = err == nil
	if err == nil {
		s.on, s.loggedIn = false, false
	}
	return err
}

func (s *Session) cutPower(ctx context.Context) error {
	pw, hasPower := driver.Has[driver.Power](s.dev)
	fp, hasForce := driver.Has[driver.ForcePower](s.dev)
	if !hasPower && !hasForce {
		return nil
	}
	var err error
	if hasPower {
		if err = s.step(ctx, "power off", pw.PowerOff); err == nil {
			return nil
		}
	}
	if hasForce {
		return s.step(ctx, "force off", fp.ForceOff)
	}
	return err
}

// Login waits for the login prompt, logs in with cfg.User and cfg.Password
// and returns when a shell answers, bounded by cfg.BootTimeout.
//
// The step "login" spans the boot: from the call to the shell; its result
// boot_seconds is from power-on to the login prompt.
func (s *Session) Login(ctx context.Context) (console.LoginResult, error) {
	con, err := s.Console()
	if err != nil {
		return console.LoginResult{}, err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, s.cfg.BootTimeout, errBootTimeout)
	defer cancel()
	// Two steps: "boot" until the first login prompt, then "login" until
	// a shell answers, so that a hang shows which of them is running.
	_, st := s.begin(ctx, "boot", "timeout", s.cfg.BootTimeout)
	prompted := func(at time.Time) {
		if !s.poweredAt.IsZero() {
			st.Set("boot_seconds", fmt.Sprintf("%.3f", at.Sub(s.poweredAt).Seconds()))
		}
		st.End(nil)
		_, st = s.begin(ctx, "login", "user", s.cfg.User)
	}
	res, err := con.Login(ctx, console.LoginOptions{User: s.cfg.User, Password: s.cfg.Password, Prompted: prompted})
	if err != nil {
		return res, st.End(s.classify("login", explainTimeout(ctx, err, s.cfg)))
	}
	st.End(nil)
	s.loggedIn = true
	return res, nil
}

// classify marks console failures caused by an infrastructure watcher (no
// boot device) or a dead console port as infrastructure failures.
func (s *Session) classify(step string, err error) error {
	var we *console.WatchError
	if errors.As(err, &we) && s.infraWatches[we.Watch] {
		return &InfraError{Step: step, Device: s.dev.Name(), Err: err}
	}
	if errors.Is(err, console.ErrClosed) || errors.Is(err, console.ErrPort) {
		return &InfraError{Step: step, Device: s.dev.Name(), Err: err}
	}
	return err
}

// Run runs cmd on the DUT's console shell, bounded by cfg.CommandTimeout.
//
// The command is the step "run", with its exit code as the result "exit".
func (s *Session) Run(ctx context.Context, cmd string) (console.Result, error) {
	con, err := s.Console()
	if err != nil {
		return console.Result{}, err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, s.cfg.CommandTimeout, errCommandTimeout)
	defer cancel()
	ctx, st := s.begin(ctx, "run", "cmd", cmd)
	res, err := s.run(ctx, con, cmd)
	if err == nil {
		st.Set("exit", res.ExitCode)
	}
	return res, st.End(err)
}

// run is Run inside its step.
func (s *Session) run(ctx context.Context, con *console.Console, cmd string) (console.Result, error) {
	res, err := con.Run(ctx, cmd)
	if errors.Is(err, console.ErrCommandTooLong) {
		return res, fmt.Errorf("%w\n(%s sets the longest line the DUT's shell takes: raise it if this shell takes longer ones, or put the command in a script on the DUT)", err, Env.MaxLine)
	}
	if err != nil {
		return res, s.classify("run", explainTimeout(ctx, err, s.cfg))
	}
	return res, nil
}

// Close powers the DUT off (unless the session's last power step did, and
// the raw device was not handed out since), disconnects its storage, closes
// its console and releases the lock, doing every step even when one fails.
// Give it a context with its own deadline (the test's may have passed).
func (s *Session) Close(ctx context.Context) error {
	var errs []error
	if s.dev != nil && !s.knownOff {
		if err := s.off(ctx); err != nil {
			errs = append(errs, err)
			// The lock is released below (the kernel would release it at
			// exit anyway); the next holder must not take the DUT for off.
			if s.lease != nil {
				if merr := markUnclean(s.lease.Path(), s.lease.Holder(), err); merr != nil {
					errs = append(errs, merr)
				}
			}
		}
	}
	if s.dev != nil {
		if mux, ok := driver.Has[driver.StorageMux](s.dev); ok {
			if err := s.step(ctx, "storage off", func(ctx context.Context) error { return mux.SetStorage(ctx, driver.StorageOff) }); err != nil {
				errs = append(errs, err)
			}
		}
		if s.con != nil {
			if err := s.con.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if c, ok := s.dev.(driver.Closer); ok {
			if err := c.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if s.lease != nil {
		if err := s.lease.Release(); err != nil {
			errs = append(errs, &InfraError{Step: "release lock", Err: err})
		} else {
			s.logf("release: unlocked %s", s.lease.Info().Key())
		}
	}
	return errors.Join(errs...)
}

// holderFor describes the current process for lock files; the lock fills in
// the host, the command line and the time the lock was obtained.
func holderFor(test string) Holder {
	return Holder{Test: test, PID: os.Getpid()}
}

// flashOptions are the flash engine's options for this DUT: the progress
// callback, the driver's target check, and the bmap choice.
func (s *Session) flashOptions(progress func(flash.Progress)) flash.Options {
	opts := flash.Options{Progress: progress, DeferHash: true}
	if tc, ok := s.dev.(driver.TargetChecker); ok {
		opts.CheckTarget = tc.CheckTarget
	}
	switch s.cfg.Bmap {
	case "":
	case "none":
		opts.NoBmap = true
	default:
		opts.Bmap = s.cfg.Bmap
	}
	opts.SkipHoles = s.cfg.SkipHoles
	return opts
}
