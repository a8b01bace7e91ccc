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
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

// Device is one DUTlink board as a discovery found it. It implements
// [driver.Power], [driver.ForcePower], [driver.Rescuer], [driver.Resetter],
// [driver.StorageMux], [driver.TargetChecker], [driver.ConsolePort],
// [driver.Pins], [driver.PowerMeter] and [driver.Configurer]. Devices of the
// same board from several discoveries share its tty and storage state;
// operations on one board run one at a time.
type Device struct {
	drv   *Driver
	opts  Options
	st    *boardState
	board Board
	tr    transport
	name  string
	tags  []string
	cfg   map[string]string
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
)

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
// the error.
func (d *Device) op(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %s: %w", d.name, what, err)
	}
	d.st.opMu.Lock()
	defer d.st.opMu.Unlock()
	start := time.Now()
	if err := fn(ctx); err != nil {
		return fmt.Errorf("%s: %s: %w", d.name, what, err)
	}
	d.opts.Logf("dutlink %s: %s over %s (%s)", d.name, what, d.tr.kind(), time.Since(start).Round(time.Millisecond))
	return nil
}

func (d *Device) power(ctx context.Context, a powerAction) error {
	return d.op(ctx, "power "+a.String(), func(ctx context.Context) error { return d.tr.power(ctx, a) })
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

// Cycle powers the DUT off, waits offTime (bounded by ctx) and powers it
// on again.
func (d *Device) Cycle(ctx context.Context, offTime time.Duration) error {
	if err := d.PowerOff(ctx); err != nil {
		return err
	}
	if err := sleepCtx(ctx, offTime); err != nil {
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
// serial and firmware.
func (d *Device) Config(ctx context.Context) (map[string]string, error) {
	var cfg map[string]string
	err := d.op(ctx, "get config", func(ctx context.Context) (err error) {
		cfg, err = d.tr.config(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	d.st.mu.Lock()
	d.st.cfg = maps.Clone(cfg)
	d.st.mu.Unlock()
	cfg["serial"] = d.board.Serial
	cfg["firmware"] = d.board.Version.String()
	return cfg, nil
}

// SetConfig stores one config value on the board after checking it against
// what the firmware can store ([NormalizeConfig]); the board's answer is
// checked. A new name or tags show from the next discovery on.
func (d *Device) SetConfig(ctx context.Context, key, value string) error {
	if key == "serial" || key == "firmware" {
		return fmt.Errorf("%s: set config: %w: %s is read-only", d.name, ErrBadConfig, key)
	}
	v, err := NormalizeConfig(key, value)
	if err != nil {
		return fmt.Errorf("%s: set config: %w", d.name, err)
	}
	return d.op(ctx, "set config "+key, func(ctx context.Context) error {
		cur, err := d.tr.config(ctx)
		if err != nil {
			return fmt.Errorf("reading the config first: %w", err)
		}
		total := len(v)
		for _, k := range shellKeys {
			if k != key {
				total += len(cur[k])
			}
		}
		if total > ShellConfigBudget {
			return fmt.Errorf("%w: %s=%q would bring the board's config values to %d bytes; the firmware's shell prints the whole config in one 512-byte reply, so together they must stay within %d bytes (or get-config, and with it discovery over the shell, breaks): shorten this or another value", ErrBadConfig, key, v, total, ShellConfigBudget)
		}
		if err := d.tr.setConfig(ctx, key, v); err != nil {
			return err
		}
		d.st.mu.Lock()
		if d.st.cfg != nil {
			d.st.cfg = maps.Clone(d.st.cfg)
			d.st.cfg[key] = v
		}
		d.st.mu.Unlock()
		return nil
	})
}

func (d *Device) locator() storageLocator {
	filter := d.opts.StorageFilter
	if filter == "" {
		filter = storageFilterOf(d.cfg["json"])
	}
	return storageLocator{sysfs: d.opts.SysfsRoot, dev: d.opts.DevRoot, board: d.board, filter: filter}
}

// SetStorage switches the storage mux. Before it leaves the host the disk
// is flushed and ejected; when it switches to the host, it returns once the
// board's disk is identified and ready, or fails (ErrNoDisk,
// ErrAmbiguousDisk) with the mux switched off again.
func (d *Device) SetStorage(ctx context.Context, mode driver.StorageMode) error {
	if _, _, _, err := storageValue(mode); err != nil {
		return fmt.Errorf("%s: set storage: %w", d.name, err)
	}
	return d.op(ctx, "storage "+string(mode), func(ctx context.Context) error {
		l := d.locator()
		if mode == driver.StorageHost {
			l.snapshot()
		}
		d.st.mu.Lock()
		held := d.st.disk
		d.st.mu.Unlock()
		if held != nil && mode != driver.StorageHost {
			if err := l.release(*held); err != nil {
				return err
			}
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
			octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShellTimeout)
			defer cancel()
			if oerr := d.tr.storage(octx, driver.StorageOff); oerr == nil {
				d.st.mu.Lock()
				d.st.storage = driver.StorageOff
				d.st.mu.Unlock()
			} else {
				err = errors.Join(err, fmt.Errorf("switching the storage off again: %w", oerr))
			}
			return err
		}
		d.st.mu.Lock()
		d.st.disk = &dk
		d.st.mu.Unlock()
		d.opts.Logf("dutlink %s: storage is %s (%s)", d.name, dk.node, dk.sysPath)
		return nil
	})
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
	if err := d.locator().check(f, *dk, d.opts.FileDisks); err != nil {
		return fmt.Errorf("%s: check target: %w", d.name, err)
	}
	return nil
}

// OpenConsole opens the DUT's console: the separate USB UART named by the
// board's usb_console config when set, the board's own tty otherwise. The
// stream survives power cycles and shell exchanges; Close ends a pending
// Read. A tty held by another process is an error wrapping ErrBusy.
func (d *Device) OpenConsole(ctx context.Context) (io.ReadWriteCloser, error) {
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
