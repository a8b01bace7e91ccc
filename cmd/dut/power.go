package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	trace "github.com/jumpstarter-dev/jumpstarter-go/harness/step"
)

// powerAction is one dut power subcommand.
type powerAction struct {
	use, short, long, example string
	run                       func(ctx context.Context, cfg config, d driver.Device, o powerOpts) (string, error)
	// ephemeral says what becomes of the action on a driver.Ephemeral
	// device once dut exits (see app.noteEphemeral).
	ephemeral func(d driver.Device) string
}

// powerActionNames are the names of the dut power subcommands.
func powerActionNames() []string {
	var names []string
	for _, act := range powerActions() {
		names = append(names, act.use)
	}
	return names
}

// staysOn is what becomes of powering an ephemeral device on.
func staysOn(d driver.Device) string {
	return "it is powered off again when this dut command exits; to see it run, boot and watch it with dut console " + d.Name() + " --power-on, or use it from a test (harness.Acquire)"
}

// staysOff is what becomes of powering an ephemeral device off.
func staysOff(driver.Device) string {
	return "every dut command finds it powered off: it was off already"
}

// powerOpts are the flags of the power subcommands.
type powerOpts struct {
	keepStorage bool
	offTime     time.Duration
}

func (a *app) powerCmd() *cobra.Command {
	actions := powerActionNames()
	cmd := &cobra.Command{
		Use:   "power ACTION DEV",
		Short: "Switch a DUT's power: on, off, force-on, force-off, rescue, cycle",
		Long: `Switch a DUT's power. ACTION is on, off, force-on, force-off, rescue or
cycle: on and off run the board's power sequences (a DUTlink's
power_on/power_off config); force-on and force-off switch the power
directly; rescue powers on into the recovery mode (power_rescue); cycle is
off, a pause, and on.

on and cycle first connect the storage to the DUT, as a test's PowerOn does,
so that a freshly flashed DUT boots; --keep-storage leaves the mux alone.

A device of the sim or qemu driver is powered off again when the dut
command ends (dut prints a note saying so); boot and watch one with
dut console DEV --power-on.`,
		Example: `  dut power on bench-1
  dut power off 1a2b3c4d
  dut power cycle bench-1 --off-time 5s`,
		// Only what no subcommand matched arrives here: a missing, an
		// unknown or a misplaced action.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmdLinef("dut power: missing ACTION (%s) and DEV", argHelp["ACTION"])
			}
			for _, arg := range args[1:] {
				if slices.Contains(actions, arg) {
					return cmdLinef("dut power: wrong order: the action comes first: dut power %s %s", arg, args[0])
				}
			}
			return cmdLinef("unknown power action %q: use %s%s", args[0], argHelp["ACTION"], didYouMean(args[0], actions))
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmdLinef("dut power: missing ACTION (%s) and DEV", argHelp["ACTION"])
		},
	}
	for _, act := range powerActions() {
		var o powerOpts
		sub := &cobra.Command{
			Use:     act.use + " DEV",
			Short:   act.short,
			Long:    act.long,
			Example: act.example,
			Args:    positional([]string{"DEV"}),
			RunE: func(cmd *cobra.Command, args []string) error {
				if o.offTime < 0 {
					return cmdLinef("--off-time %s is negative: give how long the DUT stays off, such as 2s", o.offTime)
				}
				return a.withDevice(cmd, args[0], func(ctx context.Context, cfg config, d driver.Device) error {
					msg, err := act.run(ctx, cfg, d, o)
					if err != nil {
						return err
					}
					fmt.Fprintf(a.stdout, "%s: %s\n", d.Name(), msg)
					a.noteEphemeral(d, act.ephemeral(d))
					return nil
				})
			},
		}
		if act.use == "on" || act.use == "cycle" {
			sub.Flags().BoolVar(&o.keepStorage, "keep-storage", false, "do not connect the storage to the DUT first")
		}
		if act.use == "cycle" {
			sub.Flags().DurationVar(&o.offTime, "off-time", 2*time.Second, "how long the DUT stays off")
		}
		cmd.AddCommand(sub)
	}
	return cmd
}

func powerActions() []powerAction {
	return []powerAction{
		{
			use: "on", ephemeral: staysOn, short: "Connect the storage to the DUT and power it on",
			long: `Connect the storage to the DUT (unless --keep-storage) and power it on
through the board's power-on sequence. The DUT stays on when dut exits.`,
			example: "  dut power on bench-1\n  dut power on bench-1 --keep-storage",
			run: func(ctx context.Context, cfg config, d driver.Device, o powerOpts) (string, error) {
				pw, err := driver.As[driver.Power](d)
				if err != nil {
					return "", err
				}
				if err := storageToDUT(ctx, cfg, d, o); err != nil {
					return "", err
				}
				if err := step(ctx, cfg, "power on", pw.PowerOn); err != nil {
					return "", err
				}
				return "powered on", nil
			},
		},
		{
			use: "off", ephemeral: staysOff, short: "Power the DUT off through the board's power-off sequence",
			long: `Power the DUT off through the board's power-off sequence. When that fails,
dut power force-off cuts the power directly.`,
			example: "  dut power off bench-1",
			run: func(ctx context.Context, cfg config, d driver.Device, _ powerOpts) (string, error) {
				pw, err := driver.As[driver.Power](d)
				if err != nil {
					return "", err
				}
				if err := step(ctx, cfg, "power off", pw.PowerOff); err != nil {
					if _, ok := driver.Has[driver.ForcePower](d); ok {
						return "", fmt.Errorf("%w; to cut the power anyway: dut power force-off %s", err, d.Name())
					}
					return "", err
				}
				return "powered off", nil
			},
		},
		{
			use: "force-on", ephemeral: staysOn, short: "Apply power directly, without the power-on sequence",
			long:    `Apply power directly, without the board's power-on sequence.`,
			example: "  dut power force-on bench-1",
			run: func(ctx context.Context, cfg config, d driver.Device, _ powerOpts) (string, error) {
				fp, err := driver.As[driver.ForcePower](d)
				if err != nil {
					return "", err
				}
				if err := step(ctx, cfg, "force on", fp.ForceOn); err != nil {
					return "", err
				}
				return "forced on", nil
			},
		},
		{
			use: "force-off", ephemeral: staysOff, short: "Cut the power directly, without the power-off sequence",
			long:    `Cut the power directly, without the board's power-off sequence.`,
			example: "  dut power force-off bench-1",
			run: func(ctx context.Context, cfg config, d driver.Device, _ powerOpts) (string, error) {
				fp, err := driver.As[driver.ForcePower](d)
				if err != nil {
					return "", err
				}
				if err := step(ctx, cfg, "force off", fp.ForceOff); err != nil {
					return "", err
				}
				return "forced off", nil
			},
		},
		{
			use: "rescue", ephemeral: staysOn, short: "Power the DUT on into its rescue (recovery) mode",
			long: `Power the DUT on into its rescue (recovery, flashing) mode: a DUTlink runs
its power_rescue sequence; the simulated DUT stops at its rescue> prompt.`,
			example: "  dut power rescue bench-1 && dut console bench-1",
			run: func(ctx context.Context, cfg config, d driver.Device, _ powerOpts) (string, error) {
				r, err := driver.As[driver.Rescuer](d)
				if err != nil {
					return "", err
				}
				if err := step(ctx, cfg, "rescue", r.Rescue); err != nil {
					return "", err
				}
				return "powered on in rescue mode", nil
			},
		},
		{
			use: "cycle", ephemeral: staysOn, short: "Power the DUT off, wait --off-time, connect the storage and power it on",
			long: `Power the DUT off, wait --off-time (default 2s) so that it really loses
power, connect the storage to the DUT (unless --keep-storage) and power it on.`,
			example: "  dut power cycle bench-1\n  dut power cycle bench-1 --off-time 10s",
			run: func(ctx context.Context, cfg config, d driver.Device, o powerOpts) (string, error) {
				pw, err := driver.As[driver.Power](d)
				if err != nil {
					return "", err
				}
				if err := step(ctx, cfg, "power off", pw.PowerOff); err != nil {
					return "", err
				}
				t := time.NewTimer(o.offTime)
				defer t.Stop()
				select {
				case <-t.C:
				case <-ctx.Done():
					return "", fmt.Errorf("power cycle of %s interrupted while off (it stays off): %w", d.Name(), ctx.Err())
				}
				if err := storageToDUT(ctx, cfg, d, o); err != nil {
					return "", err
				}
				if err := step(ctx, cfg, "power on", pw.PowerOn); err != nil {
					return "", err
				}
				return fmt.Sprintf("power cycled (off for %s)", o.offTime), nil
			},
		},
	}
}

// storageToDUT connects a storage mux, if the device has one, to the DUT.
func storageToDUT(ctx context.Context, cfg config, d driver.Device, o powerOpts) error {
	mux, ok := driver.Has[driver.StorageMux](d)
	if !ok || o.keepStorage {
		return nil
	}
	return step(ctx, cfg, "storage dut", func(ctx context.Context) error { return mux.SetStorage(ctx, driver.StorageDUT) })
}

// step runs one hardware step bounded by the step timeout, traced (with
// --verbose, logged on stderr at its start and end), and names it in its
// error.
func step(ctx context.Context, cfg config, name string, fn func(context.Context) error) error {
	sctx, cancel := stepContext(ctx, cfg)
	defer cancel()
	if err := trace.Do(sctx, name, fn); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func (a *app) resetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reset DEV",
		Short: "Pulse the DUT's reset line",
		Long: `Pulse the DUT's reset line: a DUTlink pulls /RESET low for a second and
releases it; the simulated DUT and a QEMU VM reboot, when powered on. Every
dut command finds a sim or qemu device powered off (dut prints a note saying
so): reset those from a test.`,
		Example: "  dut reset bench-1",
		Args:    positional([]string{"DEV"}),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withDevice(cmd, args[0], func(ctx context.Context, cfg config, d driver.Device) error {
				r, err := driver.As[driver.Resetter](d)
				if err != nil {
					return err
				}
				a.noteEphemeral(d, "every dut command finds it powered off (what an earlier one powered on ended with it): there is nothing running to reset; to reset it while it runs, use it from a test (harness.Acquire)")
				if err := step(ctx, cfg, "reset", r.Reset); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "%s: reset\n", d.Name())
				return nil
			})
		},
	}
}

// parseLevel reads a pin level: low, high or z, and their usual spellings.
func parseLevel(s string) (driver.PinLevel, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "low", "l", "0":
		return driver.PinLow, nil
	case "high", "h", "1":
		return driver.PinHigh, nil
	case "z", "float", "floating", "hi-z", "hiz":
		return driver.PinFloating, nil
	}
	return "", cmdLinef("unknown pin level %q: use low, high or z (floating)", s)
}

func (a *app) pinCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "pin DEV PIN LEVEL",
		Short: "Drive one of the DUT's control pins low, high or floating",
		Long: `Drive a control pin (boot-mode strap, button) to LEVEL: low, high or z
(floating, released). The pins are the driver's: reset, a, b, c and d on a
DUTlink and on the simulated DUT. A DUTlink's pin keeps its level when dut
exits; a simulated DUT's is released again (dut prints a note saying so).`,
		Example: `  dut pin bench-1 b low     # hold the recovery strap
  dut pin bench-1 b z       # release it
  dut pin bench-1 reset low`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := checkPositional(cmd, args, []string{"DEV", "PIN", "LEVEL"}); err != nil {
				return err
			}
			if _, err := parseLevel(args[2]); err != nil {
				for _, arg := range args[:2] {
					if _, lerr := parseLevel(arg); lerr == nil {
						return cmdLinef("dut pin: wrong order: the level (%s) comes last: dut pin DEV PIN LEVEL", arg)
					}
				}
				return err
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			level, err := parseLevel(args[2])
			if err != nil {
				return err
			}
			pin := strings.ToLower(args[1])
			return a.withDevice(cmd, args[0], func(ctx context.Context, cfg config, d driver.Device) error {
				p, err := driver.As[driver.Pins](d)
				if err != nil {
					return err
				}
				if names := p.PinNames(); !slices.Contains(names, pin) {
					return cmdLinef("%s has no pin %q; its pins are %s", d.Name(), args[1], strings.Join(names, ", "))
				}
				if err := step(ctx, cfg, "set pin "+pin, func(ctx context.Context) error { return p.SetPin(ctx, pin, level) }); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "%s: pin %s %s\n", d.Name(), pin, level)
				a.noteEphemeral(d, "the next dut command finds the pin released again")
				return nil
			})
		},
	}
}

func (a *app) storageCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "storage DEV MODE",
		Short: "Switch the DUT's storage mux: off, host or dut",
		Long: `Switch the DUT's storage multiplexer to MODE: off, host or dut. host
connects the storage to this machine and prints the block device (or, for
virtual DUTs, the file) that holds it; dut connects it to the DUT; off
disconnects it from both. Power the DUT off before taking its storage away
from it.

The mux of a sim or qemu device is back at off for the next dut command (dut
prints a note saying so); its disk file keeps what is written to it.`,
		Example: `  dut storage bench-1 host   # prints e.g. /dev/sdb
  dut storage bench-1 dut
  dut storage bench-1 off`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := checkPositional(cmd, args, []string{"DEV", "MODE"}); err != nil {
				return err
			}
			if _, err := driver.ParseStorageMode(args[1]); err != nil {
				if _, merr := driver.ParseStorageMode(args[0]); merr == nil {
					return cmdLinef("dut storage: wrong order: DEV comes first: dut storage %s %s", args[1], args[0])
				}
				return usageError{err: err, cmdLine: true}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			mode, err := driver.ParseStorageMode(args[1])
			if err != nil {
				return usageError{err: err, cmdLine: true}
			}
			return a.withDevice(cmd, args[0], func(ctx context.Context, cfg config, d driver.Device) error {
				mux, err := driver.As[driver.StorageMux](d)
				if err != nil {
					return err
				}
				if err := step(ctx, cfg, "storage "+string(mode), func(ctx context.Context) error { return mux.SetStorage(ctx, mode) }); err != nil {
					return err
				}
				const then = "the next dut command finds the mux at off again (what is written to the disk file stays)"
				if mode != driver.StorageHost {
					fmt.Fprintf(a.stdout, "%s: storage %s\n", d.Name(), mode)
					a.noteEphemeral(d, then)
					return nil
				}
				var target string
				if err := step(ctx, cfg, "find block target", func(ctx context.Context) (err error) {
					target, err = mux.BlockTarget(ctx)
					return err
				}); err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, target)
				a.noteEphemeral(d, then)
				return nil
			})
		},
	}
}
