package wire_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1/dutv1connect"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/wire"
)

// deviceService lists one device, or fails with no_device for a name
// other than "sim-0".
type deviceService struct {
	dutv1connect.UnimplementedDeviceServiceHandler
}

func (deviceService) ListDevices(_ context.Context, req *connect.Request[dutv1.ListDevicesRequest]) (*connect.Response[dutv1.ListDevicesResponse], error) {
	if n := req.Msg.GetName(); n != "" && n != "sim-0" {
		return nil, driver.ErrNoDevice
	}
	info := driver.Info{Driver: "sim", Name: "sim-0", Tags: []string{"x86"}, Capabilities: []string{"power"}}
	return connect.NewResponse(&dutv1.ListDevicesResponse{Exporter: exporterName, Devices: []*dutv1.Device{wire.DeviceToProto(info, nil)}}), nil
}

// TestTheDeviceListIsAPlainHTTPGet: a call without side effects is served
// over HTTP/1.1 as a GET, to connect's client (WithHTTPGet) and to curl
// alike, errors and their detail included.
func TestTheDeviceListIsAPlainHTTPGet(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle(dutv1connect.NewDeviceServiceHandler(deviceService{}, connect.WithInterceptors(wire.ServerInterceptor(exporterName))))
	srv := httptest.NewServer(mux) // HTTP/1.1, no TLS
	defer srv.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	c := dutv1connect.NewDeviceServiceClient(srv.Client(), srv.URL, connect.WithHTTPGet(), connect.WithInterceptors(wire.ClientInterceptor(srv.URL)))
	resp, err := c.ListDevices(ctx, connect.NewRequest(&dutv1.ListDevicesRequest{}))
	require.NoError(t, err)
	assert.Equal(t, "sim/sim-0", resp.Msg.GetDevices()[0].GetKey())
	_, err = c.ListDevices(ctx, connect.NewRequest(&dutv1.ListDevicesRequest{Name: "nope"}))
	assert.ErrorIs(t, err, driver.ErrNoDevice)

	get := func(message string) (int, string) {
		q := url.Values{"connect": {"v1"}, "encoding": {"json"}, "message": {message}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+dutv1connect.DeviceServiceListDevicesProcedure+"?"+q.Encode(), nil)
		require.NoError(t, err)
		r, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer r.Body.Close()
		b, err := io.ReadAll(r.Body)
		require.NoError(t, err)
		return r.StatusCode, string(b)
	}
	status, body := get(`{}`)
	assert.Equal(t, http.StatusOK, status)
	assert.Contains(t, body, `"key":"sim/sim-0"`)
	status, body = get(`{"name":"nope"}`)
	assert.Equal(t, http.StatusNotFound, status)
	assert.Contains(t, body, `"code":"not_found"`)
	assert.Contains(t, body, `jumpstarter.dut.v1.ErrorDetail`)
}
