package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

func (a *app) configCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "config DEV (get [KEY] | set KEY VALUE)",
		Short: "Read or change the configuration a board stores about itself",
		Long: `Read or change what a board stores about itself. get prints every key as
"key: value", or with KEY only that value; set stores one value, checked by
the driver first (its complaint is printed as it is).

DUTlink keys: name, tags, usb_console, power_on, power_off, power_rescue,
json (serial and firmware are read-only). A new name or tags show from the
next discovery on. The simulated DUT has name and tags.`,
		Example: `  dut config bench-1 get
  dut config bench-1 get power_on
  dut config 1a2b3c4d set name bench-1
  dut config bench-1 set tags orin,arm64
  dut config bench-1 set power_on p1,bL,w5,bZ`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) >= 2 {
				switch args[1] {
				case "get":
					return rangeArgs(2, 3, "DEV get [KEY]")(cmd, args)
				case "set":
					return exactArgs(4, "DEV set KEY VALUE")(cmd, args)
				}
				return usageError{err: fmt.Errorf("dut config: unknown action %q: use get or set", args[1]), cmdLine: true}
			}
			return usageError{err: fmt.Errorf("dut config takes DEV get [KEY] or DEV set KEY VALUE"), cmdLine: true}
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withDevice(cmd, args[0], func(ctx context.Context, cfg harness.Config, d driver.Device) error {
				c, err := driver.As[driver.Configurer](d)
				if err != nil {
					return err
				}
				if args[1] == "set" {
					key, value := args[2], args[3]
					sctx, cancel := stepContext(ctx, cfg)
					defer cancel()
					// The driver's own words: it says what is wrong
					// with the value.
					if err := c.SetConfig(sctx, key, value); err != nil {
						return err
					}
					fmt.Fprintf(a.stdout, "%s: %s set to %q\n", d.Name(), key, value)
					return nil
				}
				var m map[string]string
				if err := step(ctx, cfg, "get config", func(ctx context.Context) (err error) {
					m, err = c.Config(ctx)
					return err
				}); err != nil {
					return err
				}
				keys := slices.Sorted(maps.Keys(m))
				if len(args) == 3 {
					v, ok := m[args[2]]
					if !ok {
						return usagef("%s has no config key %q; its keys are %s", d.Name(), args[2], strings.Join(keys, ", "))
					}
					fmt.Fprintln(a.stdout, v)
					return nil
				}
				for _, k := range keys {
					fmt.Fprintf(a.stdout, "%s: %s\n", k, m[k])
				}
				return nil
			})
		},
	}
}

func (a *app) meterCmd() *cobra.Command {
	var watch time.Duration
	var count int
	cmd := &cobra.Command{
		Use:   "meter DEV",
		Short: "Read the DUT's power meter",
		Long: `Read the power the DUT draws: volts, amps and watts (a DUTlink averages over
about 2 s). --watch DURATION reads again every DURATION, one timestamped line
each, until Ctrl-C (or --count readings); the device stays locked meanwhile.`,
		Example: `  dut meter bench-1
  dut meter bench-1 --watch 1s
  dut meter bench-1 --watch 500ms --count 20 > power.log`,
		Args: exactArgs(1, "DEV (a device name or serial)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if watch < 0 || count < 0 {
				return usagef("--watch and --count must not be negative")
			}
			return a.withDevice(cmd, args[0], func(ctx context.Context, cfg harness.Config, d driver.Device) error {
				m, err := driver.As[driver.PowerMeter](d)
				if err != nil {
					return err
				}
				read := func() error {
					var r driver.PowerReading
					if err := step(ctx, cfg, "read power", func(ctx context.Context) (err error) {
						r, err = m.ReadPower(ctx)
						return err
					}); err != nil {
						return err
					}
					prefix := d.Name() + ":"
					if watch > 0 {
						prefix = time.Now().Format("15:04:05.000") + " " + prefix
					}
					fmt.Fprintf(a.stdout, "%s %.2f V  %.3f A  %.2f W\n", prefix, r.Volts, r.Amps, r.Watts)
					return nil
				}
				if watch == 0 {
					return read()
				}
				tick := time.NewTicker(watch)
				defer tick.Stop()
				for n := 1; ; n++ {
					if err := read(); err != nil {
						if ctx.Err() != nil {
							return nil // Ctrl-C is how a watch ends
						}
						return err
					}
					if count > 0 && n >= count {
						return nil
					}
					select {
					case <-tick.C:
					case <-ctx.Done():
						return nil
					}
				}
			})
		},
	}
	cmd.Flags().DurationVar(&watch, "watch", 0, "read again every DURATION until Ctrl-C")
	cmd.Flags().IntVar(&count, "count", 0, "with --watch: stop after this many readings (0: no limit)")
	return cmd
}
