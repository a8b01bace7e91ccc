package sim

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

// Errors a caller may need to tell apart; the errors of Device's methods wrap
// them. They are the shared sentinels of package driver, under the names
// this package always had.
var (
	// ErrGone means the device vanished: Unplug was called.
	ErrGone = driver.ErrGone
	// ErrClosed means the device was closed with Close.
	ErrClosed = driver.ErrClosed
	// ErrStorageNotOnHost means the storage multiplexer does not connect
	// the storage to the host, so there is no block target.
	ErrStorageNotOnHost = driver.ErrStorageNotOnHost
	// ErrConsoleBusy means another console of the device is open.
	ErrConsoleBusy = driver.ErrConsoleBusy
	// ErrPoweredOff means the operation needs the device powered on.
	ErrPoweredOff = driver.ErrPoweredOff
)

// invalidError is the caller's mistake: its text is err's, and it matches
// both err and driver.ErrInvalidArgument.
type invalidError struct{ err error }

func (e invalidError) Error() string   { return e.err.Error() }
func (e invalidError) Unwrap() []error { return []error{e.err, driver.ErrInvalidArgument} }

// invalid marks err as the caller's mistake (driver.ErrInvalidArgument).
func invalid(err error) error { return invalidError{err} }

// invalidf is invalid(fmt.Errorf(format, args...)).
func invalidf(format string, args ...any) error { return invalid(fmt.Errorf(format, args...)) }

// PowerState is whether a device's power is on.
type PowerState string

// The power states of a device.
const (
	PowerStateOff PowerState = "off"
	PowerStateOn  PowerState = "on"
)

// PinReset is the pin that holds the board in reset while driven low.
const PinReset = "reset"

var pinNames = []string{PinReset, "a", "b", "c", "d"}

// Supply voltage and current draw by board activity, for ReadPower.
const (
	supplyVolts = 5.0
	ampsInReset = 0.12
	ampsBooting = 0.84
	ampsIdle    = 0.52
	ampsBusy    = 0.96
	ampsHalted  = 0.40
)

// activity is what a powered board is doing, for the power meter.
type activity int

const (
	actBooting activity = iota
	actIdle
	actBusy
	actHalted
)

// bootMode selects what the board boots into.
type bootMode int

const (
	bootNormal bootMode = iota
	bootRescue
)

// run is one run of the board goroutine, from its start to its stop.
type run struct {
	cancel  context.CancelFunc
	done    chan struct{} // closed when the goroutine has returned
	inReady chan struct{} // signalled when input arrives; capacity 1
}

// Device is a simulated DUT: a small Linux board with a power switch, a
// storage multiplexer, a serial console, control pins and a power meter.
// It implements driver.Device and the capabilities Power, ForcePower,
// Rescuer, Resetter, StorageMux, ConsolePort, Pins, PowerMeter, Configurer
// and Closer. Its methods are safe for concurrent use.
//
// PowerState, StorageState, Pin, DiskPath and Unplug are for tests that
// observe or disturb the device.
type Device struct {
	serial   string
	diskPath string

	opMu sync.Mutex // serialises the operations that start or stop the board

	mu       sync.Mutex
	name     string
	tags     []string
	opts     Options
	power    bool
	mode     bootMode
	storage  driver.StorageMode
	pins     map[string]driver.PinLevel
	closed   bool
	gone     bool
	con      *console
	run      *run // the running board, or nil
	activity activity
	input    []byte // host input the board has not taken yet
}

// Compile-time checks of the capabilities.
var (
	_ driver.Device      = (*Device)(nil)
	_ driver.Power       = (*Device)(nil)
	_ driver.ForcePower  = (*Device)(nil)
	_ driver.Rescuer     = (*Device)(nil)
	_ driver.Resetter    = (*Device)(nil)
	_ driver.StorageMux  = (*Device)(nil)
	_ driver.ConsolePort = (*Device)(nil)
	_ driver.Pins        = (*Device)(nil)
	_ driver.PowerMeter  = (*Device)(nil)
	_ driver.Configurer  = (*Device)(nil)
	_ driver.Closer      = (*Device)(nil)
)

// NewDevice returns a simulated device, powered off, with its storage off
// and its pins floating. Its disk is the file diskPath, created sparse with
// o.DiskSize bytes if missing (an existing file is used as it is). o.Devices
// and o.Dir are ignored. The device is not tied to any driver's discovery.
//
// In a testing/synctest bubble, power the device on and open its console
// inside the bubble.
func NewDevice(name, serial string, tags []string, diskPath string, o Options) (*Device, error) {
	o = o.withDefaults()
	if err := o.check(); err != nil {
		return nil, err
	}
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	if err := ensureDisk(diskPath, o.DiskSize); err != nil {
		return nil, err
	}
	pins := map[string]driver.PinLevel{}
	for _, p := range pinNames {
		pins[p] = driver.PinFloating
	}
	return &Device{
		serial:   serial,
		diskPath: diskPath,
		name:     name,
		tags:     slices.Clone(tags),
		opts:     o,
		storage:  driver.StorageOff,
		pins:     pins,
	}, nil
}

func checkName(name string) error {
	if name == "" || strings.ContainsAny(name, " \t\r\n/\\") {
		return fmt.Errorf("device name %q is empty or holds white space or slashes", name)
	}
	return nil
}

// Name returns the device's name (its host name on the console).
func (d *Device) Name() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.name
}

// Serial returns the device's serial number.
func (d *Device) Serial() string { return d.serial }

// Tags returns the device's tags.
func (d *Device) Tags() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.tags)
}

// Driver returns DriverName.
func (d *Device) Driver() string { return DriverName }

// DiskPath returns the path of the file that holds the device's storage,
// whatever the storage multiplexer's position.
func (d *Device) DiskPath() string { return d.diskPath }

// PowerState reports whether the device's power is on.
func (d *Device) PowerState() PowerState {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.power {
		return PowerStateOn
	}
	return PowerStateOff
}

// StorageState returns the storage multiplexer's position.
func (d *Device) StorageState() driver.StorageMode {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.storage
}

// Pin returns the level a control pin is driven to ("" for an unknown pin).
func (d *Device) Pin(name string) driver.PinLevel {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pins[name]
}

// Usable reports whether the device is neither closed nor unplugged.
func (d *Device) Usable() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.closed && !d.gone
}

// checkLocked returns the error of op on a closed or gone device.
func (d *Device) checkLocked(op string) error {
	switch {
	case d.gone:
		return fmt.Errorf("%s: %s: %w", d.name, op, ErrGone)
	case d.closed:
		return fmt.Errorf("%s: %s: %w", d.name, op, ErrClosed)
	}
	return nil
}

// begin checks that op may run: ctx is live and the device usable.
func (d *Device) begin(ctx context.Context, op string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %s: %w", d.name, op, err)
	}
	return d.checkLocked(op)
}

// startLocked starts the board goroutine in d.mode, unless the reset pin
// holds the board in reset. d.power must be true and no board running.
func (d *Device) startLocked() {
	if d.pins[PinReset] == driver.PinLow {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{cancel: cancel, done: make(chan struct{}), inReady: make(chan struct{}, 1)}
	d.run = r
	d.input = nil
	d.activity = actBooting
	b := newBoard(d, r, ctx)
	go b.main(d.mode)
}

// stop stops the board goroutine, if one runs, and waits until it has
// returned or ctx ends.
func (d *Device) stop(ctx context.Context, op string) error {
	d.mu.Lock()
	r := d.run
	d.run = nil
	d.input = nil
	name := d.name
	d.mu.Unlock()
	if r == nil {
		return nil
	}
	r.cancel()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: %s: waiting for the board to stop: %w", name, op, ctx.Err())
	}
}

// powerOn switches the power on and boots in mode; restart power-cycles a
// board that is already on, otherwise it is left running.
func (d *Device) powerOn(ctx context.Context, op string, mode bootMode, restart bool) error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	if err := d.begin(ctx, op); err != nil {
		return err
	}
	if restart {
		if err := d.stop(ctx, op); err != nil {
			return err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mode = mode
	if d.power && d.run != nil {
		return nil
	}
	d.power = true
	if d.run == nil {
		d.startLocked()
	}
	return nil
}

// powerOff switches the power off and waits for the board to stop.
func (d *Device) powerOff(ctx context.Context, op string) error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	if err := d.begin(ctx, op); err != nil {
		return err
	}
	d.mu.Lock()
	d.power = false
	d.mu.Unlock()
	return d.stop(ctx, op)
}

// PowerOn powers the device on; the board boots from its disk in a
// goroutine of its own. Powering on a device that is on does nothing.
func (d *Device) PowerOn(ctx context.Context) error {
	return d.powerOn(ctx, "power on", bootNormal, false)
}

// PowerOff powers the device off. When it returns the board has stopped:
// it prints nothing more and ignores input.
func (d *Device) PowerOff(ctx context.Context) error { return d.powerOff(ctx, "power off") }

// ForceOn applies power; for the simulated board it is the same as PowerOn.
func (d *Device) ForceOn(ctx context.Context) error {
	return d.powerOn(ctx, "force on", bootNormal, false)
}

// ForceOff cuts power; for the simulated board it is the same as PowerOff.
func (d *Device) ForceOff(ctx context.Context) error { return d.powerOff(ctx, "force off") }

// Rescue power-cycles the device into its rescue mode: the firmware prints
// a rescue banner and waits at a "rescue> " prompt instead of booting.
func (d *Device) Rescue(ctx context.Context) error {
	return d.powerOn(ctx, "rescue", bootRescue, true)
}

// Reset reboots a powered board: it starts again from the firmware and
// boots from its disk. It fails with an error wrapping ErrPoweredOff when
// the power is off.
func (d *Device) Reset(ctx context.Context) error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	if err := d.begin(ctx, "reset"); err != nil {
		return err
	}
	d.mu.Lock()
	on, name := d.power, d.name
	d.mu.Unlock()
	if !on {
		return fmt.Errorf("%s: reset: %w; power it on first", name, ErrPoweredOff)
	}
	if err := d.stop(ctx, "reset"); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mode = bootNormal
	if d.power && d.run == nil {
		d.startLocked()
	}
	return nil
}

// SetStorage moves the storage multiplexer. While the board is on and the
// storage is not at StorageDUT, the board cannot read its disk.
func (d *Device) SetStorage(ctx context.Context, mode driver.StorageMode) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: set storage: %w", d.name, err)
	}
	if err := d.checkLocked("set storage"); err != nil {
		return err
	}
	switch mode {
	case driver.StorageOff, driver.StorageHost, driver.StorageDUT:
	default:
		return fmt.Errorf("%s: set storage: %w", d.name, invalidf("unknown storage mode %q: use off, host or dut", mode))
	}
	d.storage = mode
	return nil
}

// BlockTarget returns the path of the disk file while the storage is at
// StorageHost; otherwise the error wraps ErrStorageNotOnHost.
func (d *Device) BlockTarget(ctx context.Context) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("%s: block target: %w", d.name, err)
	}
	if err := d.checkLocked("block target"); err != nil {
		return "", err
	}
	if d.storage != driver.StorageHost {
		return "", fmt.Errorf("%s: block target: %w (the storage mux is at %s); set storage to host first", d.name, ErrStorageNotOnHost, d.storage)
	}
	return d.diskPath, nil
}

// OpenConsole opens the device's serial console. See the package
// documentation for how the stream behaves. Only one console can be open at
// a time: while one is, OpenConsole fails with an error wrapping
// ErrConsoleBusy.
func (d *Device) OpenConsole(ctx context.Context) (io.ReadWriteCloser, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: open console: %w", d.name, err)
	}
	if err := d.checkLocked("open console"); err != nil {
		return nil, err
	}
	if d.con != nil {
		return nil, fmt.Errorf("%s: open console: %w: it is already open; close the other stream first", d.name, ErrConsoleBusy)
	}
	d.con = newConsole(d, d.name)
	return d.con, nil
}

// detachConsole forgets c if it is the open console.
func (d *Device) detachConsole(c *console) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.con == c {
		d.con = nil
	}
}

// emit sends board output to the open console, if any, as long as r is the
// running board. Output nobody reads is lost, as on a real serial line.
func (d *Device) emit(r *run, p []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.run != r || d.con == nil {
		return
	}
	d.con.push(p)
}

// consoleInput queues bytes the host wrote for the board; while no board
// runs they are dropped.
func (d *Device) consoleInput(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkLocked("console write"); err != nil {
		return 0, err
	}
	if d.run == nil {
		return len(p), nil
	}
	d.input = append(d.input, p...)
	select {
	case d.run.inReady <- struct{}{}:
	default:
	}
	return len(p), nil
}

// takeInput returns the input queued for r and empties the queue.
func (d *Device) takeInput(r *run) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.run != r {
		return nil
	}
	in := d.input
	d.input = nil
	return in
}

// setActivity records what board r is doing, for the power meter.
func (d *Device) setActivity(r *run, a activity) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.run == r {
		d.activity = a
	}
}

// bootConfig is what a board reads from its device when it boots.
type bootConfig struct {
	host     string
	serial   string
	bootTime int64 // nanoseconds
	users    map[string]string
}

func (d *Device) bootConfig() bootConfig {
	d.mu.Lock()
	defer d.mu.Unlock()
	return bootConfig{host: d.name, serial: d.serial, bootTime: int64(d.opts.BootTime), users: maps.Clone(d.opts.Users)}
}

// PinNames returns the pins SetPin accepts: "reset", "a", "b", "c", "d".
func (d *Device) PinNames() []string { return slices.Clone(pinNames) }

// SetPin drives a control pin. Driving "reset" low holds a powered board in
// reset (it stops); releasing it (high or floating) boots the board again.
// The other pins are recorded (see Pin) but do not affect the board.
func (d *Device) SetPin(ctx context.Context, pin string, level driver.PinLevel) error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	if err := d.begin(ctx, "set pin"); err != nil {
		return err
	}
	switch level {
	case driver.PinLow, driver.PinHigh, driver.PinFloating:
	default:
		return fmt.Errorf("%s: set pin %s: %w", d.Name(), pin, invalidf("unknown level %q: use low, high or z", level))
	}
	if !slices.Contains(pinNames, pin) {
		return fmt.Errorf("%s: set pin: %w", d.Name(), invalidf("unknown pin %q: the pins are %s", pin, strings.Join(pinNames, ", ")))
	}
	d.mu.Lock()
	wasHeld := d.pins[PinReset] == driver.PinLow
	d.pins[pin] = level
	held := d.pins[PinReset] == driver.PinLow
	power := d.power
	d.mu.Unlock()
	switch {
	case pin != PinReset || held == wasHeld || !power:
	case held:
		return d.stop(ctx, "set pin reset")
	default:
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.power && d.run == nil {
			d.startLocked()
		}
	}
	return nil
}

// ReadPower reads the power meter: 0 W while the power is off, a few watts
// while on, depending on what the board does (booting, idle at a prompt,
// busy running a command, halted, held in reset).
func (d *Device) ReadPower(ctx context.Context) (driver.PowerReading, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return driver.PowerReading{}, fmt.Errorf("%s: read power: %w", d.name, err)
	}
	if err := d.checkLocked("read power"); err != nil {
		return driver.PowerReading{}, err
	}
	if !d.power {
		return driver.PowerReading{}, nil
	}
	amps := ampsInReset
	if d.run != nil {
		amps = map[activity]float64{actBooting: ampsBooting, actIdle: ampsIdle, actBusy: ampsBusy, actHalted: ampsHalted}[d.activity]
	}
	return driver.PowerReading{Volts: supplyVolts, Amps: amps, Watts: amps * supplyVolts}, nil
}

// Config returns the board's stored configuration: "name", "serial" and
// "tags" (comma-separated).
func (d *Device) Config(ctx context.Context) (map[string]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: config: %w", d.name, err)
	}
	if err := d.checkLocked("config"); err != nil {
		return nil, err
	}
	return map[string]string{"name": d.name, "serial": d.serial, "tags": strings.Join(d.tags, ",")}, nil
}

// SetConfig changes the board's "name" (which is also its host name from
// the next boot on) or its "tags" (a comma-separated list). The change is
// kept in memory only.
func (d *Device) SetConfig(ctx context.Context, key, value string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: set config %s: %w", d.name, key, err)
	}
	if err := d.checkLocked("set config " + key); err != nil {
		return err
	}
	switch key {
	case "name":
		if err := checkName(value); err != nil {
			return fmt.Errorf("%s: set config name: %w", d.name, invalid(err))
		}
		d.name = value
	case "tags":
		tags, err := driver.ParseTags(value)
		if err != nil {
			return fmt.Errorf("%s: set config tags: %w", d.name, invalid(err))
		}
		d.tags = tags
	case "serial":
		return fmt.Errorf("%s: set config: %w", d.name, invalidf("the serial number is read-only"))
	default:
		return fmt.Errorf("%s: set config: %w", d.name, invalidf("unknown key %q: the keys are name and tags", key))
	}
	return nil
}

// Close powers the device off, waits for the board to stop and closes the
// open console (a pending Read returns an error wrapping both ErrClosed and
// os.ErrClosed). Later
// operations fail with errors wrapping ErrClosed; a driver's next Discover
// returns a fresh device in its place. Closing twice is not an error.
func (d *Device) Close() error {
	return d.shutdown(func() {
		d.closed = true
		if d.con != nil {
			d.con.end(fmt.Errorf("%s: console: %w (%w)", d.name, ErrClosed, os.ErrClosed), false)
		}
	})
}

// Unplug simulates the device vanishing: the board stops, the open console
// ends (Read returns what the board printed before, then an error wrapping
// ErrGone) and every later operation fails with an error wrapping ErrGone.
// A driver's next Discover returns a fresh device in its place.
func (d *Device) Unplug() {
	_ = d.shutdown(func() {
		d.gone = true
		if d.con != nil {
			d.con.end(fmt.Errorf("%s: console: %w", d.name, ErrGone), true)
		}
	})
}

// shutdown stops the board for good and then runs mark with d.mu held.
func (d *Device) shutdown(mark func()) error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	d.mu.Lock()
	if d.closed || d.gone {
		d.mu.Unlock()
		return nil
	}
	d.power = false
	d.mu.Unlock()
	_ = d.stop(context.Background(), "close")
	d.mu.Lock()
	defer d.mu.Unlock()
	mark()
	d.con = nil
	return nil
}
