package harness

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
)

// Config says which DUT a test wants and how the harness drives it. Build one
// with [ConfigFromEnv] and [Option]s; [Acquire] does both.
type Config struct {
	// Drivers are driver values configured in code ([WithDrivers]): when
	// set, only they are searched and the registry is not used, as
	// database/sql's OpenDB takes a Connector.
	Drivers []driver.Driver
	// Driver is the driver's registered name (DUT_DRIVER). Empty means every
	// registered driver (or every one of Drivers) is searched.
	Driver string
	// Name selects a device by name or serial (DUT_NAME).
	Name string
	// Tags select devices carrying all of them, case-insensitively (DUT_TAGS).
	Tags []string
	// Image is the path of the image Flash writes (DUT_IMAGE).
	Image string
	// Require makes a test fail instead of skip when no DUT is configured
	// (DUT_REQUIRE).
	Require bool
	// LockDir holds the per-device lock files shared by every process that
	// uses the DUTs (DUT_LOCK_DIR).
	LockDir string
	// AcquireTimeout bounds the wait for a busy DUT (DUT_ACQUIRE_TIMEOUT).
	AcquireTimeout time.Duration
	// CleanupReserve is kept free before the test's deadline so that cleanup
	// can power the DUT off before `go test -timeout` ends the binary
	// (DUT_CLEANUP_RESERVE). Set, it is kept whole; zero means the default,
	// 30 s but at most a quarter of the test's time, so that a short
	// go test -timeout (an IDE's 30 s) still leaves most of it to the test.
	// It is fixed when the DUT is acquired: a step started near the deadline
	// does not eat into it.
	CleanupReserve time.Duration
	// StepTimeout bounds one power or storage step (DUT_STEP_TIMEOUT).
	StepTimeout time.Duration
	// FlashTimeout bounds one flash (DUT_FLASH_TIMEOUT).
	FlashTimeout time.Duration
	// BootTimeout bounds power-on to a logged-in shell (DUT_BOOT_TIMEOUT).
	BootTimeout time.Duration
	// CommandTimeout bounds one Run or Expect (DUT_COMMAND_TIMEOUT).
	CommandTimeout time.Duration
	// User and Password log in on the console (DUT_USER, DUT_PASSWORD).
	User, Password string
	// CharDelay paces console input for slow UARTs (DUT_CONSOLE_CHAR_DELAY).
	CharDelay time.Duration
	// MaxLine is the longest command line, in bytes, the DUT's shell takes
	// (DUT_CONSOLE_MAX_LINE): Run refuses a longer one at once, naming the
	// limit, instead of timing out. Zero means 1024 (busybox ash); bash
	// takes about 4095.
	MaxLine int
	// Bmap is the bmap Flash uses (DUT_BMAP): empty looks for one beside the
	// image (IMAGE.bmap, or foo.img.bmap beside foo.img.zst); "none" refuses
	// one found there, so that every byte of the image is written, as
	// bmaptool's --nobmap does; anything else is the bmap's path.
	Bmap string
	// SkipHoles makes Flash leave the holes of a sparse raw image without a
	// bmap as they were on the target, instead of making the target
	// byte-identical to the image (DUT_FLASH_SKIP_HOLES).
	SkipHoles bool
	// Watches are extra console watchers: output matching one fails the
	// pending expect at once.
	Watches []Watch
}

// Watch is a console watcher the harness installs when it opens the console.
type Watch struct {
	Name    string
	Pattern string // a regular expression
	// Infrastructure marks a hit as the lab's fault (no boot device), not
	// the product's (kernel panic).
	Infrastructure bool
}

// DefaultWatches are installed on every console: a kernel panic fails the
// product; firmware that finds nothing to boot is reported as an
// infrastructure failure (the image or the flash is at fault, not the
// product's behaviour).
var DefaultWatches = []Watch{
	{Name: "kernel panic", Pattern: `Kernel panic - not syncing`},
	{Name: "no boot device", Pattern: `No bootable device|Boot failed: |No boot device|no bootable rootfs`, Infrastructure: true},
}

// Env names the environment variables the harness reads.
var Env = struct {
	Driver, Name, Tags, Image, Require, LockDir, AcquireTimeout, CleanupReserve,
	StepTimeout, FlashTimeout, BootTimeout, CommandTimeout, User, Password, CharDelay,
	Bmap, SkipHoles, MaxLine string
}{
	"DUT_DRIVER", "DUT_NAME", "DUT_TAGS", "DUT_IMAGE", "DUT_REQUIRE", "DUT_LOCK_DIR", "DUT_ACQUIRE_TIMEOUT",
	"DUT_CLEANUP_RESERVE", "DUT_STEP_TIMEOUT", "DUT_FLASH_TIMEOUT", "DUT_BOOT_TIMEOUT", "DUT_COMMAND_TIMEOUT",
	"DUT_USER", "DUT_PASSWORD", "DUT_CONSOLE_CHAR_DELAY", "DUT_BMAP", "DUT_FLASH_SKIP_HOLES",
	"DUT_CONSOLE_MAX_LINE",
}

// DefaultLockDir is the lock directory when DUT_LOCK_DIR is unset: one per
// host, shared by every process that uses the same temporary directory.
func DefaultLockDir() string { return lease.DefaultDir() }

// ErrBadConfig is wrapped by every configuration error.
var ErrBadConfig = errors.New("bad DUT configuration")

// ConfigFromEnv reads the DUT_* environment variables. Unset variables get
// their defaults; malformed ones are an error wrapping [ErrBadConfig] that
// names the variable.
func ConfigFromEnv() (Config, error) {
	c := Config{
		Driver:   strings.TrimSpace(os.Getenv(Env.Driver)),
		Name:     strings.TrimSpace(os.Getenv(Env.Name)),
		Image:    os.Getenv(Env.Image),
		LockDir:  os.Getenv(Env.LockDir),
		User:     os.Getenv(Env.User),
		Password: os.Getenv(Env.Password),
		Bmap:     strings.TrimSpace(os.Getenv(Env.Bmap)),
	}.WithDefaults()
	var errs []error
	tags, err := driver.ParseTags(os.Getenv(Env.Tags))
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", Env.Tags, err))
	}
	c.Tags = tags
	for _, b := range []struct {
		name string
		dst  *bool
	}{{Env.Require, &c.Require}, {Env.SkipHoles, &c.SkipHoles}} {
		if v := strings.TrimSpace(os.Getenv(b.name)); v != "" {
			on, err := strconv.ParseBool(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: want 1, true, 0 or false", b.name, v))
			}
			*b.dst = on
		}
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{
		{Env.AcquireTimeout, &c.AcquireTimeout}, {Env.CleanupReserve, &c.CleanupReserve},
		{Env.StepTimeout, &c.StepTimeout}, {Env.FlashTimeout, &c.FlashTimeout},
		{Env.BootTimeout, &c.BootTimeout}, {Env.CommandTimeout, &c.CommandTimeout},
		{Env.CharDelay, &c.CharDelay},
	} {
		v := strings.TrimSpace(os.Getenv(d.name))
		if v == "" {
			continue
		}
		dur, err := time.ParseDuration(v)
		if err != nil || dur < 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want a duration such as 90s or 5m", d.name, v))
			continue
		}
		*d.dst = dur
	}
	if v := strings.TrimSpace(os.Getenv(Env.MaxLine)); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 64 {
			errs = append(errs, fmt.Errorf("%s=%q: want a number of bytes of at least 64, e.g. 4095 for bash", Env.MaxLine, v))
		}
		c.MaxLine = n
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	return c, nil
}

// WithDefaults returns c with every unset field at its default: timeouts
// (acquire 5m, step 1m, flash 30m, boot 5m, command 2m; the cleanup reserve
// stays zero, which means 30 s but at most a quarter of the test's time),
// the lock directory ([DefaultLockDir]), the user (root) and the watchers
// ([DefaultWatches]). [Open] applies it, so a Config built in code needs only
// what it selects.
func (c Config) WithDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.AcquireTimeout, 5*time.Minute)
	def(&c.StepTimeout, time.Minute)
	def(&c.FlashTimeout, 30*time.Minute)
	def(&c.BootTimeout, 5*time.Minute)
	def(&c.CommandTimeout, 2*time.Minute)
	if c.LockDir == "" {
		c.LockDir = DefaultLockDir()
	}
	if c.User == "" {
		c.User = "root"
	}
	if c.Watches == nil {
		c.Watches = DefaultWatches
	}
	return c
}

// Configured reports whether the configuration names a DUT at all: a driver,
// a name or tags.
func (c Config) Configured() bool {
	return len(c.Drivers) > 0 || c.Driver != "" || c.Name != "" || len(c.Tags) > 0
}

// Option changes a Config; options given to [Acquire] override the
// environment.
type Option func(*Config)

// WithDrivers hands the harness driver values built in code (sim.New,
// qemu.New, dutlink.New with their options): only they are searched, no
// driver needs registering and none reads the environment, so tests with
// drivers of their own can run in parallel. It also counts as a
// configuration: a test that gives drivers never skips for want of DUT_*
// variables.
func WithDrivers(d ...driver.Driver) Option {
	return func(c *Config) { c.Drivers = append([]driver.Driver(nil), d...) }
}

// WithDriver selects the driver, as DUT_DRIVER does.
func WithDriver(name string) Option { return func(c *Config) { c.Driver = name } }

// WithName selects a device by name or serial, as DUT_NAME does.
func WithName(name string) Option { return func(c *Config) { c.Name = name } }

// WithTags selects devices carrying all of tags, as DUT_TAGS does.
func WithTags(tags ...string) Option { return func(c *Config) { c.Tags = tags } }

// WithImage sets the image Flash writes, as DUT_IMAGE does.
func WithImage(path string) Option { return func(c *Config) { c.Image = path } }

// Required makes a missing DUT a failure, as DUT_REQUIRE=1 does.
func Required() Option { return func(c *Config) { c.Require = true } }

// WithLockDir sets the lock directory, as DUT_LOCK_DIR does.
func WithLockDir(dir string) Option { return func(c *Config) { c.LockDir = dir } }

// WithAcquireTimeout bounds the wait for a busy DUT, as DUT_ACQUIRE_TIMEOUT does.
func WithAcquireTimeout(d time.Duration) Option { return func(c *Config) { c.AcquireTimeout = d } }

// WithCleanupReserve sets the time kept for cleanup before the test's
// deadline, as DUT_CLEANUP_RESERVE does.
func WithCleanupReserve(d time.Duration) Option { return func(c *Config) { c.CleanupReserve = d } }

// WithBootTimeout bounds power-on to a logged-in shell, as DUT_BOOT_TIMEOUT does.
func WithBootTimeout(d time.Duration) Option { return func(c *Config) { c.BootTimeout = d } }

// WithCommandTimeout bounds one Run or Expect, as DUT_COMMAND_TIMEOUT does.
func WithCommandTimeout(d time.Duration) Option { return func(c *Config) { c.CommandTimeout = d } }

// WithStepTimeout bounds one power or storage step, as DUT_STEP_TIMEOUT does.
func WithStepTimeout(d time.Duration) Option { return func(c *Config) { c.StepTimeout = d } }

// WithFlashTimeout bounds one flash, as DUT_FLASH_TIMEOUT does.
func WithFlashTimeout(d time.Duration) Option { return func(c *Config) { c.FlashTimeout = d } }

// WithBmap sets the bmap Flash uses, as DUT_BMAP does: a path, or "none"
// to write every byte of the image even when a bmap lies beside it.
func WithBmap(path string) Option { return func(c *Config) { c.Bmap = path } }

// SkippingHoles makes Flash leave the holes of a sparse raw image without a
// bmap as they were on the target, as DUT_FLASH_SKIP_HOLES=1 does.
func SkippingHoles() Option { return func(c *Config) { c.SkipHoles = true } }

// WithCredentials sets the console login, as DUT_USER and DUT_PASSWORD do.
func WithCredentials(user, password string) Option {
	return func(c *Config) { c.User, c.Password = user, password }
}

// WithCharDelay paces console input, as DUT_CONSOLE_CHAR_DELAY does.
func WithCharDelay(d time.Duration) Option { return func(c *Config) { c.CharDelay = d } }

// WithMaxLine sets the longest command line the DUT's shell takes, as
// DUT_CONSOLE_MAX_LINE does.
func WithMaxLine(n int) Option { return func(c *Config) { c.MaxLine = n } }

// WithWatch adds a console watcher.
func WithWatch(w Watch) Option {
	return func(c *Config) { c.Watches = append(append([]Watch(nil), c.Watches...), w) }
}

// defaultCleanupReserve is the cleanup reserve when none is set.
const defaultCleanupReserve = 30 * time.Second

// cleanupReserve is the time kept for cleanup before deadline dl, decided
// once, when the DUT is acquired: cfg.CleanupReserve when set, whole;
// otherwise 30 s but at most a quarter of the time left.
func cleanupReserve(dl time.Time, cfg Config) time.Duration {
	if cfg.CleanupReserve > 0 {
		return cfg.CleanupReserve
	}
	return min(defaultCleanupReserve, time.Until(dl)/4)
}
