package exporter

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"connectrpc.com/connect"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/wire"
)

// capability returns h's device as capability C, or the "unsupported"
// error naming it.
func capability[C any](h *held) (C, error) { return driver.As[C](h.dev) }

// act runs fn on the capability C of the device ref's lease, for a call
// that changes the device (a session must be attached).
//
// fn's ctx ends with the call or with the lease, whichever ends first: a
// lease that ends (released, its session lost, the exporter shutting
// down) stops what is being done to its device.
func act[C any](ctx context.Context, e *Exporter, ref *dutv1.LeaseRef, fn func(ctx context.Context, h *held, c C) error) error {
	h, release, err := e.acting(ref)
	if err != nil {
		return err
	}
	defer release()
	c, err := capability[C](h)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(h.ctx, func() { cancel(fmt.Errorf("%w: the lease of %s ended", driver.ErrClosed, h.info.Name)) })
	defer stop()
	return fn(ctx, h, c)
}

// read runs fn on the capability C of the device ref's lease, for a call
// that only reads (no session needed).
func read[C any](ctx context.Context, e *Exporter, ref *dutv1.LeaseRef, fn func(ctx context.Context, h *held, c C) error) error {
	h, err := e.lookup(ref)
	if err != nil {
		return err
	}
	h.op.Lock()
	defer h.op.Unlock()
	if h.isEnded() {
		return h.endedError()
	}
	c, err := capability[C](h)
	if err != nil {
		return err
	}
	return fn(ctx, h, c)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type powerService struct{ e *Exporter }

// switchPower runs a power call and records the state it leaves: to on
// success, unknown on failure (the switch may have gone half-way).
func switchPower(ctx context.Context, h *held, to dutv1.PowerState, fn func(context.Context) error) error {
	if err := fn(ctx); err != nil {
		h.setPower(dutv1.PowerState_POWER_STATE_UNKNOWN)
		return err
	}
	h.setPower(to)
	return nil
}

// PowerOn powers the device on.
func (s powerService) PowerOn(ctx context.Context, req *connect.Request[dutv1.PowerOnRequest]) (*connect.Response[dutv1.PowerOnResponse], error) {
	return connect.NewResponse(&dutv1.PowerOnResponse{}), act(ctx, s.e, req.Msg.GetLease(), func(ctx context.Context, h *held, p driver.Power) error {
		return switchPower(ctx, h, dutv1.PowerState_POWER_STATE_ON, p.PowerOn)
	})
}

// PowerOff powers the device off.
func (s powerService) PowerOff(ctx context.Context, req *connect.Request[dutv1.PowerOffRequest]) (*connect.Response[dutv1.PowerOffResponse], error) {
	return connect.NewResponse(&dutv1.PowerOffResponse{}), act(ctx, s.e, req.Msg.GetLease(), func(ctx context.Context, h *held, p driver.Power) error {
		return switchPower(ctx, h, dutv1.PowerState_POWER_STATE_OFF, p.PowerOff)
	})
}

// PowerCycle powers the device off, waits, and powers it on.
func (s powerService) PowerCycle(ctx context.Context, req *connect.Request[dutv1.PowerCycleRequest]) (*connect.Response[dutv1.PowerCycleResponse], error) {
	off := req.Msg.GetOffTime().AsDuration()
	if off < 0 {
		return nil, fmt.Errorf("%w: off_time %s is negative", driver.ErrInvalidArgument, off)
	}
	return connect.NewResponse(&dutv1.PowerCycleResponse{}), act(ctx, s.e, req.Msg.GetLease(), func(ctx context.Context, h *held, p driver.Power) error {
		if err := switchPower(ctx, h, dutv1.PowerState_POWER_STATE_OFF, p.PowerOff); err != nil {
			return err
		}
		if err := sleep(ctx, off); err != nil {
			return err
		}
		return switchPower(ctx, h, dutv1.PowerState_POWER_STATE_ON, p.PowerOn)
	})
}

// GetPowerState says what the exporter last switched the power to.
func (s powerService) GetPowerState(ctx context.Context, req *connect.Request[dutv1.GetPowerStateRequest]) (*connect.Response[dutv1.GetPowerStateResponse], error) {
	var state dutv1.PowerState
	err := read(ctx, s.e, req.Msg.GetLease(), func(ctx context.Context, h *held, _ driver.Power) error {
		h.mu.Lock()
		state = h.power
		h.mu.Unlock()
		return nil
	})
	return connect.NewResponse(&dutv1.GetPowerStateResponse{State: state}), err
}

// ForceOn applies power without the power-on sequence.
func (s powerService) ForceOn(ctx context.Context, req *connect.Request[dutv1.ForceOnRequest]) (*connect.Response[dutv1.ForceOnResponse], error) {
	return connect.NewResponse(&dutv1.ForceOnResponse{}), act(ctx, s.e, req.Msg.GetLease(), func(ctx context.Context, h *held, p driver.ForcePower) error {
		return switchPower(ctx, h, dutv1.PowerState_POWER_STATE_ON, p.ForceOn)
	})
}

// ForceOff cuts power without the power-off sequence.
func (s powerService) ForceOff(ctx context.Context, req *connect.Request[dutv1.ForceOffRequest]) (*connect.Response[dutv1.ForceOffResponse], error) {
	return connect.NewResponse(&dutv1.ForceOffResponse{}), act(ctx, s.e, req.Msg.GetLease(), func(ctx context.Context, h *held, p driver.ForcePower) error {
		return switchPower(ctx, h, dutv1.PowerState_POWER_STATE_OFF, p.ForceOff)
	})
}

// Rescue powers the device on into rescue mode.
func (s powerService) Rescue(ctx context.Context, req *connect.Request[dutv1.RescueRequest]) (*connect.Response[dutv1.RescueResponse], error) {
	return connect.NewResponse(&dutv1.RescueResponse{}), act(ctx, s.e, req.Msg.GetLease(), func(ctx context.Context, h *held, p driver.Rescuer) error {
		return switchPower(ctx, h, dutv1.PowerState_POWER_STATE_RESCUE, p.Rescue)
	})
}

// Reset pulses the reset line.
func (s powerService) Reset(ctx context.Context, req *connect.Request[dutv1.ResetRequest]) (*connect.Response[dutv1.ResetResponse], error) {
	return connect.NewResponse(&dutv1.ResetResponse{}), act(ctx, s.e, req.Msg.GetLease(), func(ctx context.Context, h *held, p driver.Resetter) error {
		return p.Reset(ctx)
	})
}

type storageService struct{ e *Exporter }

// SetStorage moves the storage multiplexer.
func (s storageService) SetStorage(ctx context.Context, req *connect.Request[dutv1.SetStorageRequest]) (*connect.Response[dutv1.SetStorageResponse], error) {
	mode, err := wire.StorageModeFromProto(req.Msg.GetMode())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dutv1.SetStorageResponse{}), act(ctx, s.e, req.Msg.GetLease(), func(ctx context.Context, h *held, m driver.StorageMux) error {
		if err := m.SetStorage(ctx, mode); err != nil {
			h.setStorage(dutv1.StorageMode_STORAGE_MODE_UNSPECIFIED)
			return err
		}
		h.setStorage(req.Msg.GetMode())
		return nil
	})
}

// GetStorage says where the multiplexer is and, at host, the block target.
func (s storageService) GetStorage(ctx context.Context, req *connect.Request[dutv1.GetStorageRequest]) (*connect.Response[dutv1.GetStorageResponse], error) {
	resp := &dutv1.GetStorageResponse{}
	err := read(ctx, s.e, req.Msg.GetLease(), func(ctx context.Context, h *held, m driver.StorageMux) error {
		h.mu.Lock()
		resp.Mode = h.storage
		h.mu.Unlock()
		if resp.Mode == dutv1.StorageMode_STORAGE_MODE_HOST {
			t, err := m.BlockTarget(ctx)
			if err != nil {
				return err
			}
			resp.BlockTarget = t
		}
		return nil
	})
	return connect.NewResponse(resp), err
}

type pinService struct{ e *Exporter }

// ListPins lists the pins SetPin accepts.
func (s pinService) ListPins(ctx context.Context, req *connect.Request[dutv1.ListPinsRequest]) (*connect.Response[dutv1.ListPinsResponse], error) {
	resp := &dutv1.ListPinsResponse{}
	err := read(ctx, s.e, req.Msg.GetLease(), func(ctx context.Context, h *held, p driver.Pins) error {
		resp.Names = p.PinNames()
		return nil
	})
	return connect.NewResponse(resp), err
}

// SetPin drives one pin.
func (s pinService) SetPin(ctx context.Context, req *connect.Request[dutv1.SetPinRequest]) (*connect.Response[dutv1.SetPinResponse], error) {
	level, err := wire.PinLevelFromProto(req.Msg.GetLevel())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dutv1.SetPinResponse{}), act(ctx, s.e, req.Msg.GetLease(), func(ctx context.Context, h *held, p driver.Pins) error {
		return p.SetPin(ctx, req.Msg.GetPin(), level)
	})
}

type meterService struct{ e *Exporter }

// ReadPower reads the power meter.
func (s meterService) ReadPower(ctx context.Context, req *connect.Request[dutv1.ReadPowerRequest]) (*connect.Response[dutv1.ReadPowerResponse], error) {
	resp := &dutv1.ReadPowerResponse{}
	err := read(ctx, s.e, req.Msg.GetLease(), func(ctx context.Context, h *held, m driver.PowerMeter) error {
		r, err := m.ReadPower(ctx)
		resp.Volts, resp.Amps, resp.Watts = r.Volts, r.Amps, r.Watts
		return err
	})
	return connect.NewResponse(resp), err
}

type configService struct{ e *Exporter }

// GetConfig reads the board's stored configuration.
func (s configService) GetConfig(ctx context.Context, req *connect.Request[dutv1.GetConfigRequest]) (*connect.Response[dutv1.GetConfigResponse], error) {
	resp := &dutv1.GetConfigResponse{}
	err := read(ctx, s.e, req.Msg.GetLease(), func(ctx context.Context, h *held, c driver.Configurer) (err error) {
		resp.Values, err = c.Config(ctx)
		return err
	})
	return connect.NewResponse(resp), err
}

// SetConfig writes one key of the board's configuration.
func (s configService) SetConfig(ctx context.Context, req *connect.Request[dutv1.SetConfigRequest]) (*connect.Response[dutv1.SetConfigResponse], error) {
	return connect.NewResponse(&dutv1.SetConfigResponse{}), act(ctx, s.e, req.Msg.GetLease(), func(ctx context.Context, h *held, c driver.Configurer) error {
		return c.SetConfig(ctx, req.Msg.GetKey(), req.Msg.GetValue())
	})
}

// ListConfigKeys lists the keys the board's configuration has now.
func (s configService) ListConfigKeys(ctx context.Context, req *connect.Request[dutv1.ListConfigKeysRequest]) (*connect.Response[dutv1.ListConfigKeysResponse], error) {
	resp := &dutv1.ListConfigKeysResponse{}
	err := read(ctx, s.e, req.Msg.GetLease(), func(ctx context.Context, h *held, c driver.Configurer) error {
		m, err := c.Config(ctx)
		resp.Keys = slices.Sorted(maps.Keys(m))
		return err
	})
	return connect.NewResponse(resp), err
}
