package wire

import (
	"context"
	"errors"
	"io"

	"connectrpc.com/connect"
)

// ServerInterceptor applies [ToConnect] to every error the exporter's
// handlers return, unary and streaming, naming the exporter:
//
//	path, h := dutv1connect.NewPowerServiceHandler(svc, connect.WithInterceptors(wire.ServerInterceptor("lab-1")))
func ServerInterceptor(exporter string) connect.Interceptor { return serverInterceptor(exporter) }

type serverInterceptor string

// WrapUnary converts a unary handler's error.
func (s serverInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		if err != nil {
			return nil, ToConnect(err, string(s))
		}
		return resp, nil
	}
}

// WrapStreamingClient leaves clients alone: this is the exporter's side.
func (s serverInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler converts a streaming handler's error.
func (s serverInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := next(ctx, conn); err != nil {
			return ToConnect(err, string(s))
		}
		return nil
	}
}

// ClientInterceptor applies [FromConnect] to every error a client's calls
// return, unary and streaming; exporter names the exporter (its address)
// for errors that do not name it themselves:
//
//	c := dutv1connect.NewPowerServiceClient(hc, url, connect.WithInterceptors(wire.ClientInterceptor(url)))
func ClientInterceptor(exporter string) connect.Interceptor { return clientInterceptor(exporter) }

type clientInterceptor string

// WrapUnary converts a unary call's error.
func (c clientInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		if err != nil {
			return nil, FromConnect(err, string(c))
		}
		return resp, nil
	}
}

// WrapStreamingClient converts the errors of a stream's Send, Receive
// and CloseResponse.
func (c clientInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		return &clientConn{StreamingClientConn: next(ctx, spec), exporter: string(c)}
	}
}

// WrapStreamingHandler leaves handlers alone: this is the client's side.
func (c clientInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// clientConn converts the errors of a client stream; io.EOF, the end of a
// stream, stays as it is.
type clientConn struct {
	connect.StreamingClientConn
	exporter string
}

func (c *clientConn) convert(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	return FromConnect(err, c.exporter)
}

// Send sends msg; its error (io.EOF: look at Receive) converted.
func (c *clientConn) Send(msg any) error { return c.convert(c.StreamingClientConn.Send(msg)) }

// Receive receives into msg; its error converted, io.EOF kept.
func (c *clientConn) Receive(msg any) error { return c.convert(c.StreamingClientConn.Receive(msg)) }

// CloseResponse closes the response side; its error converted.
func (c *clientConn) CloseResponse() error { return c.convert(c.StreamingClientConn.CloseResponse()) }
