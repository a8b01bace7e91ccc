package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

func (a *app) configCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "config DEV get [KEY] | DEV set KEY VALUE",
		Short: "Read or change the configuration a board stores about itself",
		Long: `Read or change what a board stores about itself. get prints every key as
"key: value", or with KEY only that value; set stores one value, checked by
the driver first (its complaint is printed as it is).

DUTlink keys: name, tags, usb_console, power_on, power_off, power_rescue,
json (serial and firmware are read-only), all stored on the board, and
storage_filter, which this host keeps for the board (DUTLINK_CONFIG_DIR): a
substring of the board's storage stick's /dev/disk/by-id name, best the
stick's serial, which a board plugged straight into a root port needs so
that its disk is told from every other disk. A new name or tags show from
the next discovery on. The simulated DUT has name and tags.`,
		Example: `  dut config bench-1 get
  dut config bench-1 get power_on
  dut config 1a2b3c4d set name bench-1
  dut config bench-1 set tags orin,arm64
  dut config bench-1 set power_on p1,bL,w5,bZ
  dut config bench-1 set storage_filter 4C530001231119116263`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmdLinef("dut config: missing DEV (%s) and the action: get [KEY] or set KEY VALUE", argHelp["DEV"])
			}
			if act := args[0]; act == "get" || act == "set" {
				right := "dut config DEV " + act
				if len(args) > 1 {
					right = strings.Join(append([]string{"dut config", args[1], act}, args[2:]...), " ")
				}
				return cmdLinef("dut config: wrong order: DEV comes first: %s", right)
			}
			if len(args) == 1 {
				return cmdLinef("dut config: missing the action after %s: get [KEY] or set KEY VALUE", args[0])
			}
			switch args[1] {
			case "get":
				return checkPositional(cmd, args, []string{"DEV", "get"}, "KEY")
			case "set":
				return checkPositional(cmd, args, []string{"DEV", "set", "KEY", "VALUE"})
			}
			return cmdLinef("unknown config action %q: use get [KEY] or set KEY VALUE%s", args[1], didYouMean(args[1], []string{"get", "set"}))
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withDevice(cmd, args[0], func(ctx context.Context, cfg config, d driver.Device) error {
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
						return refusedKey(ctx, cfg, c, d, key, err)
					}
					fmt.Fprintf(a.stdout, "%s: %s set to %q\n", d.Name(), key, value)
					a.noteEphemeral(d, "the new value is forgotten when this dut command exits: the next one shows the old value")
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
						return cmdLinef("%s has no config key %q; its keys are %s", d.Name(), args[2], strings.Join(keys, ", "))
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
		Args: positional([]string{"DEV"}),
		RunE: func(cmd *cobra.Command, args []string) error {
			if watch < 0 {
				return cmdLinef("--watch %s is negative: give how often to read, such as 1s", watch)
			}
			if count < 0 {
				return cmdLinef("--count %d is negative: give how many readings to take (0: until Ctrl-C)", count)
			}
			return a.withDevice(cmd, args[0], func(ctx context.Context, cfg config, d driver.Device) error {
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

// readOnlyKeys are config keys that are the device's identity, not its
// configuration: every driver refuses to set them.
var readOnlyKeys = []string{"serial", "firmware"}

// refusedKey classifies a SetConfig failure: a key the device does not
// have, or one that is read-only, is the user's mistake (exit code 2);
// anything else is the driver's error as it is.
func refusedKey(ctx context.Context, cfg config, c driver.Configurer, d driver.Device, key string, err error) error {
	if ctx.Err() != nil {
		return err
	}
	if slices.Contains(readOnlyKeys, key) {
		return usageError{err: err}
	}
	var m map[string]string
	if gerr := step(ctx, cfg, "get config", func(ctx context.Context) (err error) {
		m, err = c.Config(ctx)
		return err
	}); gerr != nil {
		return err // the device failed: say what set config said
	}
	if _, ok := m[key]; ok {
		return err
	}
	keys := slices.Sorted(maps.Keys(m))
	if strings.Contains(err.Error(), strconv.Quote(key)) {
		// The driver named the key already, and knows which it takes.
		return usageError{err: err, cmdLine: true}
	}
	return usageError{err: fmt.Errorf("%s has no config key %q; its keys are %s: %w", d.Name(), key, strings.Join(keys, ", "), err), cmdLine: true}
}
