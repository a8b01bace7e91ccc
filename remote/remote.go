// Package remote is the `remote` driver: it uses devices under test that an
// exporter (`dut serve`, package remote/exporter) serves over the network,
// through the same harness API as a local device.
//
// Select it with DUT_DRIVER=remote and name the exporters in DUT_EXPORTER
// (one URL or a comma-separated list; unix:///run/jumpstarter/dut.sock or
// https://lab-1:7443), with DUT_EXPORTER_TOKEN (the client token) and
// DUT_EXPORTER_CA (a PEM file of the CA that signed the exporters'
// certificates, when not a system one); or build a driver value in code
// with [New] and hand it to the harness (harness.WithDrivers).
//
// Discovery lists every exporter's devices with their names, serials, tags
// and capabilities, so DUT_NAME and DUT_TAGS select exactly as locally; a
// device offers exactly the capabilities its exporter's device has
// ([driver.Capable]). Opening a device takes its lease on the exporter (the
// exporter's host lease: no local user of that host holds it meanwhile) and
// attaches a session that pings the exporter, so the exporter powers the
// device off and frees it within its keepalive bound when this process
// dies or the network goes silent. The console is read from the
// exporter's transcript by byte offset (a dropped connection resumes with
// nothing lost or doubled), and an image is flashed by the exporter's own
// flash engine after only the bytes it lacks travel ([flash.Flasher]).
//
// Errors keep their meaning across the network: a remote "powered off" is
// [driver.ErrPoweredOff], a vanished exporter [driver.ErrGone] (see
// package remote/wire).
package remote

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1/dutv1connect"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/wire"
)

// DriverName is the name the driver registers under (DUT_DRIVER=remote).
const DriverName = "remote"

// The environment variables the registered driver reads.
const (
	// EnvExporter names the exporters: URLs, comma-separated.
	EnvExporter = "DUT_EXPORTER"
	// EnvToken is the client token the exporters know this client by.
	EnvToken = "DUT_EXPORTER_TOKEN"
	// EnvCA is a PEM file of the CA that signed the exporters' certificates.
	EnvCA = "DUT_EXPORTER_CA"
	// EnvLease is a lease token handed over by whoever created the lease
	// (LeaseService.CreateLease: a Kubernetes plugin, for a pod).
	EnvLease = "DUT_EXPORTER_LEASE"
)

// Options configure a remote driver.
type Options struct {
	// Exporters are the exporters' URLs: unix:///path/to.sock,
	// https://host:port, or http://host:port (an exporter run with
	// --insecure).
	Exporters []string
	// Token is the client token ("" for none: a unix socket of an
	// exporter with no tokens, or a client certificate).
	Token string
	// RootCAs verify the exporters' certificates; nil means the system's.
	RootCAs *x509.CertPool
	// Certificates are client certificates for mutual TLS.
	Certificates []tls.Certificate
	// Lease, when set, is a lease token created for this client by
	// another party (LeaseService.CreateLease): Open attaches to that lease
	// instead of taking one, and Close ends only the session (the DUT is
	// powered off; the lease stays its creator's, until released or its
	// idle time-to-live passes with no session).
	Lease string
	// WaitReport, when set, is called while Open waits for a device
	// another holds, with the exporter's description of the wait.
	WaitReport func(device string, w *dutv1.Waiting)
}

// OptionsFromEnv reads DUT_EXPORTER, DUT_EXPORTER_TOKEN and DUT_EXPORTER_CA.
// A missing exporter, or a CA file that does not load, is an error
// wrapping [driver.ErrBadConfig].
func OptionsFromEnv() (Options, error) {
	var o Options
	for _, u := range strings.Split(os.Getenv(EnvExporter), ",") {
		if u = strings.TrimSpace(u); u != "" {
			o.Exporters = append(o.Exporters, u)
		}
	}
	if len(o.Exporters) == 0 {
		return o, fmt.Errorf("%w: %s names no exporter: set it to the exporter's URL (unix:///run/jumpstarter/dut.sock, https://lab-1:7443)", driver.ErrBadConfig, EnvExporter)
	}
	o.Token = strings.TrimSpace(os.Getenv(EnvToken))
	o.Lease = strings.TrimSpace(os.Getenv(EnvLease))
	if ca := os.Getenv(EnvCA); ca != "" {
		pool, err := LoadCA(ca)
		if err != nil {
			return o, err
		}
		o.RootCAs = pool
	}
	return o, nil
}

// LoadCA reads a PEM file of CA certificates.
func LoadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: the exporter CA %s: %w", driver.ErrBadConfig, path, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%w: the exporter CA %s holds no PEM certificate", driver.ErrBadConfig, path)
	}
	return pool, nil
}

// Driver is the remote driver. Its zero value is not usable: make one
// with [New] (or use the registered one, configured from the environment).
type Driver struct {
	fromEnv bool
	opts    Options

	mu    sync.Mutex
	conns map[string]*exporter // by URL
}

// New returns a remote driver of the exporters o names.
func New(o Options) *Driver { return &Driver{opts: o} }

func init() { driver.Register(&Driver{fromEnv: true}) }

// Name returns "remote".
func (d *Driver) Name() string { return DriverName }

// options returns the driver's options (read from the environment for the
// registered driver, each time: tests change it).
func (d *Driver) options() (Options, error) {
	if d.fromEnv {
		return OptionsFromEnv()
	}
	if len(d.opts.Exporters) == 0 {
		return d.opts, fmt.Errorf("%w: the remote driver was given no exporter (Options.Exporters)", driver.ErrBadConfig)
	}
	return d.opts, nil
}

// exporters returns a client of each exporter.
func (d *Driver) exporters() ([]*exporter, error) {
	o, err := d.options()
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conns == nil {
		d.conns = map[string]*exporter{}
	}
	var out []*exporter
	for _, u := range o.Exporters {
		key := u + "\x00" + o.Token
		ex, ok := d.conns[key]
		if !ok {
			if ex, err = dial(u, o); err != nil {
				return nil, err
			}
			d.conns[key] = ex
		}
		out = append(out, ex)
	}
	return out, nil
}

// Discover lists the devices of every exporter. Names the exporters share
// are made unique with "@exporter". An exporter that does not answer hides
// only its own devices, unless none answers: then the error (wrapping
// [driver.ErrGone]) names each.
//
// The registered driver is off while DUT_EXPORTER is unset: it finds no
// device, so that local commands and tests do not report it, unless
// DUT_DRIVER=remote asks for it (then the missing exporter is the error).
func (d *Driver) Discover(ctx context.Context) ([]driver.Info, error) {
	if d.fromEnv && strings.TrimSpace(os.Getenv(EnvExporter)) == "" && os.Getenv("DUT_DRIVER") != DriverName {
		return nil, nil
	}
	exs, err := d.exporters()
	if err != nil {
		return nil, err
	}
	type answer struct {
		infos []driver.Info
		err   error
	}
	answers := make([]answer, len(exs))
	var wg sync.WaitGroup
	for i, ex := range exs {
		wg.Go(func() {
			answers[i].infos, answers[i].err = ex.discover(ctx)
		})
	}
	wg.Wait()
	var infos []driver.Info
	var errs []error
	for _, a := range answers {
		if a.err != nil {
			errs = append(errs, a.err)
			continue
		}
		infos = append(infos, a.infos...)
	}
	if len(errs) == len(exs) {
		return nil, errors.Join(errs...)
	}
	// Devices their exporter says are held come last: a selection takes
	// a free one at once rather than queue for the first.
	slices.SortStableFunc(infos, func(a, b driver.Info) int { return cmp.Compare(heldRemotely(a), heldRemotely(b)) })
	return uniqueNames(infos), nil
}

// heldRemotely is 1 for a device its exporter says is held, else 0.
func heldRemotely(i driver.Info) int {
	if i.Fact(FactHolder) != "" {
		return 1
	}
	return 0
}

// uniqueNames suffixes "@exporter" to the names more than one exporter has.
func uniqueNames(infos []driver.Info) []driver.Info {
	count := map[string]int{}
	for _, i := range infos {
		count[i.Name]++
	}
	for k, i := range infos {
		if count[i.Name] > 1 {
			infos[k].Name = i.Name + "@" + i.Fact(FactExporter)
		}
	}
	return infos
}

// The facts a remote device's Info carries.
const (
	// FactExporter is the name of the exporter serving the device.
	FactExporter = "exporter"
	// FactURL is the URL this client reaches the exporter at.
	FactURL = "exporter_url"
	// FactKey is the device's key on the exporter ("driver/name").
	FactKey = "exporter_key"
	// FactDriver is the driver that serves the device on the exporter.
	FactDriver = "exporter_driver"
	// FactHolder, when set, describes who holds the device's lease on
	// the exporter.
	FactHolder = "exporter_holder"
)

// Open takes the device's lease on its exporter, waiting (until ctx ends)
// while another holds it, and attaches the lease's session.
func (d *Driver) Open(ctx context.Context, info driver.Info) (driver.Device, error) {
	exs, err := d.exporters()
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(exs, func(ex *exporter) bool { return ex.url == info.Fact(FactURL) })
	if i < 0 {
		return nil, fmt.Errorf("%w: %s was served by exporter %s (%s), which is no longer configured", driver.ErrNoDevice, info.Name, info.Fact(FactExporter), info.Fact(FactURL))
	}
	o, _ := d.options()
	return exs[i].open(ctx, info, o)
}

// exporter is a client of one exporter.
type exporter struct {
	url  string
	name string // what it calls itself, once known; else the URL

	devices dutv1connect.DeviceServiceClient
	leases  dutv1connect.LeaseServiceClient
	power   dutv1connect.PowerServiceClient
	storage dutv1connect.StorageServiceClient
	console dutv1connect.ConsoleServiceClient
	pins    dutv1connect.PinServiceClient
	meter   dutv1connect.MeterServiceClient
	config  dutv1connect.ConfigServiceClient
	flash   dutv1connect.FlashServiceClient
}

// dial makes the clients of the exporter at rawURL (it connects lazily).
func dial(rawURL string, o Options) (*exporter, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: exporter URL %q: %w", driver.ErrBadConfig, rawURL, err)
	}
	tr := &http.Transport{
		ForceAttemptHTTP2: true,
		Protocols:         new(http.Protocols),
		HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerStream:     16 << 20,
			MaxReceiveBufferPerConnection: 32 << 20,
			SendPingTimeout:               5 * time.Second,
			PingTimeout:                   10 * time.Second,
		},
		ResponseHeaderTimeout: 0,
		IdleConnTimeout:       90 * time.Second,
	}
	base := rawURL
	switch u.Scheme {
	case "unix":
		if u.Path == "" {
			return nil, fmt.Errorf("%w: exporter URL %q has no socket path (unix:///run/jumpstarter/dut.sock)", driver.ErrBadConfig, rawURL)
		}
		path := u.Path
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dd net.Dialer
			return dd.DialContext(ctx, "unix", path)
		}
		tr.Protocols.SetUnencryptedHTTP2(true)
		base = "http://exporter"
	case "https":
		tr.TLSClientConfig = &tls.Config{RootCAs: o.RootCAs, Certificates: o.Certificates, MinVersion: tls.VersionTLS12}
		tr.Protocols.SetHTTP2(true)
	case "http":
		tr.Protocols.SetUnencryptedHTTP2(true)
	default:
		return nil, fmt.Errorf("%w: exporter URL %q: the scheme must be unix://, https:// or http://", driver.ErrBadConfig, rawURL)
	}
	hc := &http.Client{Transport: tr}
	ex := &exporter{url: rawURL, name: rawURL}
	opts := []connect.ClientOption{connect.WithInterceptors(wire.ClientInterceptor(rawURL), bearer(o.Token)), connect.WithGRPC()}
	ex.devices = dutv1connect.NewDeviceServiceClient(hc, base, opts...)
	ex.leases = dutv1connect.NewLeaseServiceClient(hc, base, opts...)
	ex.power = dutv1connect.NewPowerServiceClient(hc, base, opts...)
	ex.storage = dutv1connect.NewStorageServiceClient(hc, base, opts...)
	ex.console = dutv1connect.NewConsoleServiceClient(hc, base, opts...)
	ex.pins = dutv1connect.NewPinServiceClient(hc, base, opts...)
	ex.meter = dutv1connect.NewMeterServiceClient(hc, base, opts...)
	ex.config = dutv1connect.NewConfigServiceClient(hc, base, opts...)
	ex.flash = dutv1connect.NewFlashServiceClient(hc, base, opts...)
	return ex, nil
}

// discover lists the exporter's devices as this driver's.
func (ex *exporter) discover(ctx context.Context) ([]driver.Info, error) {
	resp, err := ex.devices.ListDevices(ctx, connect.NewRequest(&dutv1.ListDevicesRequest{}))
	if err != nil {
		return nil, fmt.Errorf("list the devices of exporter %s: %w", ex.url, err)
	}
	name := cmp.Or(resp.Msg.GetExporter(), ex.url)
	ex.name = name
	var infos []driver.Info
	for _, d := range resp.Msg.GetDevices() {
		info := wire.DeviceFromProto(d)
		info.Driver = DriverName
		info.Facts = append([]driver.Fact{{Key: FactExporter, Value: name}, {Key: FactURL, Value: ex.url}, {Key: FactKey, Value: d.GetKey()}, {Key: FactDriver, Value: d.GetDriver()}}, info.Facts...)
		info.Ephemeral = fmt.Sprintf("%s is served by exporter %s: its lease, and what a command switched, end with the process that opened it (the exporter powers it off)", info.Name, name)
		if h := d.GetHolder(); h != nil {
			info.Facts = append(info.Facts, driver.Fact{Key: FactHolder, Value: describeHolder(h)})
			info.Problems = append(info.Problems, fmt.Sprintf("held on exporter %s by %s", name, describeHolder(h)))
		}
		infos = append(infos, info)
	}
	return infos, nil
}

// describeHolder renders a wire holder for messages.
func describeHolder(h *dutv1.Holder) string {
	s := fmt.Sprintf("pid %d on %s", h.GetPid(), h.GetHost())
	if h.GetTest() != "" {
		s = h.GetTest() + " (" + s + ")"
	}
	if h.GetUser() != "" {
		s += " as " + h.GetUser()
	}
	return s
}

// bearer adds the client token to every request.
func bearer(token string) connect.Interceptor { return bearerInterceptor(token) }

type bearerInterceptor string

func (b bearerInterceptor) set(h http.Header) {
	if b != "" {
		h.Set("Authorization", "Bearer "+string(b))
	}
}

// WrapUnary adds the token to a unary call.
func (b bearerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		b.set(req.Header())
		return next(ctx, req)
	}
}

// WrapStreamingClient adds the token to a stream.
func (b bearerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		b.set(conn.RequestHeader())
		return conn
	}
}

// WrapStreamingHandler leaves handlers alone.
func (b bearerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
