package exporter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
)

// Session attaches to a lease and keeps it alive while the client pings.
// When the stream ends (the client closed it, its connection died, or no
// ping came within the keepalive timeout) the lease's device is settled
// and the lease ended or left for its next session.
func (s leaseService) Session(ctx context.Context, stream *connect.BidiStream[dutv1.SessionRequest, dutv1.SessionResponse]) error {
	e := s.e
	first, err := stream.Receive()
	if err != nil {
		return err
	}
	ref := first.GetAttach()
	if ref == nil {
		return fmt.Errorf("%w: a session's first message must be attach (the lease to keep)", driver.ErrInvalidArgument)
	}
	h, err := e.lookup(ref)
	if err != nil {
		return err
	}
	if err := h.attach(); err != nil {
		return err
	}
	why := e.keep(ctx, h, stream)
	h.detach(why)
	return nil
}

// keep runs an attached session until it ends and says why.
func (e *Exporter) keep(ctx context.Context, h *held, stream *connect.BidiStream[dutv1.SessionRequest, dutv1.SessionResponse]) string {
	attached := &dutv1.Attached{Lease: h.leaseProto(), KeepaliveInterval: durationProto(e.cfg.KeepaliveInterval), KeepaliveTimeout: durationProto(e.cfg.KeepaliveTimeout)}
	if err := stream.Send(&dutv1.SessionResponse{Message: &dutv1.SessionResponse_Attached{Attached: attached}}); err != nil {
		return "the client went away: " + err.Error()
	}
	e.log.Info("session attached", "device", h.info.Key(), "user", h.user)
	pings := make(chan uint64)
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Receive()
			if err != nil {
				recvErr <- err
				return
			}
			if p := m.GetPing(); p != nil {
				select {
				case pings <- p.GetSeq():
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	timer := time.NewTimer(e.cfg.KeepaliveTimeout)
	defer timer.Stop()
	for {
		select {
		case seq := <-pings:
			timer.Reset(e.cfg.KeepaliveTimeout)
			if err := stream.Send(&dutv1.SessionResponse{Message: &dutv1.SessionResponse_Pong{Pong: &dutv1.Pong{Seq: seq}}}); err != nil {
				return "the client went away: " + err.Error()
			}
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return "the client closed it"
			}
			return "the client's connection ended: " + err.Error()
		case <-timer.C:
			e.log.Warn("session keepalive missed", "device", h.info.Key(), "timeout", e.cfg.KeepaliveTimeout)
			e.sendEnded(stream, fmt.Sprintf("no ping for %s (keepalive missed)", e.cfg.KeepaliveTimeout), h.releaseOnDetach)
			return fmt.Sprintf("keepalive missed (no ping for %s)", e.cfg.KeepaliveTimeout)
		case <-h.done:
			e.sendEnded(stream, h.endedWhy, true)
			return h.endedWhy
		case <-ctx.Done():
			return "the client's connection ended: " + context.Cause(ctx).Error()
		}
	}
}

// sendEnded tells the client why its session ends, best effort.
func (e *Exporter) sendEnded(stream *connect.BidiStream[dutv1.SessionRequest, dutv1.SessionResponse], why string, released bool) {
	_ = stream.Send(&dutv1.SessionResponse{Message: &dutv1.SessionResponse_Ended{Ended: &dutv1.Ended{Reason: why, Released: released}}})
}
