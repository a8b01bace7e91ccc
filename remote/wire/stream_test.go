package wire_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
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

// uploadService refuses every upload once it has read it all, as the
// exporter refuses a file whose bytes do not match its digest.
type uploadService struct {
	dutv1connect.UnimplementedFlashServiceHandler
}

func (uploadService) UploadImage(_ context.Context, stream *connect.ClientStream[dutv1.UploadImageRequest]) (*connect.Response[dutv1.UploadImageResponse], error) {
	var got int64
	for stream.Receive() {
		got += int64(len(stream.Msg().GetChunk().GetData()))
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("upload of %d bytes: SHA-256 does not match the header's: %w", got, driver.ErrInvalidArgument)
}

// sessionService refuses a second session on a lease, as the exporter
// does.
type sessionService struct {
	dutv1connect.UnimplementedLeaseServiceHandler
}

func (sessionService) Session(_ context.Context, stream *connect.BidiStream[dutv1.SessionRequest, dutv1.SessionResponse]) error {
	msg, err := stream.Receive()
	if err != nil {
		return err
	}
	return fmt.Errorf("lease of %s already has a session: %w", msg.GetAttach().GetDevice(), driver.ErrBusy)
}

// TestClientAndBidiStreamErrorsCross: the errors of a client stream (an
// upload) and of a bidirectional one (a lease session) reach the client
// as the same sentinels, on every protocol.
func TestClientAndBidiStreamErrorsCross(t *testing.T) {
	mux := http.NewServeMux()
	opts := connect.WithInterceptors(wire.ServerInterceptor(exporterName))
	mux.Handle(dutv1connect.NewFlashServiceHandler(uploadService{}, opts))
	mux.Handle(dutv1connect.NewLeaseServiceHandler(sessionService{}, opts))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true // bidirectional streams need HTTP/2
	srv.StartTLS()
	defer srv.Close()
	for name, proto := range map[string]connect.ClientOption{
		"connect": connect.WithClientOptions(), "grpc": connect.WithGRPC(), "grpcweb": connect.WithGRPCWeb(),
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			o := connect.WithClientOptions(proto, connect.WithInterceptors(wire.ClientInterceptor(srv.URL)))

			up := dutv1connect.NewFlashServiceClient(srv.Client(), srv.URL, o).UploadImage(ctx)
			require.NoError(t, up.Send(&dutv1.UploadImageRequest{Part: &dutv1.UploadImageRequest_Header{Header: &dutv1.UploadHeader{Sha256: "00", Size: 3}}}))
			require.NoError(t, up.Send(&dutv1.UploadImageRequest{Part: &dutv1.UploadImageRequest_Chunk{Chunk: &dutv1.UploadChunk{Data: []byte("abc")}}}))
			_, err := up.CloseAndReceive()
			assert.ErrorIs(t, err, driver.ErrInvalidArgument)
			assert.Equal(t, wire.FaultCaller, wire.FaultOf(err))
			assert.Equal(t, "exporter lab-1: upload of 3 bytes: SHA-256 does not match the header's: invalid argument", fmt.Sprint(err))

			s := dutv1connect.NewLeaseServiceClient(srv.Client(), srv.URL, o).Session(ctx)
			require.NoError(t, s.Send(&dutv1.SessionRequest{Message: &dutv1.SessionRequest_Attach{Attach: &dutv1.LeaseRef{Device: "sim/sim-0", Token: "t"}}}))
			_, err = s.Receive()
			require.Error(t, err)
			assert.False(t, errors.Is(err, io.EOF))
			assert.ErrorIs(t, err, driver.ErrBusy)
			assert.Contains(t, err.Error(), "exporter lab-1: lease of sim/sim-0 already has a session")
			assert.NoError(t, s.CloseRequest())
			assert.NoError(t, s.CloseResponse())
		})
	}
}
