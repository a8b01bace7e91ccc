package harness

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/step"
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
	lctx, st := step.Start(ctx, "lock", "dir", cfg.LockDir, "timeout", cfg.AcquireTimeout)
	l, err := lease.Acquire(lctx, request(cfg, logf), who)
	if err == nil {
		st.Set("key", l.Info().Key())
	}
	st.End(err)
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
	octx, cancel := context.WithTimeout(step.WithDevice(ctx, l.Info().Name), cfg.StepTimeout)
	defer cancel()
	octx, st := step.Start(octx, "open")
	dev, err := l.Open(octx)
	st.End(err)
	if err != nil {
		_ = l.Release()
		return nil, openFailure(l, err)
	}
	return dev, nil
}

// openFailure types the failure to open the device of lease l.
func openFailure(l *lease.Lease, err error) error {
	if errors.Is(err, driver.ErrBadConfig) {
		return &ConfigError{Step: "open", Device: l.Info().Name, Err: err}
	}
	return &InfraError{Step: "open", Device: l.Info().Name, Err: err}
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

// OpenAll opens one session per configuration, as [Open] does, taking
// every lease at once (see [lease.AcquireAll]): it waits, up to the first
// configuration's AcquireTimeout and ctx, until every DUT is free, holding
// none meanwhile, so that two users that want the same DUTs in opposite
// orders never deadlock. No two configurations get the same DUT. Every
// configuration must use the same lock directory. On failure nothing is
// left held or powered.
func OpenAll(ctx context.Context, cfgs []Config, who Holder, logf func(string, ...any)) ([]*Session, error) {
	return openAll(ctx, cfgs, who, logf, nil)
}

// openAll is OpenAll; tracers, when given, trace each session's steps
// (taking the leases, done for all at once, goes to ctx's tracer).
func openAll(ctx context.Context, cfgs []Config, who Holder, logf func(string, ...any), tracers []*step.Tracer) ([]*Session, error) {
	ctx = withLogTracer(ctx, logf)
	if logf == nil {
		logf = func(string, ...any) {}
	}
	reqs := make([]lease.Request, len(cfgs))
	for i := range cfgs {
		cfg, err := checkConfig(cfgs[i])
		if err != nil {
			return nil, err
		}
		cfgs[i] = cfg
		reqs[i] = request(cfg, logf)
	}
	start := time.Now()
	lctx, st := step.Start(ctx, "lock all", "devices", len(reqs))
	ls, err := lease.AcquireAll(lctx, reqs, who)
	st.End(err)
	if err != nil {
		return nil, classifyLeaseError(err)
	}
	sessions := make([]*Session, 0, len(ls))
	fail := func(err error) ([]*Session, error) {
		for _, s := range sessions {
			_ = s.Close(context.WithoutCancel(ctx))
		}
		for _, l := range ls[len(sessions):] {
			_ = l.Release()
		}
		return nil, err
	}
	for i, l := range ls {
		ctx := ctx
		if tracers != nil {
			ctx = step.WithTracer(ctx, tracers[i])
		}
		ctx, st := step.Start(step.WithDevice(ctx, l.Info().Name), "acquire")
		octx, ost := step.Start(ctx, "open")
		dev, err := l.Open(octx)
		ost.End(err)
		if err != nil {
			st.End(err)
			return fail(openFailure(l, err)) // l is released with the rest
		}
		logf("acquire: locked %s (%s) after %s", driver.Describe(dev), l.Path(), since(start))
		s, err := openSession(ctx, cfgs[i], l, dev, logf)
		st.End(err)
		if err != nil {
			// openSession closed dev and released l.
			ls = append(ls[:i:i], ls[i+1:]...)
			return fail(err)
		}
		sessions = append(sessions, s)
	}
	return sessions, nil
}
