package dutlink

import (
	"context"
	"errors"
	"fmt"
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

// Driver discovers DUTlink boards.
type Driver struct {
	fromEnv bool
	opts    Options

	mu     sync.Mutex
	boards map[string]*boardState // by serial
}

// New returns a driver configured by o instead of the environment. It is
// not registered; use it in programs and tests.
func New(o Options) *Driver {
	return &Driver{opts: o, boards: map[string]*boardState{}}
}

func init() {
	driver.Register(&Driver{fromEnv: true, boards: map[string]*boardState{}})
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

// boardState is what the driver keeps about one board across discoveries:
// the tty (shared by the console and shell exchanges), the storage state
// and the last config read.
type boardState struct {
	mux  *ttyMux
	opMu sync.Mutex // one hardware operation at a time

	mu      sync.Mutex
	storage driver.StorageMode
	disk    *disk
	cfg     map[string]string // last config read, for boards busy elsewhere
	cut     []string          // keys the shell's get-config reply had no room for
}

func (dr *Driver) state(b Board, o Options) *boardState {
	dr.mu.Lock()
	defer dr.mu.Unlock()
	st := dr.boards[b.Serial]
	if st != nil && st.mux.path != b.TTY {
		st.mux.mu.Lock()
		idle := st.mux.port == nil
		st.mux.mu.Unlock()
		if idle {
			st = nil // replugged under another tty name
		}
	}
	if st == nil {
		st = &boardState{mux: newTTYMux(b.TTY, o.OpenPort), storage: driver.StorageOff}
		dr.boards[b.Serial] = st
	}
	return st
}

// Scan is the result of [Driver.Scan].
type Scan struct {
	// Devices are the usable boards, sorted by serial.
	Devices []*Device
	// Problems are the boards found but left out (DFU mode, vanished,
	// tty held elsewhere, unreadable config), each with the reason.
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
		d, err := dr.device(ctx, b, o)
		if err != nil && ctx.Err() != nil {
			return nil, fmt.Errorf("dutlink: discover: serial %s: %w", b.Serial, err)
		}
		if err != nil {
			s.Problems = append(s.Problems, Problem{Where: "serial " + b.Serial + " (" + b.Port + ")", Err: err})
			continue
		}
		s.Devices = append(s.Devices, d)
	}
	return s, nil
}

// Discover returns the usable boards; see [Driver.Scan] for the others.
func (dr *Driver) Discover(ctx context.Context) ([]driver.Device, error) {
	s, err := dr.Scan(ctx)
	if err != nil {
		return nil, err
	}
	devs := make([]driver.Device, len(s.Devices))
	for i, d := range s.Devices {
		devs[i] = d
	}
	return devs, nil
}

// Open returns the board with the given name or serial.
func (dr *Driver) Open(ctx context.Context, nameOrSerial string) (*Device, error) {
	s, err := dr.Scan(ctx)
	if err != nil {
		return nil, err
	}
	for _, d := range s.Devices {
		if d.Name() == nameOrSerial || d.Serial() == nameOrSerial {
			return d, nil
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
			names[i] = driver.Describe(d)
		}
		msg += "; found " + strings.Join(names, "; ")
	}
	if len(why) > 0 {
		msg += "; unusable: " + strings.Join(why, "; ")
	}
	return nil, fmt.Errorf("%s: %w", msg, driver.ErrNoDevice)
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

func (dr *Driver) device(ctx context.Context, b Board, o Options) (*Device, error) {
	st := dr.state(b, o)
	tr, err := dr.transportFor(o, b, st)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, discoverTimeout)
	defer cancel()
	cfg, cut, err := tr.config(cctx)
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case err == nil:
		if !maps.Equal(cfg, st.cfg) {
			saveState(o.StateDir, b.Serial, cfg)
		}
	case !errors.Is(err, ErrBusy):
		return nil, fmt.Errorf("reading its config: %w", err)
	default:
		// Held by someone else (a test, a console): use what this
		// process, or an earlier one, read before, so that the board is
		// found by name and its lock can be waited for.
		if st.cfg == nil {
			st.cfg = loadState(o.StateDir, b.Serial)
		}
		if st.cfg == nil {
			return nil, fmt.Errorf("reading its config: %w", err)
		}
		cfg = st.cfg
	}
	st.cfg, st.cut = cfg, cut
	d := &Device{drv: dr, opts: o, st: st, board: b, tr: tr, sh: &shellTransport{mux: st.mux}, cfg: cfg}
	d.name = cfg["name"]
	if d.name == "" {
		d.name = "jp-" + b.Serial
	}
	for _, t := range strings.Split(cfg["tags"], ",") {
		if t = strings.TrimSpace(t); t != "" && !slices.Contains(d.tags, t) {
			d.tags = append(d.tags, t)
		}
	}
	if len(cut) > 0 { // st.mu is held: d.logCut would take it again
		o.Logf("dutlink %s: %v", d.name, cutError(b.Serial, cut, cfg))
	}
	return d, nil
}
