package wire_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1/dutv1connect"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/wire"
)

const exporterName = "lab-1"

// errorsByToken is what the test services fail with: the request's lease
// token picks the error, so one call per case goes through a real handler.
var errorsByToken = map[string]error{}

func init() {
	for _, code := range driver.Codes() {
		errorsByToken[code] = fmt.Errorf("sim-0: power on: %w", driver.FromCode(code))
	}
	errorsByToken["refined-gone"] = fmt.Errorf("power on: %w", driver.Refine(driver.ErrGone, "DUTlink board gone"))
	errorsByToken["deadline"] = fmt.Errorf("power on: %w", context.DeadlineExceeded)
	errorsByToken["canceled"] = fmt.Errorf("power on: %w", context.Canceled)
	errorsByToken["image"] = fmt.Errorf("flash: %w", flash.ErrImage)
	errorsByToken["bmap"] = fmt.Errorf("flash: %w: %w", flash.ErrImage, flash.ErrBmap)
	errorsByToken["verify"] = fmt.Errorf("flash: %w: %w", flash.ErrTarget, flash.ErrVerify)
	errorsByToken["plain"] = errors.New("the exporter's disk is full")
	errorsByToken["nothing-found"] = nothingFound()
	errorsByToken["bad-request"] = fmt.Errorf("lease: %w", lease.ErrBadRequest)
	errorsByToken["permission"] = connect.NewError(connect.CodePermissionDenied, errors.New("lease token of another device"))
}

// nothingFound is the real error of a selection whose drivers found no
// device at all: no_device, but the lab's fault.
func nothingFound() error {
	f, err := lease.Discover(context.Background(), lease.Request{Drivers: []driver.Driver{emptyDriver{}}})
	if err != nil {
		panic(err)
	}
	_, err = f.Select(lease.Request{Name: "sim-0"})
	if !errors.Is(err, lease.ErrNothingFound) {
		panic(fmt.Sprintf("Select of nothing: %v", err))
	}
	return err
}

// emptyDriver finds no device.
type emptyDriver struct{ fakeDriver }

func (emptyDriver) Name() string                                    { return "empty" }
func (emptyDriver) Discover(context.Context) ([]driver.Info, error) { return nil, nil }

// powerService fails PowerOn with errorsByToken[token].
type powerService struct {
	dutv1connect.UnimplementedPowerServiceHandler
}

func (powerService) PowerOn(_ context.Context, req *connect.Request[dutv1.PowerOnRequest]) (*connect.Response[dutv1.PowerOnResponse], error) {
	if err, ok := errorsByToken[req.Msg.GetLease().GetToken()]; ok {
		return nil, err
	}
	return connect.NewResponse(&dutv1.PowerOnResponse{}), nil
}

// consoleService sends one chunk, then fails with errorsByToken[token] or,
// for "block", waits for the call to end.
type consoleService struct {
	dutv1connect.UnimplementedConsoleServiceHandler
}

func (consoleService) ReadConsole(ctx context.Context, req *connect.Request[dutv1.ReadConsoleRequest], stream *connect.ServerStream[dutv1.ReadConsoleResponse]) error {
	if err := stream.Send(&dutv1.ReadConsoleResponse{Offset: req.Msg.GetOffset(), Data: []byte("login: ")}); err != nil {
		return err
	}
	if req.Msg.GetLease().GetToken() == "block" {
		<-ctx.Done()
		return ctx.Err()
	}
	return errorsByToken[req.Msg.GetLease().GetToken()]
}

// leaseService's TryAcquire takes a real lease of one fake device in dir,
// as lease.TryAcquire does for the exporter.
type leaseService struct {
	dutv1connect.UnimplementedLeaseServiceHandler
	req lease.Request
}

func (s leaseService) TryAcquire(ctx context.Context, req *connect.Request[dutv1.TryAcquireRequest]) (*connect.Response[dutv1.TryAcquireResponse], error) {
	h, _ := wire.HolderFromProto(req.Msg.GetHolder())
	l, err := lease.TryAcquire(ctx, s.req, h)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	return connect.NewResponse(&dutv1.TryAcquireResponse{Lease: &dutv1.Lease{Token: "t"}}), nil
}

// fakeDriver has one device, fake/dev-0.
type fakeDriver struct{}

func (fakeDriver) Name() string { return "fake" }
func (fakeDriver) Discover(context.Context) ([]driver.Info, error) {
	return []driver.Info{{Driver: "fake", Name: "dev-0", Tags: []string{}, Capabilities: []string{}}}, nil
}
func (fakeDriver) Open(context.Context, driver.Info) (driver.Device, error) {
	return nil, driver.ErrUnsupported
}

// clients are the three protocols connect-go speaks, each against the
// same server.
type clients struct {
	power   dutv1connect.PowerServiceClient
	console dutv1connect.ConsoleServiceClient
	leases  dutv1connect.LeaseServiceClient
}

// serve starts the test services on an HTTP/2 TLS server (gRPC needs
// HTTP/2) and returns a client set per protocol.
func serve(t *testing.T, leaseReq lease.Request) (map[string]clients, *httptest.Server) {
	t.Helper()
	mux := http.NewServeMux()
	opts := connect.WithInterceptors(wire.ServerInterceptor(exporterName))
	mux.Handle(dutv1connect.NewPowerServiceHandler(powerService{}, opts))
	mux.Handle(dutv1connect.NewConsoleServiceHandler(consoleService{}, opts))
	mux.Handle(dutv1connect.NewLeaseServiceHandler(leaseService{req: leaseReq}, opts))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	out := map[string]clients{}
	for name, proto := range map[string]connect.ClientOption{
		"connect": connect.WithClientOptions(), "grpc": connect.WithGRPC(), "grpcweb": connect.WithGRPCWeb(),
	} {
		o := connect.WithClientOptions(proto, connect.WithInterceptors(wire.ClientInterceptor(srv.URL)))
		out[name] = clients{
			power:   dutv1connect.NewPowerServiceClient(srv.Client(), srv.URL, o),
			console: dutv1connect.NewConsoleServiceClient(srv.Client(), srv.URL, o),
			leases:  dutv1connect.NewLeaseServiceClient(srv.Client(), srv.URL, o),
		}
	}
	return out, srv
}

func powerOn(ctx context.Context, c dutv1connect.PowerServiceClient, token string) error {
	_, err := c.PowerOn(ctx, connect.NewRequest(&dutv1.PowerOnRequest{Lease: &dutv1.LeaseRef{Device: "sim/sim-0", Token: token}}))
	return err
}

// wantSentinel is, for each driver code, the connect code and fault the
// protocol promises (error.proto, wire's docs), written out apart from the
// package's own table so that a change there fails here.
var wantSentinel = map[string]struct {
	code  connect.Code
	fault wire.Fault
}{
	"closed":              {connect.CodeFailedPrecondition, wire.FaultLab},
	"powered_off":         {connect.CodeFailedPrecondition, wire.FaultCaller},
	"powered_on":          {connect.CodeFailedPrecondition, wire.FaultCaller},
	"storage_not_on_host": {connect.CodeFailedPrecondition, wire.FaultCaller},
	"console_busy":        {connect.CodeFailedPrecondition, wire.FaultCaller},
	"gone":                {connect.CodeUnavailable, wire.FaultLab},
	"busy":                {connect.CodeAborted, wire.FaultLab},
	"invalid_argument":    {connect.CodeInvalidArgument, wire.FaultCaller},
	"unsupported":         {connect.CodeUnimplemented, wire.FaultCaller},
	"bad_config":          {connect.CodeFailedPrecondition, wire.FaultLab},
	"no_device":           {connect.CodeNotFound, wire.FaultCaller},
}

// TestEverySentinelRoundTripsThroughAHandler: for every driver code and
// every protocol, the error a handler returns reaches the client as an
// error that matches the same sentinel and no other, keeps the exporter's
// message, names the exporter, and has the promised connect code and
// fault.
func TestEverySentinelRoundTripsThroughAHandler(t *testing.T) {
	cs, _ := serve(t, lease.Request{})
	require.Len(t, wantSentinel, len(driver.Codes()), "a driver code without a promised mapping: add it to error.proto's docs and here")
	for proto, c := range cs {
		for _, code := range driver.Codes() {
			t.Run(proto+"/"+code, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				err := powerOn(ctx, c.power, code)
				require.Error(t, err)
				sentinel := driver.FromCode(code)
				assert.ErrorIs(t, err, sentinel)
				for _, other := range driver.Codes() {
					if other != code {
						assert.NotErrorIs(t, err, driver.FromCode(other), "matches %s too", other)
					}
				}
				assert.Equal(t, code, driver.Code(err))
				assert.Equal(t, "exporter lab-1: "+errorsByToken[code].Error(), err.Error())
				var we *wire.Error
				require.ErrorAs(t, err, &we)
				assert.Equal(t, exporterName, we.Exporter)
				assert.Equal(t, wantSentinel[code].code, connect.CodeOf(err))
				assert.Equal(t, wantSentinel[code].fault, wire.FaultOf(err))
				assert.Equal(t, wantSentinel[code].fault, wire.FaultOf(errorsByToken[code]), "the local error's fault")
			})
		}
	}
}

// TestOtherErrorsRoundTrip: refined sentinels, the context's errors, the
// flash engine's error classes, a plain error and a handler's own connect
// error cross with what they match, their code and their fault.
func TestOtherErrorsRoundTrip(t *testing.T) {
	cs, _ := serve(t, lease.Request{})
	cases := []struct {
		token string
		is    []error
		isNot []error
		code  connect.Code
		fault wire.Fault
	}{
		{"refined-gone", []error{driver.ErrGone}, []error{driver.ErrBusy}, connect.CodeUnavailable, wire.FaultLab},
		{"deadline", []error{context.DeadlineExceeded}, []error{context.Canceled, driver.ErrGone}, connect.CodeDeadlineExceeded, wire.FaultUnspecified},
		{"canceled", []error{context.Canceled}, []error{context.DeadlineExceeded}, connect.CodeCanceled, wire.FaultUnspecified},
		{"image", []error{flash.ErrImage}, []error{flash.ErrTarget, flash.ErrBmap}, connect.CodeInvalidArgument, wire.FaultCaller},
		{"bmap", []error{flash.ErrImage, flash.ErrBmap}, []error{flash.ErrTarget}, connect.CodeInvalidArgument, wire.FaultCaller},
		{"verify", []error{flash.ErrTarget, flash.ErrVerify}, []error{flash.ErrImage}, connect.CodeInternal, wire.FaultLab},
		{"nothing-found", []error{driver.ErrNoDevice, lease.ErrNothingFound}, []error{lease.ErrBadRequest}, connect.CodeNotFound, wire.FaultLab},
		{"bad-request", []error{lease.ErrBadRequest}, []error{driver.ErrNoDevice}, connect.CodeInvalidArgument, wire.FaultCaller},
		{"plain", nil, []error{driver.ErrGone, flash.ErrTarget}, connect.CodeUnknown, wire.FaultLab},
		{"permission", nil, []error{driver.ErrInvalidArgument}, connect.CodePermissionDenied, wire.FaultCaller},
	}
	for proto, c := range cs {
		for _, tc := range cases {
			t.Run(proto+"/"+tc.token, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				err := powerOn(ctx, c.power, tc.token)
				require.Error(t, err)
				for _, target := range tc.is {
					assert.ErrorIs(t, err, target)
				}
				for _, target := range tc.isNot {
					assert.NotErrorIs(t, err, target)
				}
				want := errorsByToken[tc.token].Error()
				if ce := (*connect.Error)(nil); errors.As(errorsByToken[tc.token], &ce) {
					want = ce.Message()
				}
				assert.Equal(t, "exporter lab-1: "+want, err.Error())
				assert.Equal(t, tc.code, connect.CodeOf(err))
				assert.Equal(t, tc.fault, wire.FaultOf(err))
			})
		}
	}
}

// TestStreamErrorsCrossToo: an error that ends a server stream after it
// sent data reaches Receive as the same sentinel.
func TestStreamErrorsCrossToo(t *testing.T) {
	cs, _ := serve(t, lease.Request{})
	for proto, c := range cs {
		t.Run(proto, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			stream, err := c.console.ReadConsole(ctx, connect.NewRequest(&dutv1.ReadConsoleRequest{Lease: &dutv1.LeaseRef{Token: "gone"}, Offset: 42}))
			require.NoError(t, err)
			defer stream.Close()
			require.True(t, stream.Receive(), "first chunk: %v", stream.Err())
			assert.Equal(t, int64(42), stream.Msg().GetOffset())
			require.False(t, stream.Receive())
			err = stream.Err()
			assert.ErrorIs(t, err, driver.ErrGone)
			assert.Equal(t, "exporter lab-1: "+errorsByToken["gone"].Error(), err.Error())
		})
	}
}

// TestTheCallersCancelMatchesContextCanceled: the client cancelling its
// own call mid-stream gets an error matching context.Canceled, not a lab
// failure.
func TestTheCallersCancelMatchesContextCanceled(t *testing.T) {
	cs, _ := serve(t, lease.Request{})
	for proto, c := range cs {
		t.Run(proto, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			callCtx, cancelCall := context.WithCancel(ctx)
			stream, err := c.console.ReadConsole(callCtx, connect.NewRequest(&dutv1.ReadConsoleRequest{Lease: &dutv1.LeaseRef{Token: "block"}}))
			require.NoError(t, err)
			defer stream.Close()
			require.True(t, stream.Receive(), "first chunk: %v", stream.Err())
			cancelCall()
			require.False(t, stream.Receive())
			assert.ErrorIs(t, stream.Err(), context.Canceled)
			assert.NotErrorIs(t, stream.Err(), driver.ErrGone)
			assert.Equal(t, wire.FaultUnspecified, wire.FaultOf(stream.Err()))
		})
	}
}

// TestABusyLeaseNamesItsHolderAcrossTheWire: a real lease.BusyError (the
// device held in the lock directory) reaches the client as driver.ErrBusy
// with the holder's test, host, pid and since.
func TestABusyLeaseNamesItsHolderAcrossTheWire(t *testing.T) {
	req := lease.Request{Drivers: []driver.Driver{fakeDriver{}}, Dir: t.TempDir()}
	since := time.Date(2026, 12, 4, 18, 0, 0, 0, time.UTC)
	held, err := lease.Acquire(t.Context(), req, lease.Holder{Test: "TestHolder", Host: "bench-3", PID: 4242, Since: since, Command: "go test"})
	require.NoError(t, err)
	defer held.Release()
	cs, _ := serve(t, req)
	for proto, c := range cs {
		t.Run(proto, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			_, err := c.leases.TryAcquire(ctx, connect.NewRequest(&dutv1.TryAcquireRequest{Holder: &dutv1.Holder{Test: "TestWaiter"}}))
			require.Error(t, err)
			assert.ErrorIs(t, err, driver.ErrBusy)
			assert.Equal(t, connect.CodeAborted, connect.CodeOf(err))
			assert.Equal(t, wire.FaultLab, wire.FaultOf(err))
			assert.Contains(t, err.Error(), "TestHolder", "the exporter's message names the holder")
			var we *wire.Error
			require.ErrorAs(t, err, &we)
			require.Len(t, we.Holders, 1)
			assert.Equal(t, "fake/dev-0", we.Holders[0].Device)
			h := we.Holders[0].Holder
			assert.Equal(t, "TestHolder", h.Test)
			assert.Equal(t, "bench-3", h.Host)
			assert.Equal(t, 4242, h.PID)
			assert.True(t, since.Equal(h.Since), "since %v, want %v", h.Since, since)
		})
	}
}

// TestAnExporterThatIsGoneIsErrGoneNamedByItsAddress: a call to an
// exporter that no longer listens fails as driver.ErrGone, the lab's
// fault, naming the address called.
func TestAnExporterThatIsGoneIsErrGoneNamedByItsAddress(t *testing.T) {
	cs, srv := serve(t, lease.Request{})
	srv.Close()
	for proto, c := range cs {
		t.Run(proto, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err := powerOn(ctx, c.power, "")
			require.Error(t, err)
			assert.ErrorIs(t, err, driver.ErrGone)
			assert.Equal(t, wire.FaultLab, wire.FaultOf(err))
			assert.True(t, strings.HasPrefix(err.Error(), "exporter "+srv.URL+": "), err.Error())
		})
	}
}

// TestNilAndForeignErrorsPassThrough: ToConnect(nil) is nil; FromConnect
// leaves nil and errors that are not connect's alone.
func TestNilAndForeignErrorsPassThrough(t *testing.T) {
	assert.Nil(t, wire.ToConnect(nil, exporterName))
	assert.NoError(t, wire.FromConnect(nil, exporterName))
	plain := errors.New("plain")
	assert.Same(t, plain, wire.FromConnect(plain, exporterName))
	zero := &wire.Error{Code: "gone", Message: "m"}
	assert.NoError(t, zero.Unwrap(), "an Error made by hand wraps nothing (not a nil *connect.Error)")
	assert.Equal(t, connect.CodeUnknown, zero.ConnectCode())
	assert.ErrorIs(t, zero, driver.ErrGone)
	assert.Equal(t, "exporter: m", zero.Error())
}
