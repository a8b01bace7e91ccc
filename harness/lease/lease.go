// Package lease gives one user at a time a device under test (DUT): it
// selects a device by name, serial or tags among what the drivers discover,
// takes the device's lease and opens the device only once the lease is held.
//
// A test (through package harness), the dut command on the lab host and an
// exporter serving boards over the network all take the same lease, so no two
// of them ever drive one device. The lease is an OS file lock (flock(2)) on a
// per-device file in a lock directory shared by everything that uses the
// devices of a host ([DefaultDir], or DUT_LOCK_DIR through the harness):
//
//   - the kernel releases it when its holder dies in any way (SIGKILL, OOM),
//     so there are no stale leases;
//   - the file records who holds it ([Holder]: test, pid, host, since,
//     command), so a waiter, [HolderOf] and a [*BusyError] can name the
//     holder;
//   - waiters are served in arrival order across processes;
//   - [AcquireAll] takes several devices at once, all or none, so two users
//     that want the same devices in opposite orders never deadlock.
//
// The lock directory must be on a local file system; see the documentation
// of the lock files in the harness's README for containers and NFS.
//
// Drivers come from the registry ([driver.Register], a blank import) or are
// handed over as values in [Request.Drivers], configured in code, as
// database/sql's OpenDB takes a Connector: then no environment variable or
// package global is read.
//
// This package imports only the standard library and the harness's own
// packages.
package lease

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/internal/lock"
)

// Holder describes who holds a lease; it is recorded in the lease file.
// Zero PID, Host, Since and Command are filled in from the calling process
// when the lease is taken.
type Holder = lock.Holder

// DefaultDir is the lock directory when none is given: one per host, shared
// by every process that uses the same temporary directory.
func DefaultDir() string { return filepath.Join(os.TempDir(), "jumpstarter-locks") }

// Request says which device to lease.
type Request struct {
	// Drivers are the drivers to search, as values configured in code.
	// Nil means the registered ones: the one named by Driver, or all.
	Drivers []driver.Driver
	// Driver, when set, searches only the driver of that name (among
	// Drivers, or in the registry).
	Driver string
	// Name selects a device by name or serial.
	Name string
	// Tags select devices carrying all of them, case-insensitively.
	Tags []string
	// Dir is the lock directory; "" means [DefaultDir].
	Dir string
	// Timeout bounds the wait for a busy device (not the discovery before
	// it); zero means until the context ends.
	Timeout time.Duration
	// Logf, when not nil, receives one line per discovery.
	Logf func(format string, args ...any)
}

func (r Request) dir() string {
	if r.Dir == "" {
		return DefaultDir()
	}
	return r.Dir
}

func (r Request) logf(format string, args ...any) {
	if r.Logf != nil {
		r.Logf(format, args...)
	}
}

// ErrBadRequest is wrapped by the errors of a request that cannot be served
// as written: an unknown driver, no driver at all.
var ErrBadRequest = errors.New("bad lease request")

// drivers returns the drivers r searches.
func (r Request) drivers() ([]driver.Driver, error) {
	if r.Drivers != nil {
		if r.Driver == "" {
			return r.Drivers, nil
		}
		for _, d := range r.Drivers {
			if d.Name() == r.Driver {
				return []driver.Driver{d}, nil
			}
		}
		names := make([]string, len(r.Drivers))
		for i, d := range r.Drivers {
			names[i] = d.Name()
		}
		return nil, fmt.Errorf("%w: driver %q is not among the drivers given (%s)", ErrBadRequest, r.Driver, strings.Join(names, ", "))
	}
	if r.Driver != "" {
		d, err := driver.Lookup(r.Driver)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
		}
		return []driver.Driver{d}, nil
	}
	var out []driver.Driver
	for _, name := range driver.Drivers() {
		d, _ := driver.Lookup(name)
		out = append(out, d)
	}
	if len(out) == 0 {
		_, err := driver.Lookup("")
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return out, nil
}

// Found is what [Discover] found.
type Found struct {
	// Devices are the devices of every driver that could look, in driver
	// order, usable or not ([driver.Info.Unusable]).
	Devices []driver.Info
	// Failed are the drivers that could not look for devices (no QEMU
	// binary, a bad variable of theirs), each with its error.
	Failed []*DiscoverError

	drivers map[string]driver.Driver
}

// DiscoverError is a driver that failed to discover its devices.
type DiscoverError struct {
	Driver string
	Err    error
}

func (e *DiscoverError) Error() string {
	return fmt.Sprintf("discover %s devices: %v", e.Driver, e.Err)
}

// Unwrap returns the driver's error.
func (e *DiscoverError) Unwrap() error { return e.Err }

// Discover asks the drivers r names for their devices. A driver that fails
// is recorded in Found.Failed and does not hide the others, unless r names
// it (Request.Driver): then its failure is the error, a *DiscoverError. The
// error is also for a request naming no usable driver (wrapping
// [ErrBadRequest]) and for ctx ending.
func Discover(ctx context.Context, r Request) (Found, error) {
	drivers, err := r.drivers()
	if err != nil {
		return Found{}, err
	}
	f := Found{drivers: map[string]driver.Driver{}}
	for _, d := range drivers {
		start := time.Now()
		infos, err := d.Discover(ctx)
		if cerr := ctx.Err(); cerr != nil {
			return f, fmt.Errorf("discover %s devices: %w", d.Name(), cerr)
		}
		if err != nil {
			de := &DiscoverError{Driver: d.Name(), Err: err}
			if r.Driver != "" {
				return f, de
			}
			r.logf("discover: driver %s skipped: %v", d.Name(), err)
			f.Failed = append(f.Failed, de)
			continue
		}
		r.logf("discover: driver %s found %d device(s) in %s", d.Name(), len(infos), time.Since(start).Round(time.Millisecond))
		f.drivers[d.Name()] = d
		f.Devices = append(f.Devices, infos...)
	}
	return f, nil
}

// Select returns the usable devices that match r (see [driver.Select]). When
// none is found at all and some driver failed, the error names the drivers'
// failures too.
func (f Found) Select(r Request) ([]driver.Info, error) {
	devs, err := driver.Select(f.Devices, r.Name, r.Tags)
	if err == nil || len(f.Devices) > 0 {
		return devs, err
	}
	err = nothingFound{err}
	if len(f.Failed) > 0 {
		errs := []error{err}
		for _, de := range f.Failed {
			errs = append(errs, de)
		}
		return nil, errors.Join(errs...)
	}
	return devs, err
}

// ErrNothingFound is matched, beside [driver.ErrNoDevice], by a selection
// whose drivers found no device at all: the lab's failure (nothing
// connected), not a name or tags that match none of the devices found.
var ErrNothingFound = errors.New("no device found at all")

type nothingFound struct{ err error }

func (e nothingFound) Error() string        { return e.err.Error() }
func (e nothingFound) Unwrap() error        { return e.err }
func (e nothingFound) Is(target error) bool { return target == ErrNothingFound }

// Lease is a held device lease. Its methods may be called from any
// goroutine; Release gives it up.
type Lease struct {
	info driver.Info
	drv  driver.Driver
	l    *lock.Lease
	// cands are the devices of the lease's driver its selection matched
	// (Acquire and TryAcquire; nil for AcquireAll), the leased one first.
	cands []driver.Info
}

// Info describes the leased device as discovery found it.
func (l *Lease) Info() driver.Info { return l.info }

// Holder returns the holder recorded in the lease file.
func (l *Lease) Holder() Holder { return l.l.Holder() }

// Path returns the lease's lock file.
func (l *Lease) Path() string { return l.l.Path() }

// Open opens the leased device through its driver. Close the device (when it
// is a [driver.Closer]) before releasing the lease.
// The driver finds the lease's holder in ctx ([HolderFrom]): a driver
// that takes a lease elsewhere (the remote driver, on its exporter) names
// the same holder there.
//
// It also finds there the devices the selection matched ([CandidatesFrom]).
func (l *Lease) Open(ctx context.Context) (driver.Device, error) {
	ctx = context.WithValue(ctx, holderKey{}, l.Holder())
	if len(l.cands) > 1 {
		ctx = context.WithValue(ctx, candidatesKey{}, slices.Clone(l.cands))
	}
	dev, err := l.drv.Open(ctx, l.info)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", l.info.Name, err)
	}
	return dev, nil
}

type holderKey struct{}

// HolderFrom returns the holder of the lease whose [Lease.Open] called the
// driver with ctx, if any.
func HolderFrom(ctx context.Context) (Holder, bool) {
	h, ok := ctx.Value(holderKey{}).(Holder)
	return h, ok
}

type candidatesKey struct{}

// CandidatesFrom returns, in a driver's Open called by [Lease.Open], the
// devices of that driver the lease's selection matched, the leased one
// first (none when it matched one, or for [AcquireAll]). A driver whose
// devices another party arbitrates (the remote driver: its exporter) may
// open whichever of them that party grants first, rather than wait for
// the one this host's lease picked.
func CandidatesFrom(ctx context.Context) []driver.Info {
	c, _ := ctx.Value(candidatesKey{}).([]driver.Info)
	return c
}

// Release gives the lease up, leaving the device as it is. Calling it again
// does nothing.
func (l *Lease) Release() error {
	if err := l.l.Release(); err != nil {
		return fmt.Errorf("release the lease of %s: %w", l.info.Name, err)
	}
	return nil
}

// Acquire discovers the devices r selects and leases the first free one,
// waiting in arrival order until one is free or ctx ends; then it returns a
// [*BusyError] naming the holders. A name or tags that match nothing is an
// error wrapping [driver.ErrNoDevice] that lists what was found.
func Acquire(ctx context.Context, r Request, who Holder) (*Lease, error) {
	f, cands, err := candidates(ctx, r)
	if err != nil {
		return nil, err
	}
	wctx, cancel := r.waitContext(ctx)
	defer cancel()
	l, err := lock.Acquire(wctx, r.dir(), keys(cands), who)
	if err != nil {
		return nil, busyError(err, cands, r.dir())
	}
	return f.lease(l, cands).withCandidates(cands), nil
}

// waitContext bounds the wait for a lease by r.Timeout.
func (r Request) waitContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if r.Timeout > 0 {
		return context.WithTimeout(ctx, r.Timeout)
	}
	return context.WithCancel(ctx)
}

// TryAcquire is [Acquire] without the wait: when every device r selects is
// held, it returns a [*BusyError] at once.
func TryAcquire(ctx context.Context, r Request, who Holder) (*Lease, error) {
	f, cands, err := candidates(ctx, r)
	if err != nil {
		return nil, err
	}
	done, cancel := context.WithCancel(ctx)
	cancel() // lock.Acquire tries once with a context that is done
	l, err := lock.Acquire(done, r.dir(), keys(cands), who)
	if err != nil {
		be := busyError(err, cands, r.dir())
		if b, ok := be.(*BusyError); ok {
			b.Err, b.Waited = nil, 0
		}
		return nil, be
	}
	return f.lease(l, cands).withCandidates(cands), nil
}

// AcquireAll leases one device for every request at once, all or none,
// waiting until that is possible or ctx ends (a [*BusyError] over every
// candidate). No two requests get the same device. Holding none while it
// waits, it cannot deadlock against another user that wants the same
// devices in another order. The leases are in the order of rs. Every request
// must use the same lock directory; the first one's Timeout bounds the wait.
func AcquireAll(ctx context.Context, rs []Request, who Holder) ([]*Lease, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	dir := rs[0].dir()
	founds := make([]Found, len(rs))
	cands := make([][]driver.Info, len(rs))
	sets := make([][]string, len(rs))
	var all []driver.Info
	for i, r := range rs {
		if r.dir() != dir {
			return nil, fmt.Errorf("%w: requests %d and 1 use different lock directories (%s, %s)", ErrBadRequest, i+1, r.dir(), dir)
		}
		f, c, err := candidates(ctx, r)
		if err != nil {
			return nil, fmt.Errorf("device %d of %d: %w", i+1, len(rs), err)
		}
		founds[i], cands[i], sets[i] = f, c, keys(c)
		all = append(all, c...)
	}
	wctx, cancel := rs[0].waitContext(ctx)
	defer cancel()
	ls, err := lock.AcquireAll(wctx, dir, sets, who)
	if err != nil {
		return nil, busyError(err, uniqueInfos(all), dir)
	}
	out := make([]*Lease, len(ls))
	for i, l := range ls {
		out[i] = founds[i].lease(l, cands[i])
	}
	return out, nil
}

// candidates discovers and selects the devices r wants.
func candidates(ctx context.Context, r Request) (Found, []driver.Info, error) {
	f, err := Discover(ctx, r)
	if err != nil {
		return f, nil, err
	}
	cands, err := f.Select(r)
	return f, cands, err
}

func keys(infos []driver.Info) []string {
	out := make([]string, len(infos))
	for i, d := range infos {
		out[i] = d.Key()
	}
	return out
}

func uniqueInfos(infos []driver.Info) []driver.Info {
	var out []driver.Info
	for _, d := range infos {
		if !slices.ContainsFunc(out, func(o driver.Info) bool { return o.Key() == d.Key() }) {
			out = append(out, d)
		}
	}
	return out
}

// lease wraps the lock lease l on one of cands.
func (f Found) lease(l *lock.Lease, cands []driver.Info) *Lease {
	i := slices.IndexFunc(cands, func(d driver.Info) bool { return d.Key() == l.Key() })
	info := cands[i]
	return &Lease{info: info, drv: f.drivers[info.Driver], l: l}
}

// withCandidates records the candidates of l's driver, l's device first.
func (l *Lease) withCandidates(cands []driver.Info) *Lease {
	l.cands = []driver.Info{l.info}
	for _, c := range cands {
		if c.Driver == l.info.Driver && c.Key() != l.info.Key() {
			l.cands = append(l.cands, c)
		}
	}
	return l
}

// HolderOf reports whether the device info describes is leased in the lock
// directory dir ("" means [DefaultDir]) and, if so, by whom. A zero Holder
// with held true means the holder has not recorded who it is yet. It never
// waits and never touches the device.
func HolderOf(dir string, info driver.Info) (h Holder, held bool, err error) {
	if dir == "" {
		dir = DefaultDir()
	}
	return lock.ReadHolder(dir, info.Key())
}

// BusyError is returned when every device a request selects stays leased by
// others: at once by [TryAcquire], when ctx ends by [Acquire] and
// [AcquireAll]. It matches [driver.ErrBusy] and, through Unwrap, the
// context's error when there was a wait.
type BusyError struct {
	// Devices are the candidates, Holders[i] who held Devices[i] (the zero
	// Holder when that could not be told).
	Devices []driver.Info
	Holders []Holder
	// Waited is how long the lease was waited for.
	Waited time.Duration
	// Err is the context's error that ended the wait, nil for TryAcquire.
	Err error

	msg string
}

func (e *BusyError) Error() string { return e.msg }

// Unwrap returns the context's error.
func (e *BusyError) Unwrap() error { return e.Err }

// Is reports whether target is [driver.ErrBusy].
func (e *BusyError) Is(target error) bool { return target == driver.ErrBusy }

// busyError turns the lock's timeout into a *BusyError over cands; other
// errors (the lock directory unusable) are wrapped as they are.
func busyError(err error, cands []driver.Info, dir string) error {
	var te *lock.TimeoutError
	if !errors.As(err, &te) {
		return fmt.Errorf("lease in %s: %w", dir, err)
	}
	be := &BusyError{Holders: te.Holders, Waited: te.Waited, Err: te.Err, msg: te.Error()}
	for _, k := range te.Keys {
		if i := slices.IndexFunc(cands, func(d driver.Info) bool { return d.Key() == k }); i >= 0 {
			be.Devices = append(be.Devices, cands[i])
		}
	}
	return be
}
