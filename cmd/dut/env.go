package main

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

// The DUT_* variables dut reads, with the meaning the test harness gives
// them.
const (
	envDriver         = "DUT_DRIVER"
	envName           = "DUT_NAME"
	envTags           = "DUT_TAGS"
	envLockDir        = "DUT_LOCK_DIR"
	envAcquireTimeout = "DUT_ACQUIRE_TIMEOUT"
	envStepTimeout    = "DUT_STEP_TIMEOUT"
	envFlashTimeout   = "DUT_FLASH_TIMEOUT"
	envImage          = "DUT_IMAGE"
	envBmap           = "DUT_BMAP"
	envSkipHoles      = "DUT_FLASH_SKIP_HOLES"
)

// errBadEnv is wrapped by the errors about a malformed DUT_* variable.
var errBadEnv = errors.New("bad DUT configuration")

// config is what a dut command works with: the selection, the lock and the
// time limits, from the DUT_* environment and the global flags.
type config struct {
	// Drivers are the drivers to search; nil means the registered ones.
	Drivers []driver.Driver
	Driver  string
	Name    string
	Tags    []string
	LockDir string
	// AcquireTimeout bounds the wait for a busy device; StepTimeout one
	// power or storage step (and each driver's discovery); FlashTimeout
	// one flash.
	AcquireTimeout, StepTimeout, FlashTimeout time.Duration
	Bmap                                      string
	SkipHoles                                 bool
}

// Defaults of config, the harness's.
const (
	defaultAcquireTimeout = 5 * time.Minute
	defaultStepTimeout    = time.Minute
	defaultFlashTimeout   = 30 * time.Minute
)

// configFromEnv reads the DUT_* variables dut shares with the harness.
// Malformed ones are an error wrapping errBadEnv that names the variable.
func configFromEnv() (config, error) {
	c := config{
		Driver:         strings.TrimSpace(os.Getenv(envDriver)),
		Name:           strings.TrimSpace(os.Getenv(envName)),
		LockDir:        os.Getenv(envLockDir),
		Bmap:           strings.TrimSpace(os.Getenv(envBmap)),
		AcquireTimeout: defaultAcquireTimeout,
		StepTimeout:    defaultStepTimeout,
		FlashTimeout:   defaultFlashTimeout,
	}
	if c.LockDir == "" {
		c.LockDir = lease.DefaultDir()
	}
	var errs []error
	tags, err := driver.ParseTags(os.Getenv(envTags))
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", envTags, err))
	}
	c.Tags = tags
	if v := strings.TrimSpace(os.Getenv(envSkipHoles)); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: want 1, true, 0 or false", envSkipHoles, v))
		}
		c.SkipHoles = on
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{envAcquireTimeout, &c.AcquireTimeout}, {envStepTimeout, &c.StepTimeout}, {envFlashTimeout, &c.FlashTimeout}} {
		v := strings.TrimSpace(os.Getenv(d.name))
		if v == "" {
			continue
		}
		dur, err := time.ParseDuration(v)
		if err != nil || dur < 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want a duration such as 90s or 5m", d.name, v))
			continue
		}
		if dur > 0 {
			*d.dst = dur
		}
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("%w: %w", errBadEnv, err)
	}
	return c, nil
}

// request is the lease request for the devices c selects.
func (c config) request(logf func(string, ...any)) lease.Request {
	return lease.Request{Drivers: c.Drivers, Driver: c.Driver, Name: c.Name, Tags: c.Tags, Dir: c.LockDir, Timeout: c.AcquireTimeout, Logf: logf}
}

// lookup returns the driver called name among c.Drivers, or in the
// registry when c.Drivers is nil.
func (c config) lookup(name string) (driver.Driver, error) {
	if c.Drivers == nil {
		return driver.Lookup(name)
	}
	var names []string
	for _, d := range c.Drivers {
		if d.Name() == name {
			return d, nil
		}
		names = append(names, d.Name())
	}
	return nil, fmt.Errorf("%w %q: the drivers are %s", driver.ErrUnknownDriver, name, strings.Join(names, ", "))
}
