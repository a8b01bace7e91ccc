package exporter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/wire"
)

func durationProto(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// leaseService is the LeaseService.
type leaseService struct{ e *Exporter }

// request is the host lease request for a selector: the exporter's own
// narrowing (drivers, names, tags) and the selector's.
func (e *Exporter) request(sel *dutv1.Selector, wait time.Duration) lease.Request {
	r := e.req
	r.Driver = sel.GetDriver()
	r.Name = sel.GetName()
	r.Tags = append(slices.Clone(e.req.Tags), sel.GetTags()...)
	r.Timeout = wait
	if keys := sel.GetKeys(); len(keys) > 0 {
		drvs := make([]driver.Driver, len(r.Drivers))
		for i, d := range r.Drivers {
			drvs[i] = filtered{Driver: d, keep: func(i driver.Info) bool { return slices.Contains(keys, i.Key()) }}
		}
		r.Drivers = drvs
	}
	return r
}

// holderFor is the lease file's record of a remote holder: the client's
// test, pid, host and command, and who the exporter knows it as.
func holderFor(p *dutv1.Holder, user string) lease.Holder {
	h, _ := wire.HolderFromProto(p)
	h.Since = time.Time{}
	via := "remote"
	if user != "" {
		via = "remote user " + user
	}
	h.Command = strings.TrimSpace(fmt.Sprintf("[%s] %s", via, h.Command))
	if h.PID == 0 {
		h.PID = -1 // not a process of this host: never this exporter's pid
	}
	if h.Host == "" {
		h.Host = "unknown host"
	}
	return h
}

// ttl is the idle time-to-live a request asks for, bounded by the
// exporter's; above the bound is refused when strict.
func (e *Exporter) ttl(d *durationpb.Duration, strict bool) (time.Duration, error) {
	t := d.AsDuration()
	switch {
	case d == nil || t == 0:
		return e.cfg.IdleTTL, nil
	case t < 0:
		return 0, fmt.Errorf("%w: idle_ttl %s is negative", driver.ErrInvalidArgument, t)
	case t > e.cfg.MaxIdleTTL && strict:
		return 0, fmt.Errorf("%w: idle_ttl %s is above exporter %s's maximum of %s", driver.ErrInvalidArgument, t, e.cfg.Name, e.cfg.MaxIdleTTL)
	}
	return min(t, e.cfg.MaxIdleTTL), nil
}

// Acquire waits in arrival order for a device the selector matches.
func (s leaseService) Acquire(ctx context.Context, req *connect.Request[dutv1.AcquireRequest], stream *connect.ServerStream[dutv1.AcquireResponse]) error {
	e := s.e
	if err := e.shuttingDown(); err != nil {
		return err
	}
	m := req.Msg
	ttl, err := e.ttl(m.GetIdleTtl(), false)
	if err != nil {
		return err
	}
	if w := m.GetWait().AsDuration(); w < 0 {
		return fmt.Errorf("%w: wait %s is negative", driver.ErrInvalidArgument, w)
	}
	user := userOf(ctx)
	who := holderFor(m.GetHolder(), user)
	r := e.request(m.GetSelector(), m.GetWait().AsDuration())
	start := time.Now()
	l, err := lease.TryAcquire(ctx, r, who)
	var be *lease.BusyError
	if errors.As(err, &be) {
		if err := stream.Send(&dutv1.AcquireResponse{Event: &dutv1.AcquireResponse_Waiting{Waiting: waitingOf(be, start)}}); err != nil {
			return err
		}
		l, err = e.acquireWaiting(ctx, r, who, stream, start)
	}
	if err != nil {
		return err
	}
	h, err := e.grant(ctx, l, user, true, ttl)
	if err != nil {
		return err
	}
	if err := stream.Send(&dutv1.AcquireResponse{Event: &dutv1.AcquireResponse_Granted{Granted: h.leaseProto()}}); err != nil {
		h.end(ctx, "the client went away before it got its lease")
		return err
	}
	return nil
}

// waitingReport is how often a waiting Acquire says it still waits.
const waitingReport = 2 * time.Second

// acquireWaiting waits for the lease, sending a Waiting message every
// waitingReport with the holders then.
func (e *Exporter) acquireWaiting(ctx context.Context, r lease.Request, who lease.Holder, stream *connect.ServerStream[dutv1.AcquireResponse], start time.Time) (*lease.Lease, error) {
	type result struct {
		l   *lease.Lease
		err error
	}
	got := make(chan result, 1)
	go func() {
		l, err := lease.Acquire(ctx, r, who)
		got <- result{l, err}
	}()
	tick := time.NewTicker(waitingReport)
	defer tick.Stop()
	for {
		select {
		case res := <-got:
			return res.l, res.err
		case <-tick.C:
			msg := &dutv1.Waiting{Waited: durationProto(time.Since(start)), Holders: e.holders(ctx, r)}
			if err := stream.Send(&dutv1.AcquireResponse{Event: &dutv1.AcquireResponse_Waiting{Waiting: msg}}); err != nil {
				// The client is gone: the Acquire ends with ctx.
				if res := <-got; res.l != nil {
					res.l.Release()
				}
				return nil, err
			}
		}
	}
}

// waitingOf is the first Waiting message, from TryAcquire's busy error.
func waitingOf(be *lease.BusyError, start time.Time) *dutv1.Waiting {
	w := &dutv1.Waiting{Waited: durationProto(time.Since(start))}
	for i, d := range be.Devices {
		dh := &dutv1.DeviceHolder{Device: d.Key(), Held: true}
		if i < len(be.Holders) && be.Holders[i] != (lease.Holder{}) {
			dh.Holder = wire.HolderToProto(be.Holders[i], "")
		}
		w.Holders = append(w.Holders, dh)
	}
	return w
}

// TryAcquire leases a free device at once, or fails with "busy".
func (s leaseService) TryAcquire(ctx context.Context, req *connect.Request[dutv1.TryAcquireRequest]) (*connect.Response[dutv1.TryAcquireResponse], error) {
	h, err := s.e.tryGrant(ctx, req.Msg.GetSelector(), req.Msg.GetHolder(), req.Msg.GetIdleTtl(), 0, true)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dutv1.TryAcquireResponse{Lease: h.leaseProto()}), nil
}

// CreateLease takes a lease for another party.
func (s leaseService) CreateLease(ctx context.Context, req *connect.Request[dutv1.CreateLeaseRequest]) (*connect.Response[dutv1.CreateLeaseResponse], error) {
	m := req.Msg
	h, err := s.e.tryGrant(ctx, m.GetSelector(), m.GetHolder(), m.GetIdleTtl(), m.GetWait().AsDuration(), false)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dutv1.CreateLeaseResponse{Lease: h.leaseProto()}), nil
}

// tryGrant leases a device, waiting at most wait (zero: not at all).
func (e *Exporter) tryGrant(ctx context.Context, sel *dutv1.Selector, holder *dutv1.Holder, ttlp *durationpb.Duration, wait time.Duration, releaseOnDetach bool) (*held, error) {
	if err := e.shuttingDown(); err != nil {
		return nil, err
	}
	ttl, err := e.ttl(ttlp, !releaseOnDetach)
	if err != nil {
		return nil, err
	}
	if wait < 0 {
		return nil, fmt.Errorf("%w: wait %s is negative", driver.ErrInvalidArgument, wait)
	}
	user := userOf(ctx)
	r := e.request(sel, wait)
	var l *lease.Lease
	if wait > 0 {
		l, err = lease.Acquire(ctx, r, holderFor(holder, user))
	} else {
		l, err = lease.TryAcquire(ctx, r, holderFor(holder, user))
	}
	if err != nil {
		return nil, err
	}
	return e.grant(ctx, l, user, releaseOnDetach, ttl)
}

// Release ends a lease.
func (s leaseService) Release(ctx context.Context, req *connect.Request[dutv1.ReleaseRequest]) (*connect.Response[dutv1.ReleaseResponse], error) {
	h, err := s.e.lookup(req.Msg.GetLease())
	if errors.Is(err, errNoLease) {
		// Releasing a lease already released does nothing.
		return connect.NewResponse(&dutv1.ReleaseResponse{}), nil
	}
	if err != nil {
		return nil, err
	}
	if err := h.end(ctx, "released by its holder"); err != nil && !errors.Is(err, driver.ErrGone) {
		// A device that vanished has nothing left to power off: the
		// lease is released all the same (and the exporter logged it).
		return nil, err
	}
	return connect.NewResponse(&dutv1.ReleaseResponse{WasHeld: true}), nil
}

// ListHolders says who holds each device.
func (s leaseService) ListHolders(ctx context.Context, req *connect.Request[dutv1.ListHoldersRequest]) (*connect.Response[dutv1.ListHoldersResponse], error) {
	f, err := lease.Discover(ctx, s.e.req)
	if err != nil {
		return nil, err
	}
	var out []*dutv1.DeviceHolder
	for _, info := range f.Devices {
		if len(req.Msg.GetDevices()) > 0 && !slices.Contains(req.Msg.GetDevices(), info.Key()) {
			continue
		}
		out = append(out, s.e.holderOf(info))
	}
	return connect.NewResponse(&dutv1.ListHoldersResponse{Holders: out}), nil
}

// holders lists the holders of the devices r selects.
func (e *Exporter) holders(ctx context.Context, r lease.Request) []*dutv1.DeviceHolder {
	f, err := lease.Discover(ctx, r)
	if err != nil {
		return nil
	}
	infos, _ := f.Select(r)
	var out []*dutv1.DeviceHolder
	for _, info := range infos {
		out = append(out, e.holderOf(info))
	}
	return out
}

// holderOf is one device's lease state: this exporter's holder (with its
// user), or the lease file's (a local holder).
func (e *Exporter) holderOf(info driver.Info) *dutv1.DeviceHolder {
	dh := &dutv1.DeviceHolder{Device: info.Key()}
	if h := e.heldBy(info.Key()); h != nil {
		dh.Held, dh.Holder = true, wire.HolderToProto(h.l.Holder(), h.user)
		return dh
	}
	who, held, err := lease.HolderOf(e.req.Dir, info)
	if err == nil && held {
		dh.Held = true
		if who != (lease.Holder{}) {
			dh.Holder = wire.HolderToProto(who, "")
		}
	}
	return dh
}

// deviceService is the DeviceService.
type deviceService struct{ e *Exporter }

// ListDevices describes the devices the exporter serves.
func (s deviceService) ListDevices(ctx context.Context, req *connect.Request[dutv1.ListDevicesRequest]) (*connect.Response[dutv1.ListDevicesResponse], error) {
	e := s.e
	f, err := lease.Discover(ctx, e.req)
	if err != nil {
		return nil, err
	}
	resp := &dutv1.ListDevicesResponse{Exporter: e.cfg.Name}
	m := req.Msg
	for _, info := range f.Devices {
		if m.GetDriver() != "" && info.Driver != m.GetDriver() {
			continue
		}
		if (m.GetName() != "" || len(m.GetTags()) > 0) && !selects(info, m.GetName(), m.GetTags()) {
			continue
		}
		resp.Devices = append(resp.Devices, wire.DeviceToProto(info, e.holderOf(info).GetHolder()))
	}
	for _, fd := range f.Failed {
		resp.FailedDrivers = append(resp.FailedDrivers, &dutv1.FailedDriver{Driver: fd.Driver, Error: fd.Err.Error(), Code: driver.Code(fd.Err)})
	}
	return connect.NewResponse(resp), nil
}

// selects says whether info matches a name and tags as DUT_NAME and
// DUT_TAGS select (unusable devices are listed too).
func selects(info driver.Info, name string, tags []string) bool {
	probe := info
	probe.Unusable = false
	got, err := driver.Select([]driver.Info{probe}, name, tags)
	return err == nil && len(got) == 1
}
