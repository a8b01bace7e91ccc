package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	trace "github.com/jumpstarter-dev/jumpstarter-go/harness/step"

	// The drivers dut knows; each registers itself when imported. The
	// simulated DUT is linked in only with -tags dutsim (sim.go).
	_ "github.com/jumpstarter-dev/jumpstarter-go/dutlink"
	_ "github.com/jumpstarter-dev/jumpstarter-go/qemu"
	_ "github.com/jumpstarter-dev/jumpstarter-go/remote"
)

// Exit codes of the dut command.
const (
	exitOK          = 0
	exitFailure     = 1   // a device or lab step failed
	exitUsage       = 2   // bad command line, configuration or request
	exitBusy        = 3   // the device stayed locked for --timeout
	exitNoDevice    = 4   // no device matches the selection
	exitInterrupted = 130 // Ctrl-C (128 + SIGINT, as shells report it)
)

// app holds what every command shares: the standard streams and the global
// flags.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	drivers        []driver.Driver // nil: the registered ones

	driver  string
	tags    string
	lockDir string
	timeout time.Duration
	verbose bool
}

// run executes the dut command line args and returns the exit code. Errors
// are printed on stderr. ctx ends the command early (Ctrl-C).
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return runWith(ctx, nil, args, stdin, stdout, stderr)
}

// runWith is run with the drivers to use instead of the registered ones
// (nil: the registered ones).
func runWith(ctx context.Context, drivers []driver.Driver, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, drivers: drivers}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	code := exitCode(ctx, err)
	fmt.Fprintf(stderr, "dut: %s\n", message(err))
	if code == exitUsage && isCommandLineError(err) {
		printUsage(stderr, cmd)
	}
	return code
}

// exitCode classifies err; ctx is the command's context.
func exitCode(ctx context.Context, err error) int {
	switch {
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return exitInterrupted
	case isBusy(err):
		return exitBusy
	case errors.Is(err, driver.ErrNoDevice):
		return exitNoDevice
	case errors.As(err, new(usageError)), isCommandLineError(err),
		errors.Is(err, errBadEnv), errors.Is(err, lease.ErrBadRequest),
		errors.Is(err, driver.ErrUnknownDriver), errors.Is(err, driver.ErrBadTags), errors.Is(err, driver.ErrBadConfig),
		errors.Is(err, driver.ErrUnsupported), errors.Is(err, driver.ErrInvalidArgument):
		return exitUsage
	}
	return exitFailure
}

// isCommandLineError reports whether err is cobra's complaint about the
// command line itself.
func isCommandLineError(err error) bool {
	var ue usageError
	if errors.As(err, &ue) {
		return ue.cmdLine
	}
	return strings.HasPrefix(err.Error(), "unknown command ")
}

// message renders err for the user; a busy device's says which flag
// waits longer.
func message(err error) string {
	msg := err.Error()
	if isBusy(err) {
		const hint = "raise DUT_ACQUIRE_TIMEOUT"
		if strings.Contains(msg, hint) {
			msg = strings.Replace(msg, hint, "raise --timeout (DUT_ACQUIRE_TIMEOUT)", 1)
		} else {
			msg += " (a longer --timeout waits longer)"
		}
	}
	return msg
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "dut",
		Short: "Work by hand with the devices under test that jumpstarter-go tests use",
		Long: `dut lists, powers, flashes and talks to the devices under test (DUTs) of
jumpstarter-go, with the selection rules and the device lock of the test
harness: while a dut command works on a device, no test gets it, and a
device a test holds makes dut wait (up to --timeout) and then name the test.

DEV is a device's name or serial. --driver and --tags narrow the selection
(a device must carry all the tags). The DUT_* variables are read as the
harness reads them (DUT_DRIVER, DUT_TAGS, DUT_LOCK_DIR, DUT_ACQUIRE_TIMEOUT,
DUT_STEP_TIMEOUT, DUT_FLASH_TIMEOUT, DUT_IMAGE, DUT_BMAP,
DUT_FLASH_SKIP_HOLES); the flags override them.

Devices of the qemu and sim drivers live in the process that found them:
their power, storage mux, pins, console and config end with each dut command
(only their disk files stay), so dut power on followed by dut reset finds the
device off again. dut prints a note on stderr whenever a command changes such
a device, and dut list marks them. Use them from a test (harness.Acquire), or
boot and watch one by hand with dut console DEV --power-on.

Exit codes: 0 success, 1 a device step failed, 2 usage error (command line:
a missing, extra, misplaced or unknown argument, action, key or flag; a bad
DUT_* variable, a value the board refuses, a capability the device lacks),
3 device busy for --timeout, 4 no matching device, 130 interrupted.`,
		Example: `  dut list
  dut power on bench-1
  dut flash bench-1 os.img.zst && dut console bench-1 --power-on
  DUT_LOCK_DIR=/var/lock/dut dut --timeout 10m power off 1a2b3c4d`,
		SilenceErrors:     true,
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return usageError{err: err, cmdLine: true}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.driver, "driver", "", "only devices of this driver: dutlink, qemu or sim (default $DUT_DRIVER, else all)")
	pf.StringVar(&a.tags, "tags", "", "only devices carrying all these comma-separated tags (default $DUT_TAGS)")
	pf.StringVar(&a.lockDir, "lock-dir", "", "the lock directory shared with the tests (default $DUT_LOCK_DIR, else "+lease.DefaultDir()+")")
	pf.DurationVar(&a.timeout, "timeout", 0, "how long to wait for a busy device (default $DUT_ACQUIRE_TIMEOUT, else 5m)")
	pf.BoolVarP(&a.verbose, "verbose", "v", false, "log each discovery, and each hardware step at its start and its end, on stderr")

	root.AddCommand(
		a.listCmd(),
		a.powerCmd(),
		a.resetCmd(),
		a.pinCmd(),
		a.storageCmd(),
		a.flashCmd(),
		a.consoleCmd(),
		a.configCmd(),
		a.meterCmd(),
		a.serveCmd(),
	)
	return root
}

// config returns the configuration: the DUT_* environment with the global
// flags that were given on top.
func (a *app) config(cmd *cobra.Command) (config, error) {
	cfg, err := configFromEnv()
	if err != nil {
		return cfg, err
	}
	cfg.Drivers = a.drivers
	flags := cmd.Flags()
	if flags.Changed("driver") {
		cfg.Driver = strings.TrimSpace(a.driver)
	}
	if cfg.Driver != "" {
		if _, err := cfg.lookup(cfg.Driver); err != nil {
			return cfg, fmt.Errorf("--driver/%s: %w", envDriver, err)
		}
	}
	if flags.Changed("tags") {
		tags, err := driver.ParseTags(a.tags)
		if err != nil {
			return cfg, fmt.Errorf("--tags: %w", err)
		}
		cfg.Tags = tags
	}
	if flags.Changed("lock-dir") {
		if a.lockDir == "" {
			return cfg, cmdLinef("--lock-dir is empty: give the lock directory the tests use")
		}
		cfg.LockDir = a.lockDir
	}
	if flags.Changed("timeout") {
		if a.timeout <= 0 {
			return cfg, cmdLinef("--timeout %s: give a positive duration such as 30s or 5m", a.timeout)
		}
		cfg.AcquireTimeout = a.timeout
	}
	return cfg, nil
}

// logf returns the step logger: stderr with --verbose, else nothing.
func (a *app) logf() func(string, ...any) {
	if !a.verbose {
		return nil
	}
	return func(format string, args ...any) { fmt.Fprintf(a.stderr, "dut: "+format+"\n", args...) }
}

// traced returns ctx with the hardware steps' tracer: with --verbose, one
// that logs them on stderr (as "dut: → bench-1: power on" and "dut: ←
// bench-1: power on (1.2s) ok"), else ctx itself.
func (a *app) traced(ctx context.Context) context.Context {
	logf := a.logf()
	if logf == nil {
		return ctx
	}
	return trace.WithTracer(ctx, trace.New(trace.LogSink(logf)))
}

// withDevice selects the device dev names (with the global selection),
// leases it as a test would, opens it, runs fn, closes it and releases the
// lease. A busy device is waited for up to the acquire timeout, saying on
// stderr who holds it.
func (a *app) withDevice(cmd *cobra.Command, dev string, fn func(ctx context.Context, cfg config, d driver.Device) error) (err error) {
	ctx := trace.WithDevice(a.traced(cmd.Context()), dev)
	if strings.TrimSpace(dev) == "" {
		return cmdLinef("DEV is empty: give a device's name or serial (see dut list)")
	}
	cfg, err := a.config(cmd)
	if err != nil {
		return err
	}
	cfg.Name = dev
	who := lease.Holder{Test: strings.TrimSpace(cmd.CommandPath() + " " + dev)}

	// One try without waiting first: when the device is busy, say so
	// before the wait rather than sit silent for minutes.
	l, err := a.lease(ctx, cfg, who, lease.TryAcquire)
	var busy *lease.BusyError
	if errors.As(err, &busy) && ctx.Err() == nil {
		a.sayWaiting(cfg, busy)
		l, err = a.lease(ctx, cfg, who, lease.Acquire)
	}
	if errors.Is(err, driver.ErrNoDevice) {
		err = explainNoDevice(ctx, cfg, err)
	}
	if err != nil {
		return err
	}
	defer func() {
		if rerr := l.Release(); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	octx, cancel := stepContext(ctx, cfg)
	d, err := openLeased(octx, l)
	cancel()
	if err != nil {
		return err
	}
	ctx = trace.WithDevice(ctx, d.Name())
	defer func() {
		if c, ok := d.(driver.Closer); ok {
			if cerr := c.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("close %s: %w", d.Name(), cerr))
			}
		}
	}()
	return fn(ctx, cfg, d)
}

// openLeased opens the device of lease l as the step "open".
func openLeased(ctx context.Context, l *lease.Lease) (driver.Device, error) {
	ctx, st := trace.Start(ctx, "open")
	d, err := l.Open(ctx)
	return d, st.End(err)
}

// explainNoDevice adds to a selection that found nothing the drivers that
// could not look, which may hide the device.
func explainNoDevice(ctx context.Context, cfg config, err error) error {
	found, _ := discover(ctx, cfg)
	var misconfigured []error
	for _, de := range found.Failed {
		if errors.Is(de.Err, driver.ErrBadConfig) {
			misconfigured = append(misconfigured, fmt.Errorf("driver %s: %w", de.Driver, de.Err))
		}
	}
	if len(misconfigured) > 0 {
		// The device may well be there, behind the driver's bad variable:
		// that is what to fix (a usage error, exit code 2).
		return fmt.Errorf("%v; a driver could not look for devices: %w", err, errors.Join(misconfigured...))
	}
	return err
}

// lease selects and leases a device as cfg says, with take (lease.Acquire
// or lease.TryAcquire), waiting up to the acquire timeout; discovery gets
// the step timeout on top.
func (a *app) lease(ctx context.Context, cfg config, who lease.Holder, take func(context.Context, lease.Request, lease.Holder) (*lease.Lease, error)) (*lease.Lease, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.AcquireTimeout+cfg.StepTimeout)
	defer cancel()
	l, err := take(ctx, cfg.request(a.logf()), who)
	if isBusy(err) {
		return nil, fmt.Errorf("acquire: %w", err)
	}
	return l, err
}

// isBusy reports whether err is a lease wait that timed out.
func isBusy(err error) bool {
	var be *lease.BusyError
	return errors.As(err, &be)
}

// sayWaiting tells the user who holds the devices a try found busy.
func (a *app) sayWaiting(cfg config, busy *lease.BusyError) {
	var held []string
	for i, d := range busy.Devices {
		if i < len(busy.Holders) && busy.Holders[i] != (lease.Holder{}) {
			held = append(held, d.Name+" is held by "+describeHolder(busy.Holders[i]))
		}
	}
	what := "the device is busy"
	if len(held) > 0 {
		what = strings.Join(held, "; ")
	}
	fmt.Fprintf(a.stderr, "dut: %s; waiting up to %s for it (--timeout, %s)\n", what, cfg.AcquireTimeout, envAcquireTimeout)
}

// describeHolder names a lock holder, e.g. "TestBoot (pid 42 on host lab1)
// since 2026-01-02T15:04:05Z".
func describeHolder(h lease.Holder) string {
	name := h.Test
	if name == "" {
		if f := strings.Fields(h.Command); len(f) > 0 {
			name = f[0]
		} else {
			name = "an unnamed process"
		}
	}
	var where []string
	if h.PID != 0 {
		where = append(where, fmt.Sprintf("pid %d", h.PID))
	}
	if h.Host != "" {
		where = append(where, "on host "+h.Host)
	}
	if len(where) > 0 {
		name += " (" + strings.Join(where, " ") + ")"
	}
	if !h.Since.IsZero() {
		name += " since " + h.Since.UTC().Format(time.RFC3339)
	}
	return name
}

// stepContext bounds one hardware step by the configured step timeout.
func stepContext(ctx context.Context, cfg config) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, cfg.StepTimeout)
}

// cleanupContext is for steps that must run even when ctx was cancelled
// (Ctrl-C): it keeps ctx's values, not its cancellation, and has its own
// deadline.
func cleanupContext(ctx context.Context, cfg config) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), cfg.StepTimeout)
}
