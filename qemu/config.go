package qemu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/jumpstarter-dev/jumpstarter-go/internal/bytesize"
)

// DriverName is the name the qemu driver registers under (DUT_DRIVER=qemu).
const DriverName = "qemu"

// The environment variables the registered driver reads at every Discover.
const (
	EnvDevices  = "DUT_QEMU_DEVICES"
	EnvMemory   = "DUT_QEMU_MEMORY"
	EnvBinary   = "DUT_QEMU_BINARY"
	EnvDir      = "DUT_QEMU_DIR"
	EnvDiskSize = "DUT_QEMU_DISK_SIZE"
	EnvArgs     = "DUT_QEMU_ARGS"
)

// Defaults of [Options].
const (
	DefaultDevices  = 1
	DefaultMemory   = 128 // MiB
	DefaultBinary   = "qemu-system-x86_64"
	DefaultDiskSize = 64 << 20
)

// Limits of the configuration.
const (
	// MaxDevices is the largest number of devices Discover reports.
	MaxDevices = 64
	// MinMemory and MaxMemory bound a VM's memory in MiB. The images of
	// testfixtures/qemuimage need at least about 80 MiB.
	MinMemory = 80
	MaxMemory = 1 << 20
	// MinDiskSize is the smallest disk a device may have.
	MinDiskSize = 1 << 20
)

// Package is the Debian package that provides [DefaultBinary].
const Package = "qemu-system-x86"

// deviceTags are the tags of every device.
var deviceTags = []string{"qemu", "virtual", "x86_64"}

// DefaultDir returns the default directory of the disk files and pid files:
// filepath.Join(os.TempDir(), "jumpstarter-qemu").
func DefaultDir() string { return filepath.Join(os.TempDir(), "jumpstarter-qemu") }

// Options configures QEMU devices. Zero fields take their defaults.
type Options struct {
	// Devices is the number of devices Discover reports, named qemu-0,
	// qemu-1, ...; 0 means DefaultDevices and a negative number means
	// none. NewDevice ignores it.
	Devices int
	// Memory is the VM's memory in MiB; 0 means DefaultMemory.
	Memory int
	// Binary is the QEMU binary, a path or a name looked up in PATH at
	// power-on; "" means DefaultBinary.
	Binary string
	// Dir is the directory of the devices' disk files, <Dir>/<name>.disk,
	// and pid files, <Dir>/<name>.pid; "" means DefaultDir(). It is
	// created when missing. NewDevice ignores it.
	Dir string
	// DiskSize is the size in bytes of a disk file created because it is
	// missing (an existing disk file is never resized); 0 means
	// DefaultDiskSize.
	DiskSize int64
	// Args are extra QEMU arguments, appended to the driver's.
	Args []string
}

func (o Options) withDefaults() Options {
	if o.Devices == 0 {
		o.Devices = DefaultDevices
	}
	if o.Memory == 0 {
		o.Memory = DefaultMemory
	}
	if o.Binary == "" {
		o.Binary = DefaultBinary
	}
	if o.Dir == "" {
		o.Dir = DefaultDir()
	}
	if o.DiskSize == 0 {
		o.DiskSize = DefaultDiskSize
	}
	return o
}

func (o Options) check() error {
	switch {
	case o.Devices > MaxDevices:
		return fmt.Errorf("qemu: %d devices is more than the limit of %d", o.Devices, MaxDevices)
	case o.Memory < MinMemory || o.Memory > MaxMemory:
		return fmt.Errorf("qemu: memory %d MiB is not between %d and %d MiB", o.Memory, MinMemory, MaxMemory)
	case o.DiskSize < MinDiskSize:
		return fmt.Errorf("qemu: disk size %d is below the minimum of %d bytes", o.DiskSize, MinDiskSize)
	}
	for _, a := range o.Args {
		if a == "-daemonize" || a == "--daemonize" || a == "-pidfile" || a == "--pidfile" {
			return fmt.Errorf("qemu: extra argument %s is not allowed: the driver runs QEMU in the foreground and writes its pid file itself", a)
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
			return Options{}, fmt.Errorf("qemu: %s=%q is not a device count; set it to a whole number from 0 to %d, e.g. %s=2", EnvDevices, v, MaxDevices, EnvDevices)
		}
		o.Devices = n
		if n == 0 {
			o.Devices = -1
		}
	}
	if v, ok := os.LookupEnv(EnvMemory); ok {
		n, err := parseMiB(v)
		if err != nil || n < MinMemory || n > MaxMemory {
			return Options{}, fmt.Errorf("qemu: %s=%q is not a memory size; set it to a whole number of MiB from %d to %d, e.g. %s=%d (the default; the test images need at least 80)", EnvMemory, v, MinMemory, MaxMemory, EnvMemory, DefaultMemory)
		}
		o.Memory = n
	}
	if v, ok := os.LookupEnv(EnvBinary); ok {
		if strings.TrimSpace(v) == "" {
			return Options{}, fmt.Errorf("qemu: %s is set but empty; set it to the QEMU binary (a path, or a name looked up in PATH), or unset it to use %s", EnvBinary, DefaultBinary)
		}
		o.Binary = strings.TrimSpace(v)
	}
	if v, ok := os.LookupEnv(EnvDir); ok {
		if strings.TrimSpace(v) == "" {
			return Options{}, fmt.Errorf("qemu: %s is set but empty; set it to the directory for the virtual disks, or unset it to use %s", EnvDir, DefaultDir())
		}
		dir, err := filepath.Abs(v)
		if err != nil {
			return Options{}, fmt.Errorf("qemu: %s=%q: %w", EnvDir, v, err)
		}
		o.Dir = dir
	}
	if v, ok := os.LookupEnv(EnvDiskSize); ok {
		n, err := parseSize(v)
		if err != nil {
			return Options{}, fmt.Errorf("qemu: %s=%q is not a size; set it to a byte count like 64MiB (the default): %w", EnvDiskSize, v, err)
		}
		if n < MinDiskSize {
			return Options{}, fmt.Errorf("qemu: %s=%q is too small; set it to at least 1MiB, e.g. %s=64MiB", EnvDiskSize, v, EnvDiskSize)
		}
		o.DiskSize = n
	}
	if v, ok := os.LookupEnv(EnvArgs); ok {
		args, err := splitArgs(v)
		if err != nil {
			return Options{}, fmt.Errorf("qemu: %s=%q: %w; quote it as in a shell, e.g. %s='-smp 2 -name \"my vm\"'", EnvArgs, v, err, EnvArgs)
		}
		o.Args = args
	}
	return o, nil
}

// ErrNoBinary is wrapped by the errors that say the QEMU binary is missing.
var ErrNoBinary = errors.New("QEMU binary not found")

// lookBinary resolves the QEMU binary.
func lookBinary(bin string) (string, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("qemu: %w: %s=%q: %v; install the Debian package %s (apt-get install %s) or set %s to the path of qemu-system-x86_64",
			ErrNoBinary, EnvBinary, bin, err, Package, Package, EnvBinary)
	}
	return path, nil
}

// parseMiB parses a memory size in MiB: "128", "128M", "128MiB" or "1G".
func parseMiB(s string) (int, error) {
	t := strings.TrimSpace(s)
	if n, err := strconv.Atoi(t); err == nil {
		return n, nil
	}
	b, err := parseSize(t)
	if err != nil {
		return 0, err
	}
	if b%(1<<20) != 0 {
		return 0, fmt.Errorf("%q is not a whole number of MiB", s)
	}
	return int(b >> 20), nil
}

// parseSize parses a size in bytes such as "4096" or "64MiB".
func parseSize(s string) (int64, error) { return bytesize.Parse(s) }

// splitArgs splits s into words as a POSIX shell would, without expansions:
// white space separates words; single quotes keep everything literally;
// double quotes keep everything but a backslash before $, `, ", \ or a
// newline; outside quotes a backslash keeps the next character.
func splitArgs(s string) ([]string, error) {
	var (
		args  []string
		cur   strings.Builder
		inArg bool
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		case c == '\'':
			inArg = true
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated single quote")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			inArg = true
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("$`\"\\\n", s[i+1]) >= 0 {
					i++
					if s[i] == '\n' {
						continue
					}
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated double quote")
			}
		case c == '\\':
			if i+1 >= len(s) {
				return nil, errors.New("backslash at the end")
			}
			i++
			if s[i] == '\n' {
				continue
			}
			inArg = true
			cur.WriteByte(s[i])
		default:
			inArg = true
			cur.WriteByte(c)
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}

// shellQuote renders args as a command line a POSIX shell runs as it is.
func shellQuote(args []string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-") == "" {
			b.WriteString(a)
			continue
		}
		b.WriteByte('\'')
		b.WriteString(strings.ReplaceAll(a, "'", `'\''`))
		b.WriteByte('\'')
	}
	return b.String()
}

// optEscape escapes a value for QEMU's option syntax (key=value,...): a
// comma is written twice.
func optEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }
