// Package driver defines what a device under test (DUT) can do and how drivers
// make devices known to the harness.
//
// It plays the role database/sql/driver plays for database/sql: a driver
// package (the simulated DUT in testfixtures/sim, the QEMU virtual DUT, the
// DUTlink board) implements [Driver] and registers it from an init function
// with [Register]; the harness finds it by name with [Lookup] and never imports
// a driver itself. A test selects its drivers with blank imports:
//
//	import _ "github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
//
// A [Device] implements only the capabilities its hardware has, each a small
// interface ([Power], [ForcePower], [Rescuer], [StorageMux], [ConsolePort],
// [Resetter], [Pins], [PowerMeter], [Configurer]); callers ask for one with a
// type assertion or with [As], which explains what is missing when a device
// lacks it.
//
// Every method that touches hardware takes a [context.Context] and must return
// once it is done, whatever the hardware does.
//
// This package imports only the standard library.
package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
)

// Device is one device under test, opened by its driver ([Driver.Open]).
//
// Name and Serial identify it; Tags are the labels it can be selected by. The
// capability interfaces of this package say what else it can do.
type Device interface {
	// Name is the device's name, unique within its driver (e.g. "sim-0",
	// "jp-1a2b3c4d").
	Name() string
	// Serial is the device's serial number, or "" when it has none.
	Serial() string
	// Tags are the labels the device carries (e.g. "orin", "arm64").
	Tags() []string
	// Driver is the name of the driver that found the device.
	Driver() string
}

// Driver discovers devices of one kind and opens them.
//
// Discovery is apart from use: Discover only describes the devices present
// (it changes nothing on them and holds nothing open once it returns), and a
// device is opened with Open after its lease is held, so that no two users
// ever drive one device. Every Open returns a fresh [Device] value that owns
// the device's ports until it is closed ([Closer]).
type Driver interface {
	// Name is the name the driver registers under (DUT_DRIVER selects it).
	Name() string
	// Discover describes the devices present now. A device that cannot be
	// used now (a board in firmware-update mode, a port another process
	// holds) is described with its [Info.Problems]; it must not hide the
	// other devices. The error is for the driver itself failing (a bad
	// configuration, which wraps [ErrBadConfig]; a missing tool).
	Discover(ctx context.Context) ([]Info, error)
	// Open opens the device info describes (as Discover returned it). A
	// device that is no longer there is an error wrapping [ErrNoDevice]
	// or [ErrGone]; one held outside this process, [ErrBusy].
	Open(ctx context.Context, info Info) (Device, error)
}

// Info describes a device as [Driver.Discover] found it, without opening it:
// what selection, listing and leasing need.
type Info struct {
	// Driver is the name of the driver that found the device.
	Driver string `json:"driver"`
	// Name is the device's name, unique within its driver.
	Name string `json:"name"`
	// Serial is the device's serial number, or "".
	Serial string `json:"serial,omitempty"`
	// Tags are the labels the device can be selected by.
	Tags []string `json:"tags"`
	// Capabilities name what the device can do, as [CapabilitiesOf] names
	// them ("power", "storage", "console", ...).
	Capabilities []string `json:"capabilities"`
	// Facts are what the driver knows about the device beyond its name,
	// in the order to show them (firmware version, transport, ...).
	Facts []Fact `json:"facts,omitempty"`
	// Problems say, in words that say what to do, what is wrong with the
	// device now ("tty /dev/ttyACM0 held by pid 812 (minicom)", "board in
	// DFU mode"). A device with problems may still be usable.
	Problems []string `json:"problems,omitempty"`
	// Unusable marks a device that its Problems keep from use: it is
	// listed, but never selected.
	Unusable bool `json:"unusable,omitempty"`
	// Ephemeral, when set, says why the device's state ends with the
	// process that opened it (see [Ephemeral]).
	Ephemeral string `json:"ephemeral,omitempty"`
}

// Fact is one thing a driver knows about a device, such as its firmware.
type Fact struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Key is the key the device is leased under: "driver/name".
func (i Info) Key() string { return i.Driver + "/" + i.Name }

// Fact returns the value of the fact named key, or "".
func (i Info) Fact(key string) string {
	for _, f := range i.Facts {
		if f.Key == key {
			return f.Value
		}
	}
	return ""
}

// String renders the device for messages: name, serial and tags, as
// [Describe] does for a Device.
func (i Info) String() string { return describe(i.Name, i.Serial, i.Tags) }

// InfoOf describes an open device: its name, serial, tags, driver,
// capabilities and, for an [Ephemeral] device, why its state ends with the
// process. Drivers use it to describe the devices they find.
func InfoOf(dev Device) Info {
	info := Info{Driver: dev.Driver(), Name: dev.Name(), Serial: dev.Serial(), Tags: slices.Clone(dev.Tags()), Capabilities: CapabilitiesOf(dev)}
	if info.Tags == nil {
		info.Tags = []string{}
	}
	if e, ok := dev.(Ephemeral); ok {
		info.Ephemeral = e.Ephemeral()
	}
	return info
}

// Capable is implemented by a device whose type has the methods of
// capabilities it may not offer: a remote device has every capability's
// methods and offers what its exporter's device has. Capabilities names the
// ones it offers (as [CapabilitiesOf] names them); [Has], [As] and
// [CapabilitiesOf] go by it.
type Capable interface {
	Capabilities() []string
}

// capabilities are the capability interfaces, by name, in the fixed order.
var capabilities = []struct {
	name string
	typ  reflect.Type
}{
	{"power", reflect.TypeFor[Power]()},
	{"force_power", reflect.TypeFor[ForcePower]()},
	{"rescue", reflect.TypeFor[Rescuer]()},
	{"reset", reflect.TypeFor[Resetter]()},
	{"storage", reflect.TypeFor[StorageMux]()},
	{"console", reflect.TypeFor[ConsolePort]()},
	{"pins", reflect.TypeFor[Pins]()},
	{"meter", reflect.TypeFor[PowerMeter]()},
	{"config", reflect.TypeFor[Configurer]()},
}

// CapabilitiesOf names the capabilities v implements, in a fixed order:
// "power", "force_power", "rescue", "reset", "storage", "console", "pins",
// "meter", "config". v may be a nil pointer of a device type, which lets
// a driver describe devices it has not opened. A [Capable] v names its own
// (those of them it implements).
func CapabilitiesOf(v any) []string {
	caps := []string{}
	if v == nil {
		return caps
	}
	t := reflect.TypeOf(v)
	for _, c := range capabilities {
		if t.Implements(c.typ) && offers(v, c.name) {
			caps = append(caps, c.name)
		}
	}
	return caps
}

// offers says whether v offers the capability name: every one it
// implements, unless it is [Capable].
func offers(v any, name string) (ok bool) {
	c, capable := v.(Capable)
	if !capable {
		return true
	}
	defer func() {
		if recover() != nil {
			ok = true // a nil pointer of a Capable type: described by its methods
		}
	}()
	return slices.Contains(c.Capabilities(), name)
}

// Has returns dev's capability C and whether dev offers it: a type
// assertion that a [Capable] device's own list narrows. Use it, not a type
// assertion, to ask a device for a capability.
func Has[C any](dev any) (C, bool) {
	c, ok := dev.(C)
	if !ok {
		return c, false
	}
	if _, capable := dev.(Capable); capable {
		t := reflect.TypeFor[C]()
		for _, k := range capabilities {
			if k.typ == t && !offers(dev, k.name) {
				var zero C
				return zero, false
			}
		}
	}
	return c, true
}

// Power switches a device's power.
type Power interface {
	// PowerOn powers the device on, running the board's power-on sequence.
	PowerOn(ctx context.Context) error
	// PowerOff powers the device off, running the board's power-off sequence.
	PowerOff(ctx context.Context) error
}

// ForcePower cuts or applies power directly, without the board's sequences.
type ForcePower interface {
	// ForceOn applies power without running the power-on sequence.
	ForceOn(ctx context.Context) error
	// ForceOff cuts power without running the power-off sequence.
	ForceOff(ctx context.Context) error
}

// Rescuer powers a device on into its rescue (recovery, flashing) mode.
type Rescuer interface {
	Rescue(ctx context.Context) error
}

// Resetter pulses a device's reset line.
type Resetter interface {
	Reset(ctx context.Context) error
}

// StorageMode is where a storage multiplexer connects the DUT's storage.
type StorageMode string

// The positions of a storage multiplexer.
const (
	// StorageOff disconnects the storage from both sides.
	StorageOff StorageMode = "off"
	// StorageHost connects the storage to the test host, which sees it as
	// the block target returned by [StorageMux.BlockTarget].
	StorageHost StorageMode = "host"
	// StorageDUT connects the storage to the device under test.
	StorageDUT StorageMode = "dut"
)

// ParseStorageMode parses "off", "host" or "dut" (case-insensitive). Any
// other text is an error wrapping [ErrInvalidArgument].
func ParseStorageMode(s string) (StorageMode, error) {
	switch m := StorageMode(strings.ToLower(strings.TrimSpace(s))); m {
	case StorageOff, StorageHost, StorageDUT:
		return m, nil
	}
	return "", Refine(ErrInvalidArgument, fmt.Sprintf("unknown storage mode %q: use off, host or dut", s))
}

// StorageMux switches the DUT's storage between the DUT and the test host.
type StorageMux interface {
	// SetStorage moves the multiplexer. When it returns after StorageHost,
	// the block target is ready to be opened.
	SetStorage(ctx context.Context, mode StorageMode) error
	// BlockTarget returns the path of the host-side block device (or, for
	// virtual devices, regular file) that holds the DUT's storage while
	// the multiplexer is in StorageHost. It fails when the storage is not
	// connected to the host.
	BlockTarget(ctx context.Context) (string, error)
}

// TargetChecker may be implemented by a [StorageMux] whose block target
// could be confused with another disk of the host (a USB disk found by
// appearance, say): the flash engine calls CheckTarget on the opened target
// before it writes a byte, and refuses the target when it returns an error.
// Checking the open file, not a path, leaves no window in which another
// device could take the path's place.
type TargetChecker interface {
	CheckTarget(f *os.File) error
}

// ConsolePort gives access to the DUT's serial console.
type ConsolePort interface {
	// OpenConsole opens the console. The harness opens it once, before
	// power-on, and reads it until the device is released: a driver must
	// keep the returned stream usable across power cycles. Close ends any
	// pending Read.
	OpenConsole(ctx context.Context) (io.ReadWriteCloser, error)
}

// PinLevel is the level a control pin is driven to.
type PinLevel string

// The levels of a control pin.
const (
	PinLow      PinLevel = "low"
	PinHigh     PinLevel = "high"
	PinFloating PinLevel = "z"
)

// Pins drives a device's control pins (boot-mode straps, buttons).
type Pins interface {
	// PinNames lists the pins SetPin accepts.
	PinNames() []string
	// SetPin drives one pin.
	SetPin(ctx context.Context, pin string, level PinLevel) error
}

// PowerReading is one reading of a power meter.
type PowerReading struct {
	Volts, Amps, Watts float64
}

// PowerMeter measures the power the DUT draws.
type PowerMeter interface {
	ReadPower(ctx context.Context) (PowerReading, error)
}

// Configurer reads and writes the configuration a board stores about itself
// (its name, tags, power sequences).
type Configurer interface {
	Config(ctx context.Context) (map[string]string, error)
	SetConfig(ctx context.Context, key, value string) error
}

// Closer is implemented by devices that hold resources (open ports,
// processes) which must be released when the harness is done with them.
type Closer interface {
	Close() error
}

// Ephemeral is implemented by devices whose state does not outlive the
// process that opened them: the simulated DUT and the QEMU virtual DUT
// keep their power, storage multiplexer, pins, console and configuration in
// that process (a QEMU VM is killed when it exits); only their disk files
// are shared. A test, which holds its device for its whole run, is not
// affected; a tool that runs one process per step, as the dut command does,
// uses it to warn that what a step switched ends with that step.
//
// Ephemeral returns why the device's state ends with the process, as a
// sentence naming the device, e.g. "sim-0 is a simulated device: its
// power, storage, pins and config live only in the process that opened
// it". An empty string means the state does outlive the process after all
// (a driver whose devices differ by configuration).
type Ephemeral interface {
	Ephemeral() string
}

// As returns dev's capability C, or an error wrapping [ErrUnsupported] that
// names the device, its driver and the capability it lacks.
func As[C any](dev Device) (C, error) {
	if c, ok := Has[C](dev); ok {
		return c, nil
	}
	var zero C
	name := fmt.Sprintf("%T", (*C)(nil))
	name = strings.TrimPrefix(name, "*")
	return zero, fmt.Errorf("device %s (driver %s) has no %s: %w", dev.Name(), dev.Driver(), name, ErrUnsupported)
}

// Describe renders a device for messages: name, serial and tags.
func Describe(dev Device) string { return describe(dev.Name(), dev.Serial(), dev.Tags()) }

func describe(name, serial string, tags []string) string {
	var b strings.Builder
	b.WriteString(name)
	if serial != "" {
		fmt.Fprintf(&b, " (serial %s)", serial)
	}
	if len(tags) > 0 {
		fmt.Fprintf(&b, " [%s]", strings.Join(tags, ","))
	}
	return b.String()
}

var (
	registryMu sync.RWMutex
	registry   = map[string]Driver{}
)

// Register makes a driver available under d.Name(). It is meant to be called
// from the driver package's init function and panics when the name is empty
// or already taken, as database/sql.Register does.
func Register(d Driver) {
	registryMu.Lock()
	defer registryMu.Unlock()
	name := d.Name()
	if name == "" {
		panic("driver: Register called with an empty driver name")
	}
	if _, dup := registry[name]; dup {
		panic("driver: Register called twice for driver " + name)
	}
	registry[name] = d
}

// ErrUnknownDriver is returned (wrapped) by [Lookup] for a name no driver
// registered.
var ErrUnknownDriver = errors.New("unknown driver")

// Lookup returns the driver registered under name.
func Lookup(name string) (Driver, error) {
	registryMu.RLock()
	d, ok := registry[name]
	registryMu.RUnlock()
	if ok {
		return d, nil
	}
	known := Drivers()
	if len(known) == 0 {
		return nil, fmt.Errorf("%w %q: no driver is registered; import one with a blank import, e.g. import _ \"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim\"", ErrUnknownDriver, name)
	}
	return nil, fmt.Errorf("%w %q: registered drivers are %s (a driver registers when its package is imported, e.g. with a blank import)", ErrUnknownDriver, name, strings.Join(known, ", "))
}

// Drivers returns the names of the registered drivers, sorted.
func Drivers() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
