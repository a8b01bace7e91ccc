package qemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/diskfile"
)

// Driver is the qemu driver: it discovers QEMU virtual machines and opens
// them.
//
// Discover describes qemu-0, qemu-1, ... (creating only their disk files);
// Open returns a fresh *Device for the disk file, powered off, storage off.
// A VM left running by an earlier holder that died is found through its
// pid file and stopped before the new device powers it on.
type Driver struct {
	fromEnv bool
	opts    Options
}

// New returns a qemu driver configured by o instead of the environment. It
// is not registered: hand it to the harness or to package lease as a driver
// value, or use it directly in tests.
func New(o Options) *Driver { return &Driver{opts: o} }

func init() { driver.Register(&Driver{fromEnv: true}) }

// Name returns DriverName.
func (dr *Driver) Name() string { return DriverName }

// options returns the options in force for this call (the environment's for
// the registered driver) with their defaults, checked, with the disk
// directory created and the QEMU binary found.
func (dr *Driver) options() (Options, error) {
	o := dr.opts
	if dr.fromEnv {
		var err error
		if o, err = optionsFromEnv(); err != nil {
			return Options{}, fmt.Errorf("%w: %w", driver.ErrBadConfig, err)
		}
	}
	o = o.withDefaults()
	if err := o.check(); err != nil {
		return Options{}, fmt.Errorf("%w: %w", driver.ErrBadConfig, err)
	}
	if _, err := lookBinary(o.Binary); err != nil {
		return Options{}, err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return Options{}, fmt.Errorf("qemu: creating the disk directory (%s): %w", EnvDir, err)
	}
	return o, nil
}

// Discover describes the QEMU devices, creating the disk directory and
// missing disk files. The registered driver reads its configuration from
// the environment (see the package documentation) at every call; a bad
// value is an error naming the variable. A QEMU binary that cannot be found
// is an error too (wrapping [ErrNoBinary]).
func (dr *Driver) Discover(ctx context.Context) ([]driver.Info, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("qemu: discover: %w", err)
	}
	o, err := dr.options()
	if err != nil {
		return nil, err
	}
	infos := make([]driver.Info, 0, max(o.Devices, 0))
	for i := range max(o.Devices, 0) {
		name := fmt.Sprintf("qemu-%d", i)
		if err := ensureDisk(filepath.Join(o.Dir, name+".disk"), o.DiskSize); err != nil {
			return nil, err
		}
		infos = append(infos, driver.Info{
			Driver: DriverName, Name: name, Tags: slices.Clone(deviceTags),
			Capabilities: driver.CapabilitiesOf((*Device)(nil)),
			Ephemeral:    ephemeral(name),
		})
	}
	return infos, nil
}

// Open returns a fresh device for the VM info names. A name the
// configuration no longer has is an error wrapping driver.ErrNoDevice.
func (dr *Driver) Open(ctx context.Context, info driver.Info) (driver.Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("qemu: open %s: %w", info.Name, err)
	}
	o, err := dr.options()
	if err != nil {
		return nil, err
	}
	for i := range max(o.Devices, 0) {
		name := fmt.Sprintf("qemu-%d", i)
		if name != info.Name {
			continue
		}
		disk := filepath.Join(o.Dir, name+".disk")
		if err := ensureDisk(disk, o.DiskSize); err != nil {
			return nil, err
		}
		return NewDevice(name, disk, o)
	}
	return nil, fmt.Errorf("qemu: open %s: the configuration has %d device(s) (%s) and no %s: %w", info.Name, max(o.Devices, 0), EnvDevices, info.Name, driver.ErrNoDevice)
}

// ensureDisk creates the disk file at path unless it exists; see
// diskfile.Ensure.
func ensureDisk(path string, size int64) error {
	if err := diskfile.Ensure(path, size); err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	return nil
}
