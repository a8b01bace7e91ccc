package dutlink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

// DriverName is the name the driver registers under (DUT_DRIVER=dutlink).
const DriverName = "dutlink"

// discoverTimeout bounds reading one board's config during discovery.
const discoverTimeout = 10 * time.Second

// Driver discovers DUTlink boards and opens them.
//
// Discover only reads each board's name and tags (over its control
// transport, or from what an earlier read remembered when another process
// holds the board); Open, called once the board's lease is held, returns a
// *Device that owns the board until it is closed. A process has one open
// Device per board: the driver keeps them so that a discovery never talks
// to a board this process is using, and describes it from the open device
// instead.
type Driver struct {
	fromEnv bool
	opts    Options

	mu   sync.Mutex
	open map[string]*Device // by serial: the boards this process has open
}

// New returns a driver configured by o instead of the environment. It is
// not registered: hand it to the harness or to package lease as a driver
// value, or use it directly in programs and tests.
func New(o Options) *Driver {
	return &Driver{opts: o, open: map[string]*Device{}}
}

func init() {
	driver.Register(&Driver{fromEnv: true, open: map[string]*Device{}})
}

// Name returns DriverName.
func (dr *Driver) Name() string { return DriverName }

// options returns the options in force for this call.
func (dr *Driver) options() (Options, error) {
	o := dr.opts
	if dr.fromEnv {
		var err error
		if o, err = OptionsFromEnv(); err != nil {
			return Options{}, fmt.Errorf("%w: %w", driver.ErrBadConfig, err)
		}
	}
	return o.withDefaults(), nil
}

// boardState is what an open Device keeps about its board: the tty (shared
// by the console and shell exchanges), the storage state and the last
// config read.
type boardState struct {
	mux  *ttyMux
	opMu sync.Mutex // one hardware operation at a time

	mu      sync.Mutex
	storage driver.StorageMode
	disk    *disk
	cfg     map[string]string // last config read
	cut     []string          // keys the shell's get-config reply had no room for
	closed  bool
	console io.Closer // the console stream handed out, closed with the device
}

func newBoardState(b Board, o Options) *boardState {
	return &boardState{mux: newTTYMux(b.TTY, o.OpenPort), storage: driver.StorageOff}
}

// Scan is the result of [Driver.Scan].
type Scan struct {
	// Devices describe the usable boards, sorted by serial.
	Devices []driver.Info
	// Problems are the boards found but left out (DFU mode, vanished,
	// tty held elsewhere with no name remembered, unreadable config),
	// each with the reason.
	Problems []Problem
}

// Scan finds the boards in sysfs and reads each one's name and tags from
// its config. A board that cannot be used is reported in Problems and does
// not hide the others; the error is only for sysfs itself being unreadable
// or a bad configuration.
func (dr *Driver) Scan(ctx context.Context) (*Scan, error) {
	o, err := dr.options()
	if err != nil {
		return nil, err
	}
	boards, problems, err := findBoards(o.SysfsRoot, o.DevRoot)
	if err != nil {
		return nil, err
	}
	s := &Scan{Problems: problems}
	for _, b := range boards {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("dutlink: discover: %w", err)
		}
		info, err := dr.describe(ctx, b, o)
		if err != nil && ctx.Err() != nil {
			return nil, fmt.Errorf("dutlink: discover: serial %s: %w", b.Serial, err)
		}
		if err != nil {
			s.Problems = append(s.Problems, Problem{Where: "serial " + b.Serial + " (" + b.Port + ")", Serial: b.Serial, Err: err})
			continue
		}
		s.Devices = append(s.Devices, info)
	}
	return s, nil
}

// Discover describes the usable boards and, marked unusable, the boards
// found but left out (see [Driver.Scan]).
func (dr *Driver) Discover(ctx context.Context) ([]driver.Info, error) {
	s, err := dr.Scan(ctx)
	if err != nil {
		return nil, err
	}
	infos := slices.Clone(s.Devices)
	for _, p := range s.Problems {
		name := p.Where
		if p.Serial != "" {
			name = "jp-" + p.Serial
		}
		infos = append(infos, driver.Info{
			Driver: DriverName, Name: name, Serial: p.Serial, Tags: []string{},
			Capabilities: driver.CapabilitiesOf((*Device)(nil)),
			Problems:     []string{p.String()}, Unusable: true,
		})
	}
	return infos, nil
}

// describe reads board b's config and describes it; a board this process
// has open is described from its device, without a word to the board.
func (dr *Driver) describe(ctx context.Context, b Board, o Options) (driver.Info, error) {
	dr.mu.Lock()
	open := dr.open[b.Serial]
	dr.mu.Unlock()
	if open != nil {
		info := open.info()
		info.Problems = append(info.Problems, "open in this process (its holder is using it)")
		return info, nil
	}
	d, busy, err := dr.device(ctx, b, o, newBoardState(b, o))
	if err != nil {
		return driver.Info{}, err
	}
	info := d.info()
	if busy != nil {
		info.Problems = append(info.Problems, fmt.Sprintf("its config could not be read now (%v): name and tags are those last read", busy))
	}
	return info, nil
}

// info describes the device.
func (d *Device) info() driver.Info {
	info := driver.InfoOf(d)
	info.Facts = []driver.Fact{
		{Key: "firmware", Value: d.board.Version.String()},
		{Key: "transport", Value: string(d.tr.kind())},
		{Key: "port", Value: d.board.Port},
		{Key: "tty", Value: d.board.TTY},
	}
	if err := d.ConfigProblem(); err != nil {
		info.Problems = append(info.Problems, err.Error())
	}
	if users := ttyUsers(d.board.TTY); len(users) > 0 {
		info.Problems = append(info.Problems, fmt.Sprintf("%s also has %s open and takes part of the DUT's output: stop it", strings.Join(users, ", "), d.board.TTY))
	}
	return info
}

// Open opens the board info describes (found again by its serial): the
// returned *Device owns the board until it is closed. A board that is no
// longer there is an error wrapping driver.ErrNoDevice; one this process has
// open already, driver.ErrBusy.
func (dr *Driver) Open(ctx context.Context, info driver.Info) (driver.Device, error) {
	d, err := dr.open1(ctx, func(b Board, _ string) bool {
		return info.Serial != "" && b.Serial == info.Serial || info.Serial == "" && "jp-"+b.Serial == info.Name
	}, info.String())
	if err != nil {
		return nil, err
	}
	return d, nil
}

// OpenBoard opens the board with the given name or serial, as [Driver.Open]
// does: for programs that use the dutlink package directly.
func (dr *Driver) OpenBoard(ctx context.Context, nameOrSerial string) (*Device, error) {
	s, err := dr.Scan(ctx)
	if err != nil {
		return nil, err
	}
	for _, d := range s.Devices {
		if d.Name == nameOrSerial || d.Serial == nameOrSerial {
			return dr.open1(ctx, func(b Board, _ string) bool { return b.Serial == d.Serial }, d.String())
		}
	}
	var why []string
	for _, p := range s.Problems {
		why = append(why, p.String())
	}
	msg := fmt.Sprintf("dutlink: no board named %q", nameOrSerial)
	if len(s.Devices) > 0 {
		names := make([]string, len(s.Devices))
		for i, d := range s.Devices {
			names[i] = d.String()
		}
		msg += "; found " + strings.Join(names, "; ")
	}
	if len(why) > 0 {
		msg += "; unusable: " + strings.Join(why, "; ")
	}
	return nil, fmt.Errorf("%s: %w", msg, driver.ErrNoDevice)
}

// open1 opens the first board match takes.
func (dr *Driver) open1(ctx context.Context, match func(Board, string) bool, what string) (*Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dutlink: open %s: %w", what, err)
	}
	o, err := dr.options()
	if err != nil {
		return nil, err
	}
	boards, _, err := findBoards(o.SysfsRoot, o.DevRoot)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(boards, func(b Board) bool { return match(b, "") })
	if i < 0 {
		return nil, fmt.Errorf("dutlink: open %s: the board is no longer there (unplugged?): %w", what, driver.ErrNoDevice)
	}
	b := boards[i]
	dr.mu.Lock()
	if dr.open[b.Serial] != nil {
		dr.mu.Unlock()
		return nil, fmt.Errorf("dutlink: open %s: this process has it open already; close that device first: %w", what, ErrBusy)
	}
	st := newBoardState(b, o)
	placeholder := &Device{st: st}
	dr.open[b.Serial] = placeholder // claim the board while its config is read
	dr.mu.Unlock()
	d, busy, err := dr.device(ctx, b, o, st)
	dr.mu.Lock()
	defer dr.mu.Unlock()
	if err == nil && busy != nil {
		err = fmt.Errorf("reading its config: %w", busy)
	}
	if err != nil {
		delete(dr.open, b.Serial)
		return nil, fmt.Errorf("dutlink: open %s: %w", what, err)
	}
	dr.open[b.Serial] = d
	return d, nil
}

// closed forgets the open device d.
func (dr *Driver) closed(d *Device) {
	dr.mu.Lock()
	defer dr.mu.Unlock()
	if dr.open[d.board.Serial] == d {
		delete(dr.open, d.board.Serial)
	}
}

func (dr *Driver) transportFor(o Options, b Board, st *boardState) (transport, error) {
	shell := &shellTransport{mux: st.mux}
	usbOK := b.VendorInterface >= 0 && b.Version.AtLeast(FirstUSBVersion)
	switch o.Transport {
	case TransportShell:
		return shell, nil
	case TransportUSB:
		if !usbOK {
			return nil, fmt.Errorf("%w: board %s runs firmware %s, which has no vendor interface (0.08 and later have one): update its firmware or use %s=shell", ErrNoUSB, b.Serial, b.Version, EnvTransport)
		}
		if o.OpenUSB == nil {
			return nil, fmt.Errorf("%w: this program was built without cgo/libusb: rebuild with CGO_ENABLED=1 and libusb-1.0-0-dev installed, or use %s=shell", ErrNoUSB, EnvTransport)
		}
		return &usbTransport{board: b, open: o.OpenUSB}, nil
	}
	if usbOK && o.OpenUSB != nil {
		return &usbTransport{board: b, open: o.OpenUSB}, nil
	}
	return shell, nil
}

// device reads board b's config through a transport over st and returns a
// device for it. When another process holds the board, busy says so and the
// device carries what an earlier read remembered (the state directory); the
// error is for a board that cannot be described at all.
func (dr *Driver) device(ctx context.Context, b Board, o Options, st *boardState) (d *Device, busy error, err error) {
	tr, err := dr.transportFor(o, b, st)
	if err != nil {
		return nil, nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, discoverTimeout)
	defer cancel()
	cfg, cut, err := tr.config(cctx)
	switch {
	case err == nil:
		if !maps.Equal(cfg, loadState(o.StateDir, b.Serial)) {
			saveState(o.StateDir, b.Serial, cfg)
		}
	case !errors.Is(err, ErrBusy):
		return nil, nil, fmt.Errorf("reading its config: %w", err)
	default:
		// Held by someone else (a test, a console): use what an earlier
		// read remembered, so that the board is found by name and its
		// lock can be waited for.
		remembered := loadState(o.StateDir, b.Serial)
		if remembered == nil {
			return nil, nil, fmt.Errorf("reading its config: %w", err)
		}
		cfg, busy = remembered, err
	}
	st.mu.Lock()
	st.cfg, st.cut = cfg, cut
	st.mu.Unlock()
	d = &Device{drv: dr, opts: o, st: st, board: b, tr: tr, sh: &shellTransport{mux: st.mux}, cfg: cfg}
	d.name = cfg["name"]
	if d.name == "" {
		d.name = "jp-" + b.Serial
	}
	for _, t := range strings.Split(cfg["tags"], ",") {
		if t = strings.TrimSpace(t); t != "" && !slices.Contains(d.tags, t) {
			d.tags = append(d.tags, t)
		}
	}
	if len(cut) > 0 {
		o.Logf("dutlink %s: %v", d.name, cutError(b.Serial, cut, cfg))
	}
	return d, busy, nil
}
