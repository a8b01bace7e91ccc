package qemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/diskfile"
)

// Driver is the qemu driver: it discovers QEMU virtual machines.
//
// A Driver returns the same *Device for the same disk file at every
// Discover, as real hardware stays the same board, so a device's state
// (power, console) carries over between discoveries. A device that was
// closed is replaced by a fresh one.
type Driver struct {
	fromEnv bool
	opts    Options

	mu      sync.Mutex
	devices map[string]*Device // by disk path
}

// New returns a qemu driver configured by o instead of the environment. It
// is not registered; use it directly in tests.
func New(o Options) *Driver {
	return &Driver{opts: o, devices: map[string]*Device{}}
}

func init() {
	driver.Register(&Driver{fromEnv: true, devices: map[string]*Device{}})
}

// Name returns DriverName.
func (dr *Driver) Name() string { return DriverName }

// Discover returns the QEMU devices, creating the disk directory and missing
// disk files. The registered driver reads its configuration from the
// environment (see the package documentation) at every call; a bad value is
// an error naming the variable. A QEMU binary that cannot be found is an
// error too (wrapping [ErrNoBinary]).
func (dr *Driver) Discover(ctx context.Context) ([]driver.Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("qemu: discover: %w", err)
	}
	o := dr.opts
	if dr.fromEnv {
		var err error
		if o, err = optionsFromEnv(); err != nil {
			return nil, fmt.Errorf("%w: %w", driver.ErrBadConfig, err)
		}
	}
	o = o.withDefaults()
	if err := o.check(); err != nil {
		return nil, fmt.Errorf("%w: %w", driver.ErrBadConfig, err)
	}
	if _, err := lookBinary(o.Binary); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("qemu: creating the disk directory (%s): %w", EnvDir, err)
	}

	dr.mu.Lock()
	defer dr.mu.Unlock()
	devs := make([]driver.Device, 0, max(o.Devices, 0))
	for i := range max(o.Devices, 0) {
		name := fmt.Sprintf("qemu-%d", i)
		disk := filepath.Join(o.Dir, name+".disk")
		if d := dr.devices[disk]; d != nil && !d.isClosed() {
			if err := ensureDisk(disk, o.DiskSize); err != nil {
				return nil, err
			}
			d.setOptions(o)
			devs = append(devs, d)
			continue
		}
		d, err := NewDevice(name, disk, o)
		if err != nil {
			return nil, err
		}
		dr.devices[disk] = d
		devs = append(devs, d)
	}
	return devs, nil
}

// ensureDisk creates the disk file at path unless it exists; see
// diskfile.Ensure.
func ensureDisk(path string, size int64) error {
	if err := diskfile.Ensure(path, size); err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	return nil
}
