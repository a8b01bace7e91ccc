package sim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/bytesize"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/diskfile"
)

// DriverName is the name the sim driver registers under (DUT_DRIVER=sim).
const DriverName = "sim"

// The environment variables the registered driver reads at every Discover.
const (
	EnvDevices  = "DUT_SIM_DEVICES"
	EnvDir      = "DUT_SIM_DIR"
	EnvDiskSize = "DUT_SIM_DISK_SIZE"
	EnvBootTime = "DUT_SIM_BOOT_TIME"
)

// Defaults of [Options].
const (
	DefaultDevices  = 2
	DefaultDiskSize = 64 << 20
	DefaultBootTime = 300 * time.Millisecond
)

// Limits of the configuration.
const (
	// MaxDevices is the largest number of devices Discover reports.
	MaxDevices = 1000
	// MinDiskSize is the smallest disk a device may have.
	MinDiskSize = 64 << 10
	// MaxBootTime is the longest boot time a device may have.
	MaxBootTime = time.Hour
)

// DefaultDir returns the default directory of the disk files:
// filepath.Join(os.TempDir(), "jumpstarter-sim").
func DefaultDir() string { return filepath.Join(os.TempDir(), "jumpstarter-sim") }

// Options configures simulated devices. Zero fields take their defaults.
type Options struct {
	// Devices is the number of devices Discover reports, named sim-0,
	// sim-1, ...; 0 means DefaultDevices and a negative number means none.
	// NewDevice ignores it.
	Devices int
	// Dir is the directory of the devices' disk files, <Dir>/<name>.disk;
	// "" means DefaultDir(). It is created when missing. NewDevice
	// ignores it.
	Dir string
	// DiskSize is the size in bytes of a disk file created because it is
	// missing (an existing disk file is never resized); 0 means
	// DefaultDiskSize.
	DiskSize int64
	// BootTime is the time from power-on to the login prompt; 0 means
	// DefaultBootTime.
	BootTime time.Duration
	// Users are the accounts the board's login accepts, user name to
	// password; nil means root with an empty password. A user with an
	// empty password logs in without a password prompt.
	Users map[string]string
}

func (o Options) withDefaults() Options {
	if o.Devices == 0 {
		o.Devices = DefaultDevices
	}
	if o.Dir == "" {
		o.Dir = DefaultDir()
	}
	if o.DiskSize == 0 {
		o.DiskSize = DefaultDiskSize
	}
	if o.BootTime == 0 {
		o.BootTime = DefaultBootTime
	}
	if o.Users == nil {
		o.Users = map[string]string{"root": ""}
	}
	return o
}

func (o Options) check() error {
	switch {
	case o.Devices > MaxDevices:
		return fmt.Errorf("sim: %d devices is more than the limit of %d", o.Devices, MaxDevices)
	case o.DiskSize < MinDiskSize:
		return fmt.Errorf("sim: disk size %d is below the minimum of %d bytes", o.DiskSize, MinDiskSize)
	case o.BootTime < 0 || o.BootTime > MaxBootTime:
		return fmt.Errorf("sim: boot time %v is not between 0 and %v", o.BootTime, MaxBootTime)
	}
	for u := range o.Users {
		if u == "" || strings.ContainsAny(u, " \t\r\n") {
			return fmt.Errorf("sim: user name %q is empty or holds white space", u)
		}
	}
	return nil
}

// optionsFromEnv reads the configuration from the environment.
func optionsFromEnv() (Options, error) {
	var o Options
	if v, ok := os.LookupEnv(EnvDevices); ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 || n > MaxDevices {
			return Options{}, fmt.Errorf("sim: %s=%q is not a device count; set it to a whole number from 0 to %d, e.g. %s=2", EnvDevices, v, MaxDevices, EnvDevices)
		}
		o.Devices = n
		if n == 0 {
			o.Devices = -1
		}
	}
	if v, ok := os.LookupEnv(EnvDir); ok {
		if strings.TrimSpace(v) == "" {
			return Options{}, fmt.Errorf("sim: %s is set but empty; set it to the directory for the simulated disks, or unset it to use %s", EnvDir, DefaultDir())
		}
		dir, err := filepath.Abs(v)
		if err != nil {
			return Options{}, fmt.Errorf("sim: %s=%q: %w", EnvDir, v, err)
		}
		o.Dir = dir
	}
	if v, ok := os.LookupEnv(EnvDiskSize); ok {
		n, err := bytesize.Parse(v)
		if err != nil {
			return Options{}, fmt.Errorf("sim: %s=%q is not a size; set it to a byte count like 64MiB (the default): %w", EnvDiskSize, v, err)
		}
		if n < MinDiskSize {
			return Options{}, fmt.Errorf("sim: %s=%q is too small; set it to at least 64KiB, e.g. %s=64MiB", EnvDiskSize, v, EnvDiskSize)
		}
		o.DiskSize = n
	}
	if v, ok := os.LookupEnv(EnvBootTime); ok {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d <= 0 || d > MaxBootTime {
			return Options{}, fmt.Errorf("sim: %s=%q is not a boot time; set it to a positive Go duration up to %v, e.g. %s=300ms", EnvBootTime, v, MaxBootTime, EnvBootTime)
		}
		o.BootTime = d
	}
	return o, nil
}

// Driver is the sim driver: it discovers simulated devices and opens them.
//
// Discover describes sim-0, sim-1, ... without creating anything but their
// disk files; Open returns a fresh *Device for the disk file, as if the
// board were plugged in anew: power off, storage off, its configured name
// and tags. What a Device changes (power, renaming) ends with it, apart
// from its disk file.
type Driver struct {
	fromEnv bool
	opts    Options
}

// New returns a sim driver configured by o instead of the environment. It
// is not registered: hand it to the harness or to package lease as a driver
// value, or use it directly in tests.
func New(o Options) *Driver { return &Driver{opts: o} }

func init() { driver.Register(&Driver{fromEnv: true}) }

// Name returns DriverName.
func (dr *Driver) Name() string { return DriverName }

// options returns the options in force for this call: the driver's, or the
// environment's for the registered driver, with their defaults, checked.
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
	return o, nil
}

// identity is one simulated board's identity: index i of the configuration.
func identity(i int) (name, serial string, tags []string) {
	parity := "even"
	if i%2 == 1 {
		parity = "odd"
	}
	return fmt.Sprintf("sim-%d", i), fmt.Sprintf("SIM%05d", i), []string{"sim", "virtual", parity}
}

// Discover describes the simulated devices, creating the disk directory and
// missing disk files. The registered driver reads its configuration from
// the environment (see the package documentation) at every call; a bad
// value is an error naming the variable.
func (dr *Driver) Discover(ctx context.Context) ([]driver.Info, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sim: discover: %w", err)
	}
	o, err := dr.options()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("sim: creating the disk directory (%s): %w", EnvDir, err)
	}
	infos := make([]driver.Info, 0, max(o.Devices, 0))
	for i := range max(o.Devices, 0) {
		name, serial, tags := identity(i)
		if err := ensureDisk(filepath.Join(o.Dir, name+".disk"), o.DiskSize); err != nil {
			return nil, err
		}
		infos = append(infos, driver.Info{
			Driver: DriverName, Name: name, Serial: serial, Tags: tags,
			Capabilities: driver.CapabilitiesOf((*Device)(nil)),
			Ephemeral:    ephemeral(name),
		})
	}
	return infos, nil
}

// Open returns a fresh device for the board info names (by its name, as
// Discover gave it): powered off, storage off. A name the configuration no
// longer has is an error wrapping driver.ErrNoDevice.
func (dr *Driver) Open(ctx context.Context, info driver.Info) (driver.Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sim: open %s: %w", info.Name, err)
	}
	o, err := dr.options()
	if err != nil {
		return nil, err
	}
	for i := range max(o.Devices, 0) {
		name, serial, tags := identity(i)
		if name != info.Name {
			continue
		}
		disk := filepath.Join(o.Dir, name+".disk")
		if err := ensureDisk(disk, o.DiskSize); err != nil {
			return nil, err
		}
		return NewDevice(name, serial, tags, disk, o)
	}
	return nil, fmt.Errorf("sim: open %s: the configuration has %d device(s) (%s) and no %s: %w", info.Name, max(o.Devices, 0), EnvDevices, info.Name, driver.ErrNoDevice)
}

// ensureDisk creates the disk file at path unless it exists; see
// diskfile.Ensure.
func ensureDisk(path string, size int64) error {
	if err := diskfile.Ensure(path, size); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	return nil
}
