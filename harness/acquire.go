package harness

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
)

// request is the lease request cfg makes (cfg has its defaults).
func request(cfg Config, logf func(string, ...any)) lease.Request {
	return lease.Request{Drivers: cfg.Drivers, Driver: cfg.Driver, Name: cfg.Name, Tags: cfg.Tags, Dir: cfg.LockDir, Timeout: cfg.AcquireTimeout, Logf: logf}
}

// takeLease selects and leases the DUT cfg wants (waiting up to
// cfg.AcquireTimeout and ctx) and opens it. cfg has its defaults and is
// configured. Its errors are typed: a *ConfigError for the user's mistakes,
// an *InfraError for the lab's.
func takeLease(ctx context.Context, cfg Config, who Holder, logf func(string, ...any)) (*lease.Lease, driver.Device, error) {
	start := time.Now()
	l, err := lease.Acquire(ctx, request(cfg, logf), who)
	if err != nil {
		return nil, nil, classifyLeaseError(err)
	}
	dev, err := openLeased(ctx, l, cfg)
	if err != nil {
		return nil, nil, err
	}
	logf("acquire: locked %s (%s) after %s", driver.Describe(dev), l.Path(), since(start))
	return l, dev, nil
}

// openLeased opens the device of held lease l, releasing l when it cannot.
func openLeased(ctx context.Context, l *lease.Lease, cfg Config) (driver.Device, error) {
	octx, cancel := context.WithTimeout(ctx, cfg.StepTimeout)
	defer cancel()
	dev, err := l.Open(octx)
	if err != nil {
		_ = l.Release()
		info := l.Info()
		if errors.Is(err, driver.ErrBadConfig) {
			return nil, &ConfigError{Step: "open", Device: info.Name, Err: err}
		}
		return nil, &InfraError{Step: "open", Device: info.Name, Err: err}
	}
	return dev, nil
}

// classifyLeaseError tells whose failure a lease error is: a bad request
// or configuration, or a name or tags that match none of the devices
// found, is the user's; no device at all, a driver that fails, a busy
// device, the lab's.
func classifyLeaseError(err error) error {
	var de *lease.DiscoverError
	switch {
	case errors.Is(err, lease.ErrBadRequest):
		return &ConfigError{Step: "select", Err: fmt.Errorf("%s: %w", Env.Driver, err)}
	case errors.As(err, &de) && errors.Is(err, driver.ErrBadConfig):
		return &ConfigError{Step: "discover " + de.Driver + " devices", Err: de.Err}
	case errors.As(err, &de):
		return &InfraError{Step: "discover " + de.Driver + " devices", Err: de.Err}
	case errors.Is(err, driver.ErrNoDevice) && !errors.Is(err, lease.ErrNothingFound):
		return &ConfigError{Step: "select", Err: fmt.Errorf("%w (check %s and %s)", err, Env.Name, Env.Tags)}
	case errors.Is(err, driver.ErrNoDevice):
		return &InfraError{Step: "select", Err: err}
	}
	return &InfraError{Step: "acquire", Err: err}
}
