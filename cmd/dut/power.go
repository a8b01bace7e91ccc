package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

// powerAction is one dut power subcommand.
type powerAction struct {
	use, short, long, example string
	run                       func(ctx context.Context, cfg harness.Config, d driver.Device, o powerOpts) (string, error)
}

// powerOpts are the flags of the power subcommands.
type powerOpts struct {
	keepStorage bool
	offTime     time.Duration
}

func (a *app) powerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "power",
		Short: "Switch a DUT's power: on, off, force-on, force-off, rescue, cycle",
		Long: `Switch a DUT's power. on and off run the board's power sequences (a
DUTlink's power_on/power_off config); force-on and force-off switch the power
directly; rescue powers on into the recovery mode (power_rescue); cycle is
off, a pause, and on.

on and cycle first connect the storage to the DUT, as a test's PowerOn does,
so that a freshly flashed DUT boots; --keep-storage leaves the mux alone.`,
		Example: `  dut power on bench-1
  dut power off 1a2b3c4d
  dut power cycle bench-1 --off-time 5s`,
		Args: exactArgs(0, "a subcommand (on, off, force-on, force-off, rescue, cycle)"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageError{err: fmt.Errorf("dut power needs a subcommand: on, off, force-on, force-off, rescue or cycle"), cmdLine: true}
		},
	}
	for _, act := range powerActions() {
		var o powerOpts
		sub := &cobra.Command{
			Use:     act.use + " DEV",
			Short:   act.short,
			Long:    act.long,
			Example: act.example,
			Args:    exactArgs(1, "DEV (a device name or serial)"),
			RunE: func(cmd *cobra.Command, args []string) error {
				return a.withDevice(cmd, args[0], func(ctx context.Context, cfg harness.Config, d driver.Device) error {
					msg, err := act.run(ctx, cfg, d, o)
					if err != nil {
						return err
					}
					fmt.Fprintf(a.stdout, "%s: %s\n", d.Name(), msg)
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
			use: "on", short: "Connect the storage to the DUT and power it on",
			long: `Connect the storage to the DUT (unless --keep-storage) and power it on
through the board's power-on sequence. The DUT stays on when dut exits.`,
			example: "  dut power on bench-1\n  dut power on bench-1 --keep-storage",
			run: func(ctx context.Context, cfg harness.Config, d driver.Device, o powerOpts) (string, error) {
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
			use: "off", short: "Power the DUT off through the board's power-off sequence",
			long: `Power the DUT off through the board's power-off sequence. When that fails,
dut power force-off cuts the power directly.`,
			example: "  dut power off bench-1",
			run: func(ctx context.Context, cfg harness.Config, d driver.Device, _ powerOpts) (string, error) {
				pw, err := driver.As[driver.Power](d)
				if err != nil {
					return "", err
				}
				if err := step(ctx, cfg, "power off", pw.PowerOff); err != nil {
					if _, ok := d.(driver.ForcePower); ok {
						return "", fmt.Errorf("%w; to cut the power anyway: dut power force-off %s", err, d.Name())
					}
					return "", err
				}
				return "powered off", nil
			},
		},
		{
			use: "force-on", short: "Apply power directly, without the power-on sequence",
			long:    `Apply power directly, without the board's power-on sequence.`,
			example: "  dut power force-on bench-1",
			run: func(ctx context.Context, cfg harness.Config, d driver.Device, _ powerOpts) (string, error) {
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
			use: "force-off", short: "Cut the power directly, without the power-off sequence",
			long:    `Cut the power directly, without the board's power-off sequence.`,
			example: "  dut power force-off bench-1",
			run: func(ctx context.Context, cfg harness.Config, d driver.Device, _ powerOpts) (string, error) {
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
			use: "rescue", short: "Power the DUT on into its rescue (recovery) mode",
			long: `Power the DUT on into its rescue (recovery, flashing) mode: a DUTlink runs
its power_rescue sequence; the simulated DUT stops at its rescue> prompt.`,
			example: "  dut power rescue bench-1 && dut console bench-1",
			run: func(ctx context.Context, cfg harness.Config, d driver.Device, _ powerOpts) (string, error) {
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
			use: "cycle", short: "Power the DUT off, wait --off-time, connect the storage and power it on",
			long: `Power the DUT off, wait --off-time (default 2s) so that it really loses
power, connect the storage to the DUT (unless --keep-storage) and power it on.`,
			example: "  dut power cycle bench-1\n  dut power cycle bench-1 --off-time 10s",
			run: func(ctx context.Context, cfg harness.Config, d driver.Device, o powerOpts) (string, error) {
				pw, err := driver.As[driver.Power](d)
				if err != nil {
					return "", err
				}
				if o.offTime < 0 {
					return "", usagef("--off-time %s is negative", o.offTime)
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
func storageToDUT(ctx context.Context, cfg harness.Config, d driver.Device, o powerOpts) error {
	mux, ok := d.(driver.StorageMux)
	if !ok || o.keepStorage {
		return nil
	}
	return step(ctx, cfg, "storage dut", func(ctx context.Context) error { return mux.SetStorage(ctx, driver.StorageDUT) })
}

// step runs one hardware step bounded by the step timeout and names it in
// its error.
func step(ctx context.Context, cfg harness.Config, name string, fn func(context.Context) error) error {
	sctx, cancel := stepContext(ctx, cfg)
	defer cancel()
	if err := fn(sctx); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func (a *app) resetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reset DEV",
		Short: "Pulse the DUT's reset line",
		Long: `Pulse the DUT's reset line: a DUTlink pulls /RESET low for a second and
releases it; the simulated DUT reboots (it must be powered on).`,
		Example: "  dut reset bench-1",
		Args:    exactArgs(1, "DEV (a device name or serial)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withDevice(cmd, args[0], func(ctx context.Context, cfg harness.Config, d driver.Device) error {
				r, err := driver.As[driver.Resetter](d)
				if err != nil {
					return err
				}
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
	return "", usagef("unknown pin level %q: use low, high or z (floating)", s)
}

func (a *app) pinCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "pin DEV PIN low|high|z",
		Short: "Drive one of the DUT's control pins low, high or floating",
		Long: `Drive a control pin (boot-mode strap, button) low, high or z (floating,
released). The pins are the driver's: reset, a, b, c and d on a DUTlink and
on the simulated DUT. A pin keeps its level when dut exits.`,
		Example: `  dut pin bench-1 b low     # hold the recovery strap
  dut pin bench-1 b z       # release it
  dut pin bench-1 reset low`,
		Args: exactArgs(3, "DEV, PIN and a level (low, high or z)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			level, err := parseLevel(args[2])
			if err != nil {
				return err
			}
			pin := strings.ToLower(args[1])
			return a.withDevice(cmd, args[0], func(ctx context.Context, cfg harness.Config, d driver.Device) error {
				p, err := driver.As[driver.Pins](d)
				if err != nil {
					return err
				}
				if names := p.PinNames(); !slices.Contains(names, pin) {
					return usagef("%s has no pin %q; its pins are %s", d.Name(), args[1], strings.Join(names, ", "))
				}
				if err := step(ctx, cfg, "set pin "+pin, func(ctx context.Context) error { return p.SetPin(ctx, pin, level) }); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "%s: pin %s %s\n", d.Name(), pin, level)
				return nil
			})
		},
	}
}

func (a *app) storageCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "storage DEV off|host|dut",
		Short: "Switch the DUT's storage mux: off, host or dut",
		Long: `Switch the DUT's storage multiplexer. host connects the storage to this
machine and prints the block device (or, for virtual DUTs, the file) that
holds it; dut connects it to the DUT; off disconnects it from both. Power the
DUT off before taking its storage away from it.`,
		Example: `  dut storage bench-1 host   # prints e.g. /dev/sdb
  dut storage bench-1 dut
  dut storage bench-1 off`,
		Args: exactArgs(2, "DEV and a position (off, host or dut)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			mode, err := driver.ParseStorageMode(args[1])
			if err != nil {
				return usageError{err: err}
			}
			return a.withDevice(cmd, args[0], func(ctx context.Context, cfg harness.Config, d driver.Device) error {
				mux, err := driver.As[driver.StorageMux](d)
				if err != nil {
					return err
				}
				if err := step(ctx, cfg, "storage "+string(mode), func(ctx context.Context) error { return mux.SetStorage(ctx, mode) }); err != nil {
					return err
				}
				if mode != driver.StorageHost {
					fmt.Fprintf(a.stdout, "%s: storage %s\n", d.Name(), mode)
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
				return nil
			})
		},
	}
}
