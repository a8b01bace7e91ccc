package harness

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/internal/lock"
)

// Reservation is a DUT selected and locked by [Reserve]. Unlike a [Session]
// it changes nothing on the device: tools (the dut command) use it to switch
// power, storage or pins by hand, or to attach to a running DUT's console,
// while excluding every test and every other tool exactly as a test's lock
// does.
type Reservation struct {
	dev   driver.Device
	lease *lock.Lease
}

// Reserve selects a DUT as cfg says and locks it, with the rules and the
// lock of [Open] (waiting up to cfg.AcquireTimeout and ctx), but does not
// power it off, switch its storage or open its console. cfg.Image is not
// checked. Failures after the configuration checks are [*InfraError]s; a
// device that stays busy gives one with Step "acquire" that names its
// holder. Release the reservation with [Reservation.Release].
func Reserve(ctx context.Context, cfg Config, who Holder, logf func(string, ...any)) (*Reservation, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	cfg = cfg.WithDefaults()
	if !cfg.Configured() {
		return nil, fmt.Errorf("%w: set %s (e.g. sim), %s or %s", ErrNotConfigured, Env.Driver, Env.Name, Env.Tags)
	}
	lease, dev, err := selectAndLock(ctx, cfg, who, logf)
	if err != nil {
		return nil, err
	}
	return &Reservation{dev: dev, lease: lease}, nil
}

// Device returns the reserved device.
func (r *Reservation) Device() driver.Device { return r.dev }

// LockPath returns the lock file that holds the device.
func (r *Reservation) LockPath() string { return r.lease.Path() }

// Release gives the lock up, leaving the device as it is (powered, storage
// where it was). It does not close the device. Calling it again does
// nothing.
func (r *Reservation) Release() error {
	if err := r.lease.Release(); err != nil {
		return &InfraError{Step: "release lock", Device: r.dev.Name(), Err: err}
	}
	return nil
}

// LockHolder reports whether dev is locked in the lock directory dir (a
// test's [Session], a [Reservation], anything using the harness's lock) and,
// if so, by whom. A zero Holder with held true means the holder has not
// recorded who it is yet. It never waits and never touches the device.
func LockHolder(dir string, dev driver.Device) (h Holder, held bool, err error) {
	return lock.ReadHolder(dir, lockKey(dev))
}

// lockKey is the key a device is locked under.
func lockKey(d driver.Device) string { return d.Driver() + "/" + d.Name() }

// selectAndLock discovers the devices of the drivers cfg names, selects the
// candidates and locks the first free one (waiting up to cfg.AcquireTimeout
// and ctx). cfg has its defaults and is configured.
func selectAndLock(ctx context.Context, cfg Config, who Holder, logf func(string, ...any)) (*lock.Lease, driver.Device, error) {
	var drivers []driver.Driver
	if cfg.Driver != "" {
		d, err := driver.Lookup(cfg.Driver)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %w", ErrBadConfig, Env.Driver, err)
		}
		drivers = append(drivers, d)
	} else {
		for _, name := range driver.Drivers() {
			d, _ := driver.Lookup(name)
			drivers = append(drivers, d)
		}
		if len(drivers) == 0 {
			_, err := driver.Lookup("")
			return nil, nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
		}
	}

	var all []driver.Device
	var failed []error
	for _, d := range drivers {
		start := time.Now()
		devs, err := d.Discover(ctx)
		if err != nil {
			// A driver chosen by name must work; among all the imported
			// drivers, one that cannot run here (no QEMU binary, say) must
			// not hide the devices of the others.
			if cfg.Driver != "" {
				if errors.Is(err, driver.ErrBadConfig) {
					return nil, nil, &ConfigError{Step: "discover " + d.Name() + " devices", Err: err}
				}
				return nil, nil, &InfraError{Step: "discover " + d.Name() + " devices", Err: err}
			}
			logf("discover: driver %s skipped: %v", d.Name(), err)
			failed = append(failed, fmt.Errorf("driver %s: %w", d.Name(), err))
			continue
		}
		logf("discover: driver %s found %d device(s) in %s", d.Name(), len(devs), since(start))
		all = append(all, devs...)
	}
	if len(all) == 0 && len(failed) > 0 {
		return nil, nil, &InfraError{Step: "discover devices", Err: errors.Join(failed...)}
	}
	candidates, err := driver.Select(all, cfg.Name, cfg.Tags)
	if err != nil {
		// Devices were found, but none is the one asked for: the name or
		// tags are the user's to fix. No device at all is the lab's.
		if len(all) > 0 {
			return nil, nil, &ConfigError{Step: "select", Err: fmt.Errorf("%w (check %s and %s)", err, Env.Name, Env.Tags)}
		}
		return nil, nil, &InfraError{Step: "select", Err: err}
	}
	keys := make([]string, len(candidates))
	for i, d := range candidates {
		keys[i] = lockKey(d)
	}
	actx, cancel := context.WithTimeout(ctx, cfg.AcquireTimeout)
	defer cancel()
	start := time.Now()
	lease, err := lock.Acquire(actx, cfg.LockDir, keys, who)
	if err != nil {
		return nil, nil, &InfraError{Step: "acquire", Err: err}
	}
	var chosen driver.Device
	for i, k := range keys {
		if k == lease.Key() {
			chosen = candidates[i]
		}
	}
	// The device found before the wait may have been closed by the test
	// that held it meanwhile: ask its driver again now that it is ours.
	dev, err := rediscover(ctx, drivers, chosen)
	if err != nil {
		_ = lease.Release()
		return nil, nil, &InfraError{Step: "discover " + chosen.Driver() + " devices", Device: chosen.Name(), Err: err}
	}
	logf("acquire: locked %s (%s) after %s", driver.Describe(dev), lease.Path(), since(start))
	return lease, dev, nil
}
