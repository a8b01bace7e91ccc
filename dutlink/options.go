package dutlink

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// TransportKind selects the control protocol a device uses.
type TransportKind string

// The control transports.
const (
	// TransportAuto picks USB for firmware 0.08 and later when the build
	// has USB access, the shell otherwise.
	TransportAuto TransportKind = ""
	// TransportUSB uses vendor control requests (firmware >= 0.08).
	TransportUSB TransportKind = "usb"
	// TransportShell uses the text shell on the board's tty.
	TransportShell TransportKind = "shell"
)

// ParseTransport parses "usb", "shell", "auto" or "" (case-insensitive).
func ParseTransport(s string) (TransportKind, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return TransportAuto, nil
	case "usb":
		return TransportUSB, nil
	case "shell":
		return TransportShell, nil
	}
	return "", fmt.Errorf("unknown DUTlink transport %q: use usb, shell or auto", s)
}

// The environment variables the registered driver reads at every Discover.
const (
	EnvSysfs          = "DUTLINK_SYSFS"
	EnvDev            = "DUTLINK_DEV"
	EnvTransport      = "DUTLINK_TRANSPORT"
	EnvStorageFilter  = "DUTLINK_STORAGE_FILTER"
	EnvStorageTimeout = "DUTLINK_STORAGE_TIMEOUT"
	EnvFileDisks      = "DUTLINK_FILE_DISKS"
	EnvStateDir       = "DUTLINK_STATE_DIR"
	EnvConfigDir      = "DUTLINK_CONFIG_DIR"
)

// Defaults and protocol timings.
const (
	// DefaultStorageTimeout bounds the wait for the storage disk after the
	// mux switched to the host.
	DefaultStorageTimeout = 60 * time.Second
	// USBTimeout bounds one control transfer: power sequences block the
	// control pipe for seconds.
	USBTimeout = 20 * time.Second
	// ShellPowerTimeout bounds a power command at the shell.
	ShellPowerTimeout = 30 * time.Second
	// ShellTimeout bounds every other shell command.
	ShellTimeout = 5 * time.Second
	// ResetPulse is how long Reset holds the reset pin low.
	ResetPulse = time.Second
	// ShellReplyMax is the size of the buffer the firmware's shell builds
	// a reply in: get-config's "key: value" lines and prompt together,
	// and the firmware cuts what does not fit. SetConfig keeps the
	// config within it, less a line end of margin.
	ShellReplyMax = 512
)

// Options configures a [Driver]. Zero fields take their defaults.
type Options struct {
	// SysfsRoot is where sysfs is mounted ("/sys").
	SysfsRoot string
	// DevRoot is the device directory ("/dev"); tty, disk and by-id paths
	// found in sysfs are looked up below it.
	DevRoot string
	// Transport forces a control transport; TransportAuto chooses by
	// firmware version.
	Transport TransportKind
	// StorageFilter, when set, narrows every board's storage disk to the
	// one whose /dev/disk/by-id/usb-* name holds it, among the disks USB
	// topology ties to the board. Being the same for every board, it does
	// not identify the disk of a board on a root port: see StorageFilters.
	StorageFilter string
	// StorageFilters names each board's own storage stick, by board
	// serial: a substring of the stick's /dev/disk/by-id name (best its
	// serial). This identifies the disk of a board on a root port, where
	// topology cannot; it overrides the storage_filter kept in ConfigDir
	// and the one in the board's json config.
	StorageFilters map[string]string
	// StorageTimeout bounds the wait for the storage disk
	// (DefaultStorageTimeout).
	StorageTimeout time.Duration
	// FileDisks accepts a regular file where a block device is expected
	// (simulators and tests); never set it on a lab host.
	FileDisks bool
	// StateDir is where discovery remembers each board's config (name,
	// tags), so that a board whose tty another process holds (a test, a
	// dut console) is still found by name and can be waited for instead of
	// missing. Default $XDG_CACHE_HOME/jumpstarter-go/dutlink; "off"
	// remembers nothing.
	StateDir string
	// ConfigDir is where this host keeps what it knows about each board
	// that the board cannot store or send itself (HostKeys, such as
	// storage_filter), one <serial>.json file per board. Default
	// $XDG_CONFIG_HOME/jumpstarter-go/dutlink; "off": nowhere.
	ConfigDir string
	// OpenUSB opens a board's vendor interface; nil means libusb through
	// gousb (when built with cgo), else no USB access.
	OpenUSB USBOpener
	// OpenPort opens a tty; nil means the tty itself, raw at 115200 8N1.
	OpenPort PortOpener
	// Logf receives one line per hardware step; nil discards them.
	Logf func(format string, args ...any)
}

func (o Options) withDefaults() Options {
	if o.SysfsRoot == "" {
		o.SysfsRoot = "/sys"
	}
	if o.DevRoot == "" {
		o.DevRoot = "/dev"
	}
	if o.StorageTimeout <= 0 {
		o.StorageTimeout = DefaultStorageTimeout
	}
	if o.OpenUSB == nil {
		o.OpenUSB = defaultUSBOpener()
	}
	if o.OpenPort == nil {
		o.OpenPort = openTTY
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.StateDir == "" {
		if dir, err := os.UserCacheDir(); err == nil {
			o.StateDir = filepath.Join(dir, "jumpstarter-go", "dutlink")
		}
	}
	if o.StateDir == "off" {
		o.StateDir = ""
	}
	if o.ConfigDir == "" {
		if dir, err := os.UserConfigDir(); err == nil {
			o.ConfigDir = filepath.Join(dir, "jumpstarter-go", "dutlink")
		}
	}
	if o.ConfigDir == "off" {
		o.ConfigDir = ""
	}
	return o
}

// OptionsFromEnv reads the DUTLINK_* environment variables into Options. A
// malformed value is an error naming the variable.
func OptionsFromEnv() (Options, error) {
	var o Options
	o.SysfsRoot = strings.TrimSpace(os.Getenv(EnvSysfs))
	o.DevRoot = strings.TrimSpace(os.Getenv(EnvDev))
	t, err := ParseTransport(os.Getenv(EnvTransport))
	if err != nil {
		return Options{}, fmt.Errorf("dutlink: %s: %w", EnvTransport, err)
	}
	o.Transport = t
	if o.StorageFilter, o.StorageFilters, err = ParseStorageFilter(os.Getenv(EnvStorageFilter)); err != nil {
		return Options{}, fmt.Errorf("dutlink: %s: %w", EnvStorageFilter, err)
	}
	if v := strings.TrimSpace(os.Getenv(EnvStorageTimeout)); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return Options{}, fmt.Errorf("dutlink: %s=%q is not a duration; set it to e.g. 60s", EnvStorageTimeout, v)
		}
		o.StorageTimeout = d
	}
	if v := strings.TrimSpace(os.Getenv(EnvFileDisks)); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return Options{}, fmt.Errorf("dutlink: %s=%q: want 1 or 0", EnvFileDisks, v)
		}
		o.FileDisks = b
	}
	o.StateDir = strings.TrimSpace(os.Getenv(EnvStateDir))
	o.ConfigDir = strings.TrimSpace(os.Getenv(EnvConfigDir))
	return o, nil
}

// ParseStorageFilter parses DUTLINK_STORAGE_FILTER: either one substring
// for every board ("SanDisk"), or per board serial=substring pairs
// separated by commas ("1a2b3c4d=4C530001,0badf00d=4C530002").
func ParseStorageFilter(v string) (all string, perBoard map[string]string, err error) {
	v = strings.TrimSpace(v)
	if !strings.Contains(v, "=") {
		return v, nil, nil
	}
	perBoard = map[string]string{}
	for _, pair := range strings.Split(v, ",") {
		serial, filter, ok := strings.Cut(strings.TrimSpace(pair), "=")
		serial, filter = strings.TrimSpace(serial), strings.TrimSpace(filter)
		if !ok || serial == "" || filter == "" {
			return "", nil, fmt.Errorf("%q is not board-serial=stick-substring (in %q; pairs are separated by commas, e.g. 1a2b3c4d=4C530001)", pair, v)
		}
		perBoard[serial] = filter
	}
	return "", perBoard, nil
}
