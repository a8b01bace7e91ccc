// Package exporter serves a host's devices under test over the network: the
// server side of the jumpstarter.dut.v1 protocol (proto/), which the
// `remote` driver calls and `dut serve` runs.
//
// An [Exporter] owns the devices its drivers discover (any driver: dutlink,
// qemu, sim), filtered by name and tags, and serves every capability they
// have, one typed connect-go service per capability, on one [http.Handler]
// ([Exporter.Handler]): gRPC, gRPC-Web and Connect, so grpcurl works and
// the calls without side effects are plain HTTP GETs.
//
// Leases are the host's own ([lease.Acquire] on the host's lock directory),
// so a local go test, a dut command on the host and a remote client never
// hold one device at once. A granted lease lives while its session (a
// bidirectional stream) is attached: when the client's connection closes
// or its pings stop for [Config.KeepaliveTimeout], the exporter powers the
// device off, switches its storage off and, for a lease taken by Acquire,
// frees it. A lease made by CreateLease (for another party, handed over as
// its token) outlives its sessions until its idle time-to-live passes with
// none. Only a lease's holder (the token) may act on its device, and only
// while a session keeps the lease alive; anyone authorised may list devices
// and holders.
//
// The console of a leased device is opened when the lease starts and read
// into a transcript for the whole lease; clients read it from a byte offset,
// so a reconnect resumes with no byte lost or doubled.
//
// Callers authenticate with a bearer token ([Config.Tokens]) or a client
// certificate; see [Exporter.Handler] and [Listen].
package exporter

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1/dutv1connect"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/imagecache"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/wire"
)

// Config configures an [Exporter].
type Config struct {
	// Name is the exporter's name in errors, logs and evidence; default
	// the host name.
	Name string
	// Drivers are the drivers whose devices to serve, as values; nil means
	// the registered ones (the one named by Driver, or all).
	Drivers []driver.Driver
	// Driver, when set, serves only the devices of that driver.
	Driver string
	// Names, when set, serve only the devices of these names or serials.
	Names []string
	// Tags, when set, serve only the devices carrying all of them.
	Tags []string
	// LockDir is the host's lock directory, shared with local users;
	// "" means [lease.DefaultDir].
	LockDir string
	// Tokens are the callers' credentials: bearer token to the caller's
	// name. Empty: callers need none (only for a unix socket, or with a
	// client CA; see [Listen]).
	Tokens map[string]string
	// KeepaliveInterval is how often a session's client must ping;
	// default 2 s.
	KeepaliveInterval time.Duration
	// KeepaliveTimeout is how long a session may go without a ping before
	// the exporter ends it; default 10 s (the bound on noticing a silent
	// network).
	KeepaliveTimeout time.Duration
	// IdleTTL is how long a granted lease lives with no session when the
	// request names none; default 10 s.
	IdleTTL time.Duration
	// MaxIdleTTL bounds what a request may ask for; default 24 h.
	MaxIdleTTL time.Duration
	// TranscriptBytes is how much of each console transcript is kept for
	// readers that fall behind; default 16 MiB.
	TranscriptBytes int64
	// Images is the image cache flashes are served from; nil serves no
	// flashing (code "unsupported").
	Images *imagecache.Cache
	// Logger receives the exporter's structured log; nil discards it.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name, _ = os.Hostname()
	}
	c.KeepaliveInterval = cmp.Or(c.KeepaliveInterval, 2*time.Second)
	c.KeepaliveTimeout = cmp.Or(c.KeepaliveTimeout, 10*time.Second)
	c.IdleTTL = cmp.Or(c.IdleTTL, 10*time.Second)
	c.MaxIdleTTL = cmp.Or(c.MaxIdleTTL, 24*time.Hour)
	c.TranscriptBytes = cmp.Or(c.TranscriptBytes, 16<<20)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Exporter serves devices; see the package documentation.
type Exporter struct {
	cfg  Config
	log  *slog.Logger
	req  lease.Request // what every lease and listing searches
	mu   sync.Mutex
	held map[string]*held // by token
	// closing is closed by Shutdown: no new leases.
	closing chan struct{}
	once    sync.Once
}

// New returns an exporter of cfg's devices. It checks that the drivers it
// names exist; it discovers nothing yet.
func New(cfg Config) (*Exporter, error) {
	cfg = cfg.withDefaults()
	if cfg.KeepaliveTimeout <= cfg.KeepaliveInterval {
		return nil, fmt.Errorf("%w: the keepalive timeout (%s) must be longer than the interval (%s)", driver.ErrBadConfig, cfg.KeepaliveTimeout, cfg.KeepaliveInterval)
	}
	e := &Exporter{cfg: cfg, log: cfg.Logger, held: map[string]*held{}, closing: make(chan struct{})}
	drvs, err := e.exportedDrivers()
	if err != nil {
		return nil, err
	}
	e.req = lease.Request{Drivers: drvs, Tags: cfg.Tags, Dir: cfg.LockDir}
	return e, nil
}

// exportedDrivers returns the drivers to serve, each narrowed to cfg.Names.
func (e *Exporter) exportedDrivers() ([]driver.Driver, error) {
	var drvs []driver.Driver
	switch {
	case e.cfg.Drivers != nil:
		drvs = e.cfg.Drivers
	case e.cfg.Driver != "":
		d, err := driver.Lookup(e.cfg.Driver)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", driver.ErrBadConfig, err)
		}
		drvs = []driver.Driver{d}
	default:
		for _, name := range driver.Drivers() {
			d, _ := driver.Lookup(name)
			drvs = append(drvs, d)
		}
	}
	if e.cfg.Driver != "" {
		drvs = slices.DeleteFunc(slices.Clone(drvs), func(d driver.Driver) bool { return d.Name() != e.cfg.Driver })
	}
	if len(drvs) == 0 {
		return nil, fmt.Errorf("%w: no driver to serve (asked for %q; registered: %s)", driver.ErrBadConfig, e.cfg.Driver, strings.Join(driver.Drivers(), ", "))
	}
	if len(e.cfg.Names) == 0 {
		return drvs, nil
	}
	out := make([]driver.Driver, len(drvs))
	for i, d := range drvs {
		out[i] = filtered{Driver: d, keep: func(i driver.Info) bool {
			return slices.Contains(e.cfg.Names, i.Name) || (i.Serial != "" && slices.Contains(e.cfg.Names, i.Serial))
		}}
	}
	return out, nil
}

// filtered is a driver whose discovery keeps only the devices keep says.
type filtered struct {
	driver.Driver
	keep func(driver.Info) bool
}

// Discover lists the driver's devices that keep keeps.
func (f filtered) Discover(ctx context.Context) ([]driver.Info, error) {
	infos, err := f.Driver.Discover(ctx)
	return slices.DeleteFunc(infos, func(i driver.Info) bool { return !f.keep(i) }), err
}

// Name is the exporter's name.
func (e *Exporter) Name() string { return e.cfg.Name }

// Handler serves every service of the protocol, plus GET /healthz and the
// image cache over plain HTTP (PUT and HEAD /v1/images/SHA256, for curl),
// each call authenticated by [Config.Tokens] (see [Exporter.Authenticate]).
func (e *Exporter) Handler() http.Handler {
	mux := http.NewServeMux()
	opts := []connect.HandlerOption{connect.WithInterceptors(wire.ServerInterceptor(e.cfg.Name)), connect.WithReadMaxBytes(maxMessage)}
	mux.Handle(dutv1connect.NewDeviceServiceHandler(deviceService{e}, opts...))
	mux.Handle(dutv1connect.NewLeaseServiceHandler(leaseService{e}, opts...))
	mux.Handle(dutv1connect.NewPowerServiceHandler(powerService{e}, opts...))
	mux.Handle(dutv1connect.NewStorageServiceHandler(storageService{e}, opts...))
	mux.Handle(dutv1connect.NewConsoleServiceHandler(consoleService{e}, opts...))
	mux.Handle(dutv1connect.NewPinServiceHandler(pinService{e}, opts...))
	mux.Handle(dutv1connect.NewMeterServiceHandler(meterService{e}, opts...))
	mux.Handle(dutv1connect.NewConfigServiceHandler(configService{e}, opts...))
	mux.Handle(dutv1connect.NewFlashServiceHandler(flashService{e}, opts...))
	e.imageHandlers(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "ok %s\n", e.cfg.Name)
	})
	return e.Authenticate(mux)
}

// maxMessage bounds one request message: a console write or an upload
// chunk (4 MiB) with room for its envelope.
const maxMessage = 5 << 20

// Shutdown ends every lease the exporter holds (the device powered off,
// its storage switched off, the lease released) and refuses new ones. It
// returns when all are ended or ctx ends.
func (e *Exporter) Shutdown(ctx context.Context) error {
	e.once.Do(func() { close(e.closing) })
	e.mu.Lock()
	all := make([]*held, 0, len(e.held))
	for _, h := range e.held {
		all = append(all, h)
	}
	e.mu.Unlock()
	var errs []error
	for _, h := range all {
		if err := h.end(ctx, "exporter shutting down"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// shuttingDown is the error of a request that comes after Shutdown.
func (e *Exporter) shuttingDown() error {
	select {
	case <-e.closing:
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%w: exporter %s is shutting down", driver.ErrGone, e.cfg.Name))
	default:
		return nil
	}
}
