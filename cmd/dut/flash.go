package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
	trace "github.com/jumpstarter-dev/jumpstarter-go/harness/step"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/bytesize"
)

// flashOpts are the flags of dut flash.
type flashOpts struct {
	bmap      string
	noBmap    bool
	skipHoles bool
	noVerify  bool
	json      bool
}

func (a *app) flashCmd() *cobra.Command {
	var o flashOpts
	cmd := &cobra.Command{
		Use:   "flash DEV [IMAGE]",
		Short: "Write an OS image onto the DUT's storage",
		Long: `Write IMAGE (default $DUT_IMAGE) onto the DUT's storage with the harness's
flash engine: raw, gzip, xz, zstd or bzip2 by content, every write read back
and compared unless --no-verify.

What the storage holds afterwards:

  - with a bmap (--bmap FILE, or IMAGE.bmap found beside the image): the
    bmap's mapped ranges, each checked against its checksum; the rest of
    the storage is left as it was;
  - without one: the image byte for byte. The holes of a sparse raw image
    are not read but zeroed on the storage (by the device where it
    guarantees zeros, else by writing them) and checked to read as zeros;
  - --nobmap ignores any bmap, IMAGE.bmap beside the image too, so the
    storage ends byte-identical to the image (as bmaptool copy --nobmap);
  - --skip-holes leaves the storage under the holes of a sparse raw image
    without a bmap as it was, writing only the image's data: faster, but
    whatever was flashed before stays there (an old file system's
    signature in an empty partition). It changes nothing with a bmap, or
    for a compressed image, whose zeros are written.

As in a test's Flash, DUT_BMAP (a bmap's path, or none for --nobmap) and
DUT_FLASH_SKIP_HOLES=1 stand in for the flags not given.

The DUT is powered off first; the storage is switched to this machine for the
write and switched off afterwards, also when the write fails or is
interrupted, so the DUT ends powered off with its storage disconnected (power
it on with dut power on). A progress bar is drawn on a terminal, plain
progress lines otherwise; at the end the report: bytes, bytes written (and
zeroed), what the storage holds, MB/s, verify time and the image's SHA-256.
With --json the report is the JSON of the flash.Report, the shape of a
test's flash.json, also for a failed flash (with its "error"; how far it
got), with the progress and notes on stderr.

On a sim or qemu device the image stays on its disk file, but its power ends
with each dut command (dut prints a note saying so): boot and watch it with
dut console DEV --power-on, or use it from a test.`,
		Example: `  dut flash bench-1 debian-arm64.img.zst
  dut flash bench-1 os.img.xz --bmap os.img.bmap
  dut flash bench-1 os.img --nobmap
  dut flash bench-1 sparse.img --skip-holes
  DUT_IMAGE=os.img dut flash bench-1 --no-verify
  dut flash bench-1 os.img --json | jq .mbps`,
		Args: positional([]string{"DEV"}, "IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			image := os.Getenv(envImage)
			if len(args) == 2 {
				image = args[1]
			}
			if image == "" {
				return cmdLinef("dut flash: missing IMAGE: give IMAGE or set %s", envImage)
			}
			cfg, err := a.config(cmd)
			if err != nil {
				return err
			}
			o := o.withEnv(cmd, cfg)
			if o.noBmap && o.bmap != "" {
				return cmdLinef("dut flash: --nobmap and --bmap %s contradict each other: give one of them", o.bmap)
			}
			// Refuse a bad image or bmap before touching any hardware.
			if _, err := flash.CheckImage(image); err != nil {
				if len(args) == 2 && isFile(args[0]) && !isFile(args[1]) {
					return cmdLinef("dut flash: wrong order: DEV comes first: dut flash %s %s", args[1], args[0])
				}
				return usageError{err: err}
			}
			if o.bmap != "" {
				if _, err := os.Stat(o.bmap); err != nil {
					if !cmd.Flags().Changed("bmap") {
						return usagef("%s: %w", envBmap, err)
					}
					return cmdLinef("--bmap: %w", err)
				}
			}
			return a.withDevice(cmd, args[0], func(ctx context.Context, cfg config, d driver.Device) error {
				rep, err := a.flash(ctx, cfg, d, image, o)
				switch {
				case o.json:
					err = errors.Join(err, writeJSONReport(a.stdout, rep, err))
				case err == nil:
					writeReport(a.stdout, d, rep)
				}
				if err != nil {
					return err
				}
				a.noteEphemeral(d, "the image stays on its disk file, but its power does not outlive a dut command: boot and watch it with dut console "+d.Name()+" --power-on, or use it from a test (harness.Acquire)")
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&o.bmap, "bmap", "", "the bmap file (default $DUT_BMAP, else IMAGE.bmap when it exists)")
	cmd.Flags().BoolVar(&o.noBmap, "nobmap", false, "ignore any bmap (IMAGE.bmap beside the image too): the storage ends byte-identical to the image, as with bmaptool copy --nobmap (default: DUT_BMAP=none)")
	cmd.Flags().BoolVar(&o.skipHoles, "skip-holes", false, "leave the storage under a sparse raw image's holes as it was (no bmap): faster, but old data stays there (default $DUT_FLASH_SKIP_HOLES)")
	cmd.Flags().BoolVar(&o.noVerify, "no-verify", false, "do not read the written ranges back")
	cmd.Flags().BoolVar(&o.json, "json", false, "print the report as JSON, the shape of a test's flash.json (also for a failed flash, with its error)")
	return cmd
}

// isFile reports whether path names an existing regular file.
func isFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// withEnv returns o with the harness's DUT_BMAP and DUT_FLASH_SKIP_HOLES
// (as cfg holds them) standing in for the flags not given, as a test's
// Flash reads them.
func (o flashOpts) withEnv(cmd *cobra.Command, cfg config) flashOpts {
	flags := cmd.Flags()
	if !flags.Changed("bmap") && !flags.Changed("nobmap") {
		switch cfg.Bmap {
		case "":
		case "none":
			o.noBmap = true
		default:
			o.bmap = cfg.Bmap
		}
	}
	if !flags.Changed("skip-holes") {
		o.skipHoles = cfg.SkipHoles
	}
	return o
}

// flash writes image onto d's storage: power off, storage to the host,
// write, storage off (whatever happens). After a failure it makes sure the
// DUT is off.
func (a *app) flash(ctx context.Context, cfg config, d driver.Device, image string, o flashOpts) (rep flash.Report, err error) {
	if f, ok := d.(flash.Flasher); ok {
		return a.flashBy(ctx, cfg, d, f, image, o)
	}
	mux, err := driver.As[driver.StorageMux](d)
	if err != nil {
		return rep, err
	}
	if err := powerOff(ctx, cfg, d); err != nil {
		return rep, err
	}
	defer func() {
		cctx, cancel := cleanupContext(ctx, cfg)
		defer cancel()
		if serr := step(cctx, cfg, "storage off", func(ctx context.Context) error { return mux.SetStorage(ctx, driver.StorageOff) }); serr != nil {
			err = errors.Join(err, fmt.Errorf("%w; check the board before using it", serr))
		}
		if err != nil {
			// Nothing powered it on, but after a failure the DUT must be
			// known to be off.
			if perr := powerOff(cctx, cfg, d); perr != nil {
				err = errors.Join(err, fmt.Errorf("%w; the DUT may still be powered", perr))
			}
		}
	}()
	if err := step(ctx, cfg, "storage host", func(ctx context.Context) error { return mux.SetStorage(ctx, driver.StorageHost) }); err != nil {
		return rep, err
	}
	var target string
	if err := step(ctx, cfg, "find block target", func(ctx context.Context) (err error) {
		target, err = mux.BlockTarget(ctx)
		return err
	}); err != nil {
		return rep, err
	}
	fmt.Fprintf(a.stderr, "dut: flashing %s onto %s (%s)\n", image, d.Name(), target)
	fctx, cancel := context.WithTimeout(ctx, cfg.FlashTimeout)
	defer cancel()
	pr := newProgress(a.stderr)
	opts := o.options(pr)
	if tc, ok := d.(driver.TargetChecker); ok {
		opts.CheckTarget = tc.CheckTarget
	}
	wctx, st := trace.Start(fctx, "write", "target", target)
	rep, err = flash.Write(wctx, image, target, opts)
	pr.finish()
	st.End(err)
	if err != nil {
		if ctx.Err() != nil {
			return rep, fmt.Errorf("flash of %s interrupted after %d bytes; the storage is incomplete: flash it again: %w", d.Name(), rep.Bytes, err)
		}
		return rep, fmt.Errorf("flash %s onto %s: %w", image, d.Name(), err)
	}
	return rep, nil
}

// options are the flash engine's options for o, with pr's progress.
func (o flashOpts) options(pr *progress) flash.Options {
	return flash.Options{Progress: pr.update, ProgressEvery: 4 << 20, Bmap: o.bmap, NoBmap: o.noBmap, SkipHoles: o.skipHoles, NoVerify: o.noVerify}
}

// flashBy is flash for a device that writes images itself (a remote
// device: the exporter runs the engine, and switches the storage).
func (a *app) flashBy(ctx context.Context, cfg config, d driver.Device, f flash.Flasher, image string, o flashOpts) (rep flash.Report, err error) {
	if err := powerOff(ctx, cfg, d); err != nil {
		return rep, err
	}
	fmt.Fprintf(a.stderr, "dut: flashing %s onto %s (by its %s driver)\n", image, d.Name(), d.Driver())
	fctx, cancel := context.WithTimeout(ctx, cfg.FlashTimeout)
	defer cancel()
	pr := newProgress(a.stderr)
	wctx, st := trace.Start(fctx, "write", "by", d.Driver())
	rep, err = f.FlashImage(wctx, image, o.options(pr))
	pr.finish()
	st.End(err)
	if err != nil {
		if ctx.Err() != nil {
			return rep, fmt.Errorf("flash of %s interrupted after %d bytes; the storage is incomplete: flash it again: %w", d.Name(), rep.Bytes, err)
		}
		return rep, fmt.Errorf("flash %s onto %s: %w", image, d.Name(), err)
	}
	return rep, nil
}

// powerOff powers d off through its power-off sequence, or, when that fails
// or it has none, by cutting the power, as the harness does.
func powerOff(ctx context.Context, cfg config, d driver.Device) error {
	pw, hasPower := driver.Has[driver.Power](d)
	fp, hasForce := driver.Has[driver.ForcePower](d)
	var err error
	if hasPower {
		if err = step(ctx, cfg, "power off", pw.PowerOff); err == nil {
			return nil
		}
	}
	if hasForce {
		return step(ctx, cfg, "force off", fp.ForceOff)
	}
	return err
}

// writeJSONReport prints rep as JSON, failed with flashErr when that is not
// nil; nothing when the flash failed before it started.
func writeJSONReport(w io.Writer, rep flash.Report, flashErr error) error {
	if rep.Image == "" {
		return nil
	}
	b, err := flash.MarshalReport(rep, flashErr)
	if err != nil {
		return fmt.Errorf("the flash report: %w", err)
	}
	_, err = w.Write(b)
	return err
}

// writeReport prints a flash report.
func writeReport(w io.Writer, d driver.Device, r flash.Report) {
	fmt.Fprintf(w, "flashed %s (%s) onto %s (%s)\n", r.Image, r.Format, d.Name(), r.Target)
	fmt.Fprintf(w, "  bytes    %d (%s)\n", r.Bytes, bytesize.Format(r.Bytes))
	mapped := fmt.Sprintf("%.0f%% of the image", r.MappedFraction*100)
	if r.MappedFraction > 0 && r.MappedFraction < 0.005 {
		mapped = "<1% of the image" // not "0%" for a little data
	}
	switch {
	case r.Mode == flash.ModeBmap || r.Bmap != "":
		mapped += ", bmap " + r.Bmap
	case r.Mode == flash.ModeSkipHoles || r.Sparse:
		mapped += ", holes skipped"
	}
	fmt.Fprintf(w, "  written  %d (%s)\n", r.MappedBytes, mapped)
	if r.ZeroedBytes > 0 {
		fmt.Fprintf(w, "  zeroed   %d (%s, the image's holes, by %s)\n", r.ZeroedBytes, bytesize.Format(r.ZeroedBytes), r.ZeroedBy)
	}
	switch r.Mode {
	case flash.ModeFull:
		fmt.Fprintf(w, "  storage  byte-identical to the image\n")
	case flash.ModeBmap:
		fmt.Fprintf(w, "  storage  the bmap's mapped ranges; the rest left as it was (--nobmap: all of the image)\n")
	case flash.ModeSkipHoles:
		fmt.Fprintf(w, "  storage  the image's data; under its holes left as it was (--skip-holes)\n")
	}
	fmt.Fprintf(w, "  rate     %.1f MB/s (%s)\n", r.MBps(), r.Duration.Round(time.Millisecond))
	if r.Verified {
		fmt.Fprintf(w, "  verify   +%s (read back and matched)\n", r.VerifyDuration.Round(time.Millisecond))
	} else {
		fmt.Fprintf(w, "  verify   skipped\n")
	}
	cached := ""
	if r.SHA256Cached {
		cached = " (from the hash cache)"
	}
	fmt.Fprintf(w, "  sha256   %s%s\n", r.SHA256, cached)
	if ephemeral(d) != "" {
		// dut power on would boot it, and power it off again as it exits.
		fmt.Fprintf(w, "%s is powered off with its storage disconnected; its power ends with each dut command, so boot and watch it with: dut console %s --power-on\n", d.Name(), d.Name())
		return
	}
	fmt.Fprintf(w, "%s is powered off with its storage disconnected; boot it with: dut power on %s\n", d.Name(), d.Name())
}

// progress shows a flash's progress: a bar redrawn in place on a terminal,
// a plain line every plainEvery otherwise.
type progress struct {
	w     io.Writer
	tty   bool
	width int

	mu    sync.Mutex
	last  time.Time      // when the last state was drawn
	shown bool           // something was drawn
	final flash.Progress // the last state reported
	stale bool           // final is newer than what was drawn
}

const (
	barEvery   = 100 * time.Millisecond
	plainEvery = 5 * time.Second
)

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, width: 80}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 20 {
			p.width = cols
		}
	}
	return p
}

// update is the flash engine's progress callback.
func (p *progress) update(pr flash.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.final, p.stale = pr, true
	now := time.Now()
	every := plainEvery
	if p.tty {
		every = barEvery
	}
	if p.shown && now.Sub(p.last) < every {
		return
	}
	p.last, p.shown, p.stale = now, true, false
	p.draw(pr)
}

func (p *progress) draw(pr flash.Progress) {
	if p.tty {
		fmt.Fprintf(p.w, "\r%s\x1b[K", bar(pr, p.width-1))
	} else {
		fmt.Fprintf(p.w, "flash: %s\n", progressText(pr))
	}
}

// finish draws the last state and ends the bar's line.
func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stale {
		p.draw(p.final)
		p.shown, p.stale = true, false
	}
	if p.shown && p.tty {
		fmt.Fprintln(p.w)
	}
}

// progressText is e.g. "45% 30 MiB / 67 MiB, 250.3 MB/s, 0:01 elapsed":
// sizes in the binary unit that fits (a small image reads "512 KiB", not
// "0 MiB"), the rate in MB/s as flash reports it.
func progressText(pr flash.Progress) string {
	size := bytesize.Format(pr.Done)
	if pr.Total >= 0 {
		size += " / " + bytesize.Format(pr.Total)
	}
	return fmt.Sprintf("%3.0f%% %s, %.1f MB/s, %s elapsed", clamp01(pr.Fraction)*100, size, pr.Rate(), clock(pr.Elapsed))
}

// bar renders pr as a progress bar of at most width columns.
func bar(pr flash.Progress, width int) string {
	text := progressText(pr)
	if pr.Fraction > 0 && pr.Fraction < 1 && pr.Elapsed > 0 {
		left := time.Duration(float64(pr.Elapsed) * (1 - pr.Fraction) / pr.Fraction)
		text += ", " + clock(left) + " left"
	}
	n := width - len(text) - 3
	if n < 10 {
		return text
	}
	n = min(n, 40)
	full := int(clamp01(pr.Fraction) * float64(n))
	b := strings.Repeat("=", full)
	if full < n {
		b += ">" + strings.Repeat(" ", n-full-1)
	}
	return "[" + b + "] " + text
}

func clamp01(f float64) float64 { return max(0, min(1, f)) }

// clock renders d as m:ss or h:mm:ss.
func clock(d time.Duration) string {
	s := int(d.Round(time.Second) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
