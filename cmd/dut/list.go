package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/remote"
)

// problem is something discovery found but cannot use: a board in DFU mode,
// a board whose tty another process holds, a driver that cannot run here.
type problem struct {
	Driver string `json:"driver"`
	Where  string `json:"where"`
	Reason string `json:"reason"`
}

// discover asks the drivers cfg selects (all when none) for their devices,
// each bounded by the step timeout. A driver that fails is in Found.Failed,
// not an error: it must not hide the others. The error is only a bad
// request (an unknown driver) or ctx ending.
func discover(ctx context.Context, cfg config) (lease.Found, error) {
	r := cfg.request(nil)
	r.Driver = "" // a driver chosen by name fails alone: list it as a problem
	if cfg.Driver != "" {
		d, err := cfg.lookup(cfg.Driver)
		if err != nil {
			return lease.Found{}, fmt.Errorf("%w: %w", lease.ErrBadRequest, err)
		}
		r.Drivers = []driver.Driver{d}
	}
	dctx, cancel := stepContext(ctx, cfg)
	defer cancel()
	found, err := lease.Discover(dctx, r)
	if err != nil && ctx.Err() != nil {
		return found, fmt.Errorf("discovering devices: %w", ctx.Err())
	}
	return found, err
}

// listedDevice is one row of dut list, and its JSON form.
type listedDevice struct {
	Driver    string   `json:"driver"`
	Name      string   `json:"name"`
	Serial    string   `json:"serial,omitempty"`
	Tags      []string `json:"tags"`
	Firmware  string   `json:"firmware,omitempty"`
	Transport string   `json:"transport,omitempty"`
	// Ephemeral, when set, says why the device's state (power, storage,
	// pins, config) ends with each dut command (driver.Ephemeral).
	Ephemeral string `json:"ephemeral,omitempty"`
	// Warning says what is wrong with a usable device and what to do,
	// such as a DUTlink config that overflows its shell's reply.
	Warning string `json:"warning,omitempty"`
	// Exporter names the exporter serving a remote device.
	Exporter string   `json:"exporter,omitempty"`
	Lock     lockInfo `json:"lock"`
}

// lockInfo says whether a device's lock is held and by whom.
type lockInfo struct {
	Held   bool          `json:"held"`
	Holder *lease.Holder `json:"holder,omitempty"`
	// Error is set when the lock file could not be read.
	Error string `json:"error,omitempty"`
	// Remote describes the holder of a remote device's lease on its
	// exporter.
	Remote string `json:"remote,omitempty"`
}

func (l lockInfo) String() string {
	switch {
	case l.Error != "":
		return "unknown: " + l.Error
	case l.Remote != "":
		return "held by " + l.Remote
	case !l.Held:
		return "free"
	case l.Holder == nil:
		return "held (holder not recorded yet)"
	}
	return "held by " + describeHolder(*l.Holder)
}

// listing is the JSON output of dut list.
type listing struct {
	Devices  []listedDevice `json:"devices"`
	Problems []problem      `json:"problems"`
	// Hidden counts devices found but left out by the selection.
	Hidden int `json:"hidden"`
}

func (a *app) listCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the devices of every driver and who holds each",
		Long: `List the devices every driver finds: driver, name, serial, tags, firmware
and control transport where known (DUTlink boards), and the lock: "free" or
who holds it (a test or a dut command, its pid and host, and since when).
Boards a driver found but cannot use (DFU mode, tty held by another process,
unreadable config) and drivers that cannot run here are listed with the
reason. --driver, --tags and DUT_NAME narrow the list. A note under the
table names the devices whose state ends with each dut command (sim, qemu);
--json gives the reason as "ephemeral".

list never locks a device and never switches anything.`,
		Example: `  dut list
  dut list --tags orin
  dut list --driver dutlink --json | jq '.devices[] | select(.lock.held | not) | .name'`,
		Args: positional(nil),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.config(cmd)
			if err != nil {
				return err
			}
			l, err := a.list(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(l)
			}
			return writeListing(a.stdout, l, cfg)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: {devices: [...], problems: [...], hidden: N}")
	return cmd
}

// list discovers the devices cfg selects and reads their locks.
func (a *app) list(ctx context.Context, cfg config) (listing, error) {
	found, err := discover(ctx, cfg)
	if err != nil {
		return listing{}, err
	}
	l := listing{Devices: []listedDevice{}, Problems: []problem{}}
	for _, de := range found.Failed {
		l.Problems = append(l.Problems, problem{Driver: de.Driver, Where: "driver", Reason: de.Err.Error()})
	}
	for _, d := range found.Devices {
		if !driver.Matches(d, cfg.Name, cfg.Tags) {
			l.Hidden++
			continue
		}
		if d.Unusable {
			l.Problems = append(l.Problems, problem{Driver: d.Driver, Where: d.Name, Reason: strings.Join(d.Problems, "; ")})
			continue
		}
		row := listedDevice{Driver: d.Driver, Name: d.Name, Serial: d.Serial, Tags: d.Tags, Ephemeral: d.Ephemeral,
			Firmware: d.Fact("firmware"), Transport: d.Fact("transport"), Warning: strings.Join(d.Problems, "; "),
			Exporter: d.Fact(remote.FactExporter)}
		if row.Exporter != "" {
			row.Transport = strings.TrimSpace("via " + row.Exporter + " " + row.Transport)
		}
		if row.Tags == nil {
			row.Tags = []string{}
		}
		h, held, err := lease.HolderOf(cfg.LockDir, d)
		switch {
		case err != nil:
			row.Lock = lockInfo{Error: err.Error()}
		case d.Fact(remote.FactHolder) != "":
			row.Lock = lockInfo{Held: true, Remote: d.Fact(remote.FactHolder) + " on " + row.Exporter}
		case held && h != (lease.Holder{}):
			row.Lock = lockInfo{Held: true, Holder: &h}
		default:
			row.Lock = lockInfo{Held: held}
		}
		l.Devices = append(l.Devices, row)
	}
	return l, nil
}

// writeListing prints l as a table, then the problems.
func writeListing(w io.Writer, l listing, cfg config) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DRIVER\tNAME\tSERIAL\tTAGS\tFIRMWARE\tTRANSPORT\tLOCK")
	for _, d := range l.Devices {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Driver, d.Name, dash(d.Serial),
			dash(strings.Join(d.Tags, ",")), dash(d.Firmware), dash(d.Transport), d.Lock)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("writing the list: %w", err)
	}
	if len(l.Devices) == 0 {
		fmt.Fprintln(w, "(no devices)")
	}
	if l.Hidden > 0 {
		var by []string
		if cfg.Name != "" {
			by = append(by, envName+"="+cfg.Name)
		}
		if len(cfg.Tags) > 0 {
			by = append(by, "tags "+strings.Join(cfg.Tags, ","))
		}
		fmt.Fprintf(w, "(%d more device(s) not shown: selection %s)\n", l.Hidden, strings.Join(by, ", "))
	}
	for _, d := range l.Devices {
		if d.Warning != "" {
			fmt.Fprintf(w, "\nWarning: %s %s: %s\n", d.Driver, d.Name, d.Warning)
		}
	}
	if note := ephemeralNote(l.Devices); note != "" {
		fmt.Fprintf(w, "\nNote: %s\n", note)
	}
	if len(l.Problems) > 0 {
		fmt.Fprintln(w, "\nNot usable:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, p := range l.Problems {
			fmt.Fprintf(tw, "  %s\t%s:\t%s\n", p.Driver, p.Where, p.Reason)
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("writing the list: %w", err)
		}
	}
	return nil
}

// ephemeralNote is the footnote of dut list about the devices whose state
// ends with each dut command, or "" when there are none.
func ephemeralNote(devs []listedDevice) string {
	byDriver := map[string][]string{}
	var drivers []string
	for _, d := range devs {
		if d.Ephemeral == "" {
			continue
		}
		if _, seen := byDriver[d.Driver]; !seen {
			drivers = append(drivers, d.Driver)
		}
		byDriver[d.Driver] = append(byDriver[d.Driver], d.Name)
	}
	if len(drivers) == 0 {
		return ""
	}
	var which []string
	count := 0
	for _, dr := range drivers {
		names := byDriver[dr]
		count += len(names)
		if len(names) > 3 {
			which = append(which, fmt.Sprintf("the %d %s devices", len(names), dr))
		} else {
			which = append(which, names...)
		}
	}
	who := which[0]
	if n := len(which); n > 1 {
		who = strings.Join(which[:n-1], ", ") + " and " + which[n-1]
	}
	text := who + " live only in the dut process that uses them: their power, storage mux, pins and config end with each dut command (only their disk files stay), and dut prints a note whenever a command changes them. Use them from a test (harness.Acquire), or boot and watch one with " + glue("dut console DEV --power-on") + "."
	if count == 1 {
		text = who + " lives only in the dut process that uses it: its power, storage mux, pins and config end with each dut command (only its disk file stays), and dut prints a note whenever a command changes it. Use it from a test (harness.Acquire), or boot and watch it with " + glue("dut console "+who+" --power-on") + "."
	}
	return wrap(text, 78, len("Note: "))
}

// nbsp joins words that wrap keeps on one line.
const nbsp = "\u00a0"

// glue keeps the words of s on one line when wrapped.
func glue(s string) string { return strings.ReplaceAll(s, " ", nbsp) }

// wrap breaks text into lines of at most width columns at spaces (not at
// glued ones); the first line is shorter by first columns.
func wrap(text string, width, first int) string {
	var b strings.Builder
	col := first
	// Split at ASCII spaces only: strings.Fields splits at U+00A0 too.
	for i, w := range strings.Split(text, " ") {
		switch {
		case i == 0:
		case col+1+len(w) > width:
			b.WriteByte('\n')
			col = 0
		default:
			b.WriteByte(' ')
			col++
		}
		b.WriteString(strings.ReplaceAll(w, nbsp, " "))
		col += utf8.RuneCountInString(w)
	}
	return b.String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
