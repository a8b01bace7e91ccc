package dutlink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/step"
)

// Device is one open DUTlink board ([Driver.Open]). It implements
// [driver.Power], [driver.ForcePower], [driver.Rescuer], [driver.Resetter],
// [driver.StorageMux], [driver.TargetChecker], [driver.ConsolePort],
// [driver.Pins], [driver.PowerMeter], [driver.Configurer] and
// [driver.Closer]. Operations on the board run one at a time; after Close
// they fail with errors wrapping [driver.ErrClosed].
type Device struct {
	drv   *Driver
	opts  Options
	st    *boardState
	board Board
	tr    transport
	sh    *shellTransport // the board's shell, whatever tr is: json lives only there
	name  string
	tags  []string
	cfg   map[string]string

	logOnce   sync.Once
	logTracer *step.Tracer // traces to opts.Logf the operations whose context has no tracer
}

var (
	_ driver.Device        = (*Device)(nil)
	_ driver.Power         = (*Device)(nil)
	_ driver.ForcePower    = (*Device)(nil)
	_ driver.Rescuer       = (*Device)(nil)
	_ driver.Resetter      = (*Device)(nil)
	_ driver.StorageMux    = (*Device)(nil)
	_ driver.TargetChecker = (*Device)(nil)
	_ driver.ConsolePort   = (*Device)(nil)
	_ driver.Pins          = (*Device)(nil)
	_ driver.PowerMeter    = (*Device)(nil)
	_ driver.Configurer    = (*Device)(nil)
	_ driver.Closer        = (*Device)(nil)
)

// Close closes the console stream the device handed out and gives the board
// up, so that it can be opened again. It changes nothing on the board (the
// harness powers it off and switches its storage off first). Closing twice
// is not an error.
func (d *Device) Close() error {
	d.st.mu.Lock()
	if d.st.closed {
		d.st.mu.Unlock()
		return nil
	}
	d.st.closed = true
	c := d.st.console
	d.st.console = nil
	d.st.mu.Unlock()
	var err error
	if c != nil {
		err = c.Close()
	}
	if d.drv != nil {
		d.drv.closed(d)
	}
	return err
}

// checkOpen returns an error wrapping driver.ErrClosed once d is closed.
func (d *Device) checkOpen(what string) error {
	d.st.mu.Lock()
	defer d.st.mu.Unlock()
	if d.st.closed {
		return fmt.Errorf("%s: %s: %w", d.name, what, driver.ErrClosed)
	}
	return nil
}

// Name returns the board's configured name, or jp-<serial> when it has none,
// as read at discovery.
func (d *Device) Name() string { return d.name }

// Serial returns the board's USB serial number.
func (d *Device) Serial() string { return d.board.Serial }

// Tags returns the board's tags as read at discovery.
func (d *Device) Tags() []string { return slices.Clone(d.tags) }

// Driver returns DriverName.
func (d *Device) Driver() string { return DriverName }

// Board returns what sysfs said about the board.
func (d *Device) Board() Board { return d.board }

// Transport returns the control transport the device uses.
func (d *Device) Transport() TransportKind { return d.tr.kind() }

// op runs one hardware operation, serialized per board, with its name in
// the error, as the step "dutlink <what>" (see package step) under the
// caller's: a wait for the board's previous operation is part of it.
func (d *Device) op(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %s: %w", d.name, what, err)
	}
	if err := d.checkOpen(what); err != nil {
		return err
	}
	ctx, st := step.Start(d.traced(ctx), "dutlink "+what, "over", d.tr.kind())
	d.st.opMu.Lock()
	defer d.st.opMu.Unlock()
	if err := fn(ctx); err != nil {
		return st.End(fmt.Errorf("%s: %s: %w", d.name, what, err))
	}
	return st.End(nil)
}

// traced returns ctx with the board as the device of its steps and, when
// it carries no tracer, one that logs to Options.Logf.
func (d *Device) traced(ctx context.Context) context.Context {
	if step.TracerFrom(ctx) == nil && d.opts.Logf != nil {
		d.logOnce.Do(func() { d.logTracer = step.New(step.LogSink(d.opts.Logf)) })
		ctx = step.WithTracer(ctx, d.logTracer)
	}
	return step.WithDevice(ctx, d.name)
}

func (d *Device) power(ctx context.Context, a powerAction) error {
	_, err := d.powerAt(ctx, a)
	return err
}

// powerAt runs a power action and returns when the DUT's power switched.
func (d *Device) powerAt(ctx context.Context, a powerAction) (time.Time, error) {
	var at time.Time
	err := d.op(ctx, "power "+a.String(), func(ctx context.Context) (err error) {
		at, err = d.tr.power(ctx, a)
		return err
	})
	return at, err
}

// PowerOn powers the DUT on through the board's power_on sequence.
func (d *Device) PowerOn(ctx context.Context) error { return d.power(ctx, powerOn) }

// PowerOff powers the DUT off through the board's power_off sequence.
func (d *Device) PowerOff(ctx context.Context) error { return d.power(ctx, powerOff) }

// ForceOn applies power without the power_on sequence.
func (d *Device) ForceOn(ctx context.Context) error { return d.power(ctx, powerForceOn) }

// ForceOff cuts power without the power_off sequence.
func (d *Device) ForceOff(ctx context.Context) error { return d.power(ctx, powerForceOff) }

// Rescue powers the DUT on through the board's power_rescue sequence.
func (d *Device) Rescue(ctx context.Context) error { return d.power(ctx, powerRescue) }

// Cycle powers the DUT off, keeps it off for offTime (bounded by ctx),
// counted from the moment its power was really cut (the board runs the
// power_off sequence after the request completes, and its waits may come
// before the cut), and powers it on again.
func (d *Device) Cycle(ctx context.Context, offTime time.Duration) error {
	off, err := d.powerAt(ctx, powerOff)
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, time.Until(off.Add(offTime))); err != nil {
		return fmt.Errorf("%s: power cycle: %w (the DUT is off)", d.name, err)
	}
	return d.PowerOn(ctx)
}

func sleepCtx(ctx context.Context, dur time.Duration) error {
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PinNames returns the pins SetPin accepts: reset, a, b, c, d.
func (d *Device) PinNames() []string { return slices.Clone(pinNames) }

// SetPin drives a control pin ("reset" or "r", "a" to "d").
func (d *Device) SetPin(ctx context.Context, pin string, level driver.PinLevel) error {
	i, err := pinIndex(pin)
	if err != nil {
		return fmt.Errorf("%s: set pin: %w", d.name, err)
	}
	if _, _, _, err := levelValue(level); err != nil {
		return fmt.Errorf("%s: set pin %s: %w", d.name, pin, err)
	}
	return d.op(ctx, "set pin "+pinNames[i]+" "+string(level), func(ctx context.Context) error { return d.tr.setPin(ctx, i, level) })
}

// Reset pulls the reset pin low for ResetPulse and releases it (z). The pin
// is released even when ctx ends during the pulse.
func (d *Device) Reset(ctx context.Context) error {
	return d.op(ctx, "reset", func(ctx context.Context) error {
		if err := d.tr.setPin(ctx, 0, driver.PinLow); err != nil {
			return err
		}
		werr := sleepCtx(ctx, ResetPulse)
		rctx := ctx
		if werr != nil {
			var cancel context.CancelFunc
			rctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), ShellTimeout)
			defer cancel()
		}
		if err := d.tr.setPin(rctx, 0, driver.PinFloating); err != nil {
			return fmt.Errorf("releasing the reset pin: %w", err)
		}
		return werr
	})
}

// ReadPower reads the board's power meter (a ~2 s moving average).
func (d *Device) ReadPower(ctx context.Context) (driver.PowerReading, error) {
	var r driver.PowerReading
	err := d.op(ctx, "read power", func(ctx context.Context) (err error) {
		r, err = d.tr.meter(ctx)
		return err
	})
	return r, err
}

// FirmwareVersion asks the board for its firmware version and git ref.
func (d *Device) FirmwareVersion(ctx context.Context) (string, error) {
	var v string
	err := d.op(ctx, "version", func(ctx context.Context) (err error) {
		v, err = d.tr.version(ctx)
		return err
	})
	return v, err
}

// Config reads the board's config: name, tags, usb_console, power_on,
// power_off, power_rescue (and json, over the shell), plus the read-only
// serial and firmware and this host's storage_filter for the board
// ([HostKeys]). Keys that the shell's 512-byte get-config reply had no room
// for are missing; [Device.ConfigCut] lists them.
func (d *Device) Config(ctx context.Context) (map[string]string, error) {
	var cfg map[string]string
	var cut []string
	err := d.op(ctx, "get config", func(ctx context.Context) (err error) {
		cfg, cut, err = d.tr.config(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	d.st.mu.Lock()
	d.st.cfg, d.st.cut = maps.Clone(cfg), cut
	d.st.mu.Unlock()
	d.logCut()
	l, err := d.locator()
	if err != nil {
		return nil, fmt.Errorf("%s: get config: %w", d.name, err)
	}
	if l.own {
		cfg["storage_filter"] = l.filter
	} else {
		cfg["storage_filter"] = ""
	}
	cfg["serial"] = d.board.Serial
	cfg["firmware"] = d.board.Version.String()
	return cfg, nil
}

// ConfigCut returns the keys the board's shell could not send at the last
// config read, because its config overflows the 512-byte get-config reply.
func (d *Device) ConfigCut() []string {
	d.st.mu.Lock()
	defer d.st.mu.Unlock()
	return slices.Clone(d.st.cut)
}

// ConfigProblem says, when the board's config overflows its shell's
// get-config reply, which keys did not arrive and what to clear; nil
// otherwise.
func (d *Device) ConfigProblem() error {
	d.st.mu.Lock()
	cut, cfg := d.st.cut, d.st.cfg
	d.st.mu.Unlock()
	if len(cut) == 0 {
		return nil
	}
	return cutError(d.board.Serial, cut, cfg)
}

// logCut says, once per read, what an overflowing config cost.
func (d *Device) logCut() {
	if err := d.ConfigProblem(); err != nil {
		d.opts.Logf("dutlink %s: %v", d.name, err)
	}
}

// cutError explains a config that overflows the shell's reply.
func cutError(serial string, cut []string, cfg map[string]string) error {
	return fmt.Errorf("%w: the board's config overflows the %d-byte reply in which its shell sends get-config, so %s did not arrive (unknown over the shell); clear the longest value (%s), e.g. dut config %s set json ''", ErrBadConfig, ShellReplyMax, strings.Join(cut, ", "), longest(cfg), serial)
}

// longest names the config values by length, longest first.
func longest(cfg map[string]string) string {
	keys := slices.Collect(maps.Keys(cfg))
	slices.SortFunc(keys, func(a, b string) int { return len(cfg[b]) - len(cfg[a]) })
	var out []string
	for _, k := range keys {
		if len(cfg[k]) > 0 && len(out) < 3 {
			out = append(out, fmt.Sprintf("%s: %d bytes", k, len(cfg[k])))
		}
	}
	if len(out) == 0 {
		return "none is set"
	}
	return strings.Join(out, ", ")
}

// shellReplySize is the size of get-config's reply for cfg: a line end,
// the "key: value" lines, a line end and the prompt.
func shellReplySize(cfg map[string]string) int {
	n := len("\r\n") + len(prompt)
	for _, k := range shellKeys {
		n += len(k) + len(": ") + len(cfg[k]) + len("\r\n")
	}
	return n
}

// checkReplyBudget refuses a write that would make get-config's reply
// overflow the shell's buffer (then discovery over the shell loses keys).
// A config that overflows already takes only writes that shrink it.
func checkReplyBudget(serial string, cur map[string]string, cut []string, key, v string) error {
	if len(cut) > 0 {
		if _, known := cur[key]; v == "" || known && !slices.Contains(cut, key) && len(v) < len(cur[key]) {
			return nil
		}
		return fmt.Errorf("setting %s: %w", key, cutError(serial, cut, cur))
	}
	next := maps.Clone(cur)
	next[key] = v
	if size := shellReplySize(next); size > ShellReplyMax {
		delete(next, key)
		return fmt.Errorf("%w: %s=%q would make the board's get-config reply %d bytes, but its shell sends it from one %d-byte buffer and cuts the rest (then discovery over the shell loses keys): shorten this value or clear another (%s)", ErrBadConfig, key, v, size, ShellReplyMax, longest(next))
	}
	return nil
}

// SetConfig stores one config value on the board after checking it against
// what the firmware can store ([NormalizeConfig]) and against the shell's
// 512-byte get-config reply (json included, read over the shell whatever
// the transport); the board's answer is checked. json is written over the
// shell, the only place it exists. storage_filter ([HostKeys]) is kept by
// this host, not the board. A new name or tags show from the next
// discovery on.
func (d *Device) SetConfig(ctx context.Context, key, value string) error {
	switch key {
	case "serial", "firmware":
		return fmt.Errorf("%s: set config: %w: %s is read-only", d.name, ErrBadConfig, key)
	case "storage_filter":
		return d.setStorageFilter(ctx, value)
	}
	v, err := NormalizeConfig(key, value)
	if err != nil {
		return fmt.Errorf("%s: set config: %w", d.name, err)
	}
	return d.op(ctx, "set config "+key, func(ctx context.Context) error {
		cur, cut, err := d.tr.config(ctx)
		if err != nil {
			return fmt.Errorf("reading the config first: %w", err)
		}
		tr := d.tr
		if d.tr.kind() != TransportShell {
			js, jcut, err := d.sh.config(ctx)
			if err != nil {
				return fmt.Errorf("reading the config over the shell first (json exists only there, and counts toward the shell's %d-byte reply): %w", ShellReplyMax, err)
			}
			cur["json"], cut = js["json"], jcut
			if key == "json" {
				tr = d.sh
			}
		}
		if err := checkReplyBudget(d.board.Serial, cur, cut, key, v); err != nil {
			return err
		}
		if err := tr.setConfig(ctx, key, v); err != nil {
			return err
		}
		d.st.mu.Lock()
		if d.st.cfg != nil {
			d.st.cfg = maps.Clone(d.st.cfg)
			d.st.cfg[key] = v
		}
		if len(cut) > 0 {
			d.st.cut = nil // unknown again until the next read
		}
		d.st.mu.Unlock()
		return nil
	})
}

// setStorageFilter keeps this host's storage_filter for the board. A
// filter that names a disk present now, other than the board's disk this
// process holds at the host, is refused: it names a stranger's stick (or
// not only the board's).
func (d *Device) setStorageFilter(ctx context.Context, value string) error {
	v := strings.TrimSpace(value)
	if strings.ContainsAny(v, "/ \t") {
		return fmt.Errorf("%s: set config: %w: storage_filter %q: give a substring of the stick's /dev/disk/by-id name (best its serial), without '/' or spaces", d.name, ErrBadConfig, value)
	}
	return d.op(ctx, "set config storage_filter", func(ctx context.Context) error {
		if v != "" {
			l := d.topology()
			l.filter, l.own = v, true
			all, err := l.byID()
			if err != nil {
				return err
			}
			d.st.mu.Lock()
			held := d.st.disk
			d.st.mu.Unlock()
			if len(all) > 1 || len(all) == 1 && (held == nil || held.name != all[0].name) {
				return fmt.Errorf("%w: storage_filter %q names %s, present while the board's storage is not at the host: that is not the board's stick, or not only it; give the stick's serial, which only the board's own stick has (switch the board's storage off first if it was left at the host)", ErrBadConfig, v, names(all))
			}
		}
		hc, err := loadHostConfig(d.opts.ConfigDir, d.board.Serial)
		if err != nil && !errors.Is(err, ErrBadConfig) {
			return err
		}
		hc.StorageFilter = v
		return saveHostConfig(d.opts.ConfigDir, d.board.Serial, hc)
	})
}

// topology returns the locator that finds the board's disk by USB
// topology alone, with no filter.
func (d *Device) topology() storageLocator {
	return storageLocator{sysfs: d.opts.SysfsRoot, dev: d.opts.DevRoot, board: d.board}
}

// locator returns how the board's disk is found: its own filter (per
// board: Options.StorageFilters, this host's config, the board's json),
// else the filter for every board, else topology alone.
func (d *Device) locator() (storageLocator, error) {
	l := d.topology()
	hc, err := loadHostConfig(d.opts.ConfigDir, d.board.Serial)
	if err != nil {
		return l, err
	}
	d.st.mu.Lock()
	js, known := d.st.cfg["json"]
	d.st.mu.Unlock()
	if !known {
		js = d.cfg["json"]
	}
	switch {
	case d.opts.StorageFilters[d.board.Serial] != "":
		l.filter, l.own, l.from = d.opts.StorageFilters[d.board.Serial], true, EnvStorageFilter+" for "+d.board.Serial
	case hc.StorageFilter != "":
		l.filter, l.own, l.from = hc.StorageFilter, true, "this host's storage_filter for the board ("+hostConfigPath(d.opts.ConfigDir, d.board.Serial)+")"
	case storageFilterOf(js) != "":
		l.filter, l.own, l.from = storageFilterOf(js), true, "storage_filter in the board's json config"
	case d.opts.StorageFilter != "":
		l.filter, l.from = d.opts.StorageFilter, EnvStorageFilter
	}
	return l, nil
}

// locatorForSwitch returns the locator for a storage switch to mode. A
// board whose disk cannot be identified otherwise may still have a
// storage_filter in its json config, which the USB transport cannot read:
// for a switch to the host it is read over the shell then.
func (d *Device) locatorForSwitch(ctx context.Context, mode driver.StorageMode) (storageLocator, error) {
	l, err := d.locator()
	if err != nil || l.identity() == nil || d.tr.kind() == TransportShell || mode != driver.StorageHost {
		// Switching away from the host never waits on the shell: without
		// an identity it syncs the whole host instead.
		return l, err
	}
	cfg, _, err := d.sh.config(ctx)
	if err != nil {
		return l, fmt.Errorf("%w; reading the board's json config over the shell for a storage_filter also failed: %w", l.identity(), err)
	}
	d.st.mu.Lock()
	if d.st.cfg != nil {
		d.st.cfg = maps.Clone(d.st.cfg)
		d.st.cfg["json"] = cfg["json"]
	}
	d.st.mu.Unlock()
	return d.locator()
}

// SetStorage switches the storage mux. Before it leaves the host the
// board's disk is flushed and ejected, whether this process switched it to
// the host or another did. Switching to the host returns once the board's
// disk is identified and ready, or fails with the mux switched off again:
// ErrUnprovenDisk before anything is switched when nothing can prove which
// disk is the board's, ErrNoDisk, ErrAmbiguousDisk.
func (d *Device) SetStorage(ctx context.Context, mode driver.StorageMode) error {
	if _, _, _, err := storageValue(mode); err != nil {
		return fmt.Errorf("%s: set storage: %w", d.name, err)
	}
	return d.op(ctx, "storage "+string(mode), func(ctx context.Context) error {
		l, err := d.locatorForSwitch(ctx, mode)
		if err != nil && mode == driver.StorageHost {
			return err
		}
		if err != nil {
			// Switching away must not fail on this host's config: the disk
			// is then flushed by syncing the whole host.
			d.opts.Logf("dutlink %s: %v; switching the storage to %s all the same", d.name, err, mode)
			l = d.topology()
		}
		if mode == driver.StorageHost {
			if err := l.identity(); err != nil {
				return err
			}
			if err := d.filterNamesNoStranger(ctx, l); err != nil {
				return err
			}
		} else if err := d.releaseDisk(l); err != nil {
			return err
		}
		if err := d.tr.storage(ctx, mode); err != nil {
			return err
		}
		d.st.mu.Lock()
		d.st.storage, d.st.disk = mode, nil
		d.st.mu.Unlock()
		if mode != driver.StorageHost {
			return nil
		}
		dk, err := l.wait(ctx, d.opts.StorageTimeout)
		if err != nil {
			return d.storageOffAfter(ctx, err)
		}
		d.st.mu.Lock()
		d.st.disk = &dk
		d.st.mu.Unlock()
		step.Current(ctx).Set("disk", dk.node, "sysfs", dk.sysPath)
		return nil
	})
}

// releaseDisk flushes and ejects the board's disk before the mux takes it
// from the host: the one this process found, or else whatever disk of the
// board is at the host now (another process may have switched it there and
// written to it). When the board's disk cannot be identified, every
// filesystem and block device of the host is synced instead.
func (d *Device) releaseDisk(l storageLocator) error {
	d.st.mu.Lock()
	held := d.st.disk
	d.st.mu.Unlock()
	if held != nil {
		return l.release(*held)
	}
	if l.identity() != nil {
		unix.Sync()
		return nil
	}
	found, err := l.candidates()
	if err != nil {
		return err
	}
	if l.hubs() == nil && len(found) != 1 {
		// On a root port only the filter ties a disk to the board: with
		// more than one match, none can be ejected as the board's.
		unix.Sync()
		return nil
	}
	for _, dk := range found {
		if err := l.release(dk); err != nil {
			return err
		}
		d.opts.Logf("dutlink %s: flushed and ejected %s, found at the host", d.name, dk.node)
	}
	return nil
}

// strangerWait bounds how long filterNamesNoStranger waits for the disks
// the board's filter named before a switch to vanish once the board's
// storage is off.
const strangerWait = 5 * time.Second

// filterNamesNoStranger proves, before a root-port board's storage goes to
// the host, that its filter names no disk but the board's: a disk it names
// already must be the board's own, left at the host by another process, and
// so vanish when the board's storage is switched off (after a sync). One
// that stays is a stranger's, and the filter too broad to tell them apart.
func (d *Device) filterNamesNoStranger(ctx context.Context, l storageLocator) error {
	if l.hubs() != nil {
		return nil
	}
	pre, err := l.candidates()
	if err != nil || len(pre) == 0 {
		return err
	}
	d.st.mu.Lock()
	held := d.st.disk
	d.st.mu.Unlock()
	if held != nil && len(pre) == 1 && pre[0].name == held.name {
		return nil // this process switched it to the host already
	}
	unix.Sync()
	if err := d.tr.storage(ctx, driver.StorageOff); err != nil {
		return err
	}
	d.st.mu.Lock()
	d.st.storage, d.st.disk = driver.StorageOff, nil
	d.st.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, strangerWait)
	defer cancel()
	tick := time.NewTicker(diskPollEvery)
	defer tick.Stop()
	for {
		left, err := l.candidates()
		if err != nil {
			return err
		}
		if len(left) == 0 {
			return nil
		}
		select {
		case <-tick.C:
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w: %s %q names %s, which stayed at the host with the board's storage switched off: it is not the board's stick, so the filter does not tell the board's stick from other disks; nothing was written: set it to the stick's serial (dut config %s set storage_filter <stick serial>)", ErrUnprovenDisk, l.from, l.filter, names(left), d.board.Serial)
		}
	}
}

// storageOffAfter switches the mux off after the disk could not be used,
// and returns why.
func (d *Device) storageOffAfter(ctx context.Context, err error) error {
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShellTimeout)
	defer cancel()
	if oerr := d.tr.storage(octx, driver.StorageOff); oerr != nil {
		return errors.Join(err, fmt.Errorf("switching the storage off again: %w", oerr))
	}
	d.st.mu.Lock()
	d.st.storage = driver.StorageOff
	d.st.mu.Unlock()
	return err
}

// StorageState returns the mux position this process last set.
func (d *Device) StorageState() driver.StorageMode {
	d.st.mu.Lock()
	defer d.st.mu.Unlock()
	return d.st.storage
}

// BlockTarget returns the device node of the board's disk while the storage
// is at the host.
func (d *Device) BlockTarget(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("%s: block target: %w", d.name, err)
	}
	d.st.mu.Lock()
	defer d.st.mu.Unlock()
	if d.st.closed {
		return "", fmt.Errorf("%s: block target: %w", d.name, driver.ErrClosed)
	}
	if d.st.storage != driver.StorageHost || d.st.disk == nil {
		return "", fmt.Errorf("%s: block target: %w (the mux is at %s); set storage to host first", d.name, ErrStorageNotOnHost, d.st.storage)
	}
	return d.st.disk.node, nil
}

// CheckTarget proves that f, opened for flashing, is the board's disk: a
// block device with the identified disk's major:minor (or, with
// Options.FileDisks, the very file that stands for it).
func (d *Device) CheckTarget(f *os.File) error {
	d.st.mu.Lock()
	dk, mode := d.st.disk, d.st.storage
	d.st.mu.Unlock()
	if mode != driver.StorageHost || dk == nil {
		return fmt.Errorf("%s: check target %s: %w", d.name, f.Name(), ErrStorageNotOnHost)
	}
	l, err := d.locator()
	if err == nil {
		err = l.check(f, *dk, d.opts.FileDisks)
	}
	if err != nil {
		return fmt.Errorf("%s: check target: %w", d.name, err)
	}
	return nil
}

// OpenConsole opens the DUT's console: the separate USB UART named by the
// board's usb_console config when set, the board's own tty otherwise (and
// then puts the board's firmware in console mode, whatever the transport).
// The stream survives power cycles and shell exchanges; Close ends a
// pending Read. A tty held by another process is an error wrapping ErrBusy.
func (d *Device) OpenConsole(ctx context.Context) (io.ReadWriteCloser, error) {
	if err := d.checkOpen("open console"); err != nil {
		return nil, err
	}
	rw, err := d.openConsole(ctx)
	if err != nil {
		return nil, err
	}
	d.st.mu.Lock()
	d.st.console = rw
	d.st.mu.Unlock()
	return rw, nil
}

func (d *Device) openConsole(ctx context.Context) (io.ReadWriteCloser, error) {
	if uc := d.cfg["usb_console"]; uc != "" {
		path, err := d.findUSBConsole(uc)
		if err != nil {
			return nil, fmt.Errorf("%s: open console: %w", d.name, err)
		}
		p, err := openLocked(d.opts.OpenPort, path)
		if err != nil {
			return nil, fmt.Errorf("%s: open console: %w", d.name, err)
		}
		return p, nil
	}
	c, err := d.st.mux.openConsole(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: open console: %w", d.name, err)
	}
	// The firmware may be at its shell (0.07 boots there; a program may
	// have left it there), where the DUT's output is discarded: make sure
	// it is in console mode. Its escape (five Ctrl-B) reaches the DUT.
	if err := d.st.mux.shell(ctx, nil); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("%s: open console: putting the board in console mode: %w", d.name, err)
	}
	if users := ttyUsers(d.board.TTY); len(users) > 0 {
		d.opts.Logf("dutlink %s: warning: %s also has %s open and takes part of the DUT's output; stop it", d.name, strings.Join(users, ", "), d.board.TTY)
	}
	return c, nil
}

// ConsolePath returns the tty the console uses.
func (d *Device) ConsolePath() (string, error) {
	if uc := d.cfg["usb_console"]; uc != "" {
		return d.findUSBConsole(uc)
	}
	return d.board.TTY, nil
}

func (d *Device) findUSBConsole(sub string) (string, error) {
	dir := filepath.Join(d.opts.DevRoot, "serial", "by-id")
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		return "", err
	}
	var hits []string
	for _, e := range ents {
		if strings.Contains(e.Name(), sub) {
			hits = append(hits, filepath.Join(dir, e.Name()))
		}
	}
	switch len(hits) {
	case 0:
		return "", fmt.Errorf("%w: no entry of %s holds usb_console=%q: check that the DUT's USB UART is connected, or clear usb_console to use the DUTlink's own tty", ErrNoConsole, dir, sub)
	case 1:
		return hits[0], nil
	}
	return "", fmt.Errorf("%w: usb_console=%q matches %s; set a longer, unique substring", ErrNoConsole, sub, strings.Join(hits, ", "))
}
