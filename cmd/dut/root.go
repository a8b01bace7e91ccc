package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"

	// The drivers dut knows; each registers itself when imported.
	_ "github.com/jumpstarter-dev/jumpstarter-go/qemu"
	_ "github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
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

	driver  string
	tags    string
	lockDir string
	timeout time.Duration
	verbose bool
}

// run executes the dut command line args and returns the exit code. Errors
// are printed on stderr. ctx ends the command early (Ctrl-C).
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
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
	var ie *harness.InfraError
	switch {
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return exitInterrupted
	case errors.As(err, &ie) && ie.Step == "acquire" && errors.Is(err, context.DeadlineExceeded):
		return exitBusy
	case errors.Is(err, driver.ErrNoDevice):
		return exitNoDevice
	case errors.As(err, new(usageError)), isCommandLineError(err),
		errors.Is(err, harness.ErrBadConfig), errors.Is(err, harness.ErrNotConfigured),
		errors.Is(err, driver.ErrUnknownDriver), errors.Is(err, driver.ErrBadTags), errors.Is(err, driver.ErrBadConfig),
		errors.Is(err, driver.ErrUnsupported), errors.Is(err, dutlink.ErrBadConfig):
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

// message renders err for the user: a harness step failure without the
// test-report wording "infrastructure failure".
func message(err error) string {
	var ie *harness.InfraError
	if errors.As(err, &ie) && ie.Err != nil {
		where := ie.Step
		if ie.Device != "" {
			where += " on " + ie.Device
		}
		msg := strings.Replace(err.Error(), ie.Error(), where+": "+ie.Err.Error(), 1)
		if ie.Step == "acquire" && errors.Is(err, context.DeadlineExceeded) {
			const hint = "raise DUT_ACQUIRE_TIMEOUT"
			if strings.Contains(msg, hint) {
				msg = strings.Replace(msg, hint, "raise --timeout (DUT_ACQUIRE_TIMEOUT)", 1)
			} else {
				msg += " (a longer --timeout waits longer)"
			}
		}
		return msg
	}
	return err.Error()
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
	pf.StringVar(&a.lockDir, "lock-dir", "", "the lock directory shared with the tests (default $DUT_LOCK_DIR, else "+harness.DefaultLockDir()+")")
	pf.DurationVar(&a.timeout, "timeout", 0, "how long to wait for a busy device (default $DUT_ACQUIRE_TIMEOUT, else 5m)")
	pf.BoolVarP(&a.verbose, "verbose", "v", false, "log each discovery and hardware step on stderr")

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
	)
	return root
}

// config returns the harness configuration: the DUT_* environment with the
// global flags that were given on top.
func (a *app) config(cmd *cobra.Command) (harness.Config, error) {
	cfg, err := harness.ConfigFromEnv()
	if err != nil {
		return cfg, err
	}
	flags := cmd.Flags()
	if flags.Changed("driver") {
		cfg.Driver = strings.TrimSpace(a.driver)
	}
	if cfg.Driver != "" {
		if _, err := driver.Lookup(cfg.Driver); err != nil {
			return cfg, fmt.Errorf("--driver/%s: %w", harness.Env.Driver, err)
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
	return cfg.WithDefaults(), nil
}

// logf returns the step logger: stderr with --verbose, else nothing.
func (a *app) logf() func(string, ...any) {
	if !a.verbose {
		return nil
	}
	return func(format string, args ...any) { fmt.Fprintf(a.stderr, "dut: "+format+"\n", args...) }
}

// withDevice selects the device dev names (with the global selection),
// locks it as a test would, runs fn and releases the lock. A busy device is
// waited for up to the acquire timeout, saying on stderr who holds it.
func (a *app) withDevice(cmd *cobra.Command, dev string, fn func(ctx context.Context, cfg harness.Config, d driver.Device) error) (err error) {
	ctx := cmd.Context()
	if strings.TrimSpace(dev) == "" {
		return cmdLinef("DEV is empty: give a device's name or serial (see dut list)")
	}
	cfg, err := a.config(cmd)
	if err != nil {
		return err
	}
	cfg.Name = dev
	who := harness.Holder{Test: strings.TrimSpace(cmd.CommandPath() + " " + dev)}

	// One try without waiting first: when the device is busy, say so
	// before the wait rather than sit silent for minutes.
	quick := cfg
	quick.AcquireTimeout = time.Nanosecond
	r, err := a.reserve(ctx, quick, who)
	if isBusy(err) && ctx.Err() == nil {
		a.sayWaiting(ctx, cfg)
		r, err = a.reserve(ctx, cfg, who)
	}
	if errors.Is(err, driver.ErrNoDevice) {
		// A board another process holds may be the one asked for: the
		// DUTlink driver cannot read its name while its tty is held.
		found, _ := discover(ctx, cfg)
		var unusable []string
		var misconfigured []error
		for _, p := range found.problems {
			switch {
			case p.Where != "driver":
				unusable = append(unusable, p.Driver+" "+p.Where+": "+p.Reason)
			case errors.Is(p.err, driver.ErrBadConfig):
				misconfigured = append(misconfigured, fmt.Errorf("driver %s: %w", p.Driver, p.err))
			}
		}
		if len(unusable) > 0 {
			err = fmt.Errorf("%w; found but not usable now: %s", err, strings.Join(unusable, "; "))
		}
		if len(misconfigured) > 0 {
			// The device may well be there, behind the driver's bad
			// variable: that is what to fix (a usage error, exit code 2).
			err = fmt.Errorf("%v; a driver could not look for devices: %w", err, errors.Join(misconfigured...))
		}
	}
	if err != nil {
		return err
	}
	defer func() {
		if rerr := r.Release(); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	return fn(ctx, cfg, r.Device())
}

// reserve selects and locks a device as cfg says. Discovery gets a
// deadline too: the step timeout on top of the lock wait.
func (a *app) reserve(ctx context.Context, cfg harness.Config, who harness.Holder) (*harness.Reservation, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.AcquireTimeout+2*cfg.StepTimeout)
	defer cancel()
	return harness.Reserve(ctx, cfg, who, a.logf())
}

// isBusy reports whether err is a lock wait that timed out.
func isBusy(err error) bool {
	var ie *harness.InfraError
	return errors.As(err, &ie) && ie.Step == "acquire" && errors.Is(err, context.DeadlineExceeded)
}

// sayWaiting tells the user who holds the devices cfg selects.
func (a *app) sayWaiting(ctx context.Context, cfg harness.Config) {
	found, _ := discover(ctx, cfg)
	devs, _ := driver.Select(found.devices(), cfg.Name, cfg.Tags)
	var held []string
	for _, d := range devs {
		h, ok, err := harness.LockHolder(cfg.LockDir, d)
		if err == nil && ok {
			held = append(held, d.Name()+" is held by "+describeHolder(h))
		}
	}
	what := "the device"
	if len(held) > 0 {
		what = strings.Join(held, "; ")
	} else {
		what += " is busy"
	}
	fmt.Fprintf(a.stderr, "dut: %s; waiting up to %s for it (--timeout, %s)\n", what, cfg.AcquireTimeout, harness.Env.AcquireTimeout)
}

// describeHolder names a lock holder, e.g. "TestBoot (pid 42 on host lab1)
// since 2026-01-02T15:04:05Z".
func describeHolder(h harness.Holder) string {
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
func stepContext(ctx context.Context, cfg harness.Config) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, cfg.StepTimeout)
}

// cleanupContext is for steps that must run even when ctx was cancelled
// (Ctrl-C): it keeps ctx's values, not its cancellation, and has its own
// deadline.
func cleanupContext(ctx context.Context, cfg harness.Config) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), cfg.StepTimeout)
}
