package exporter

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/wire"
)

// held is a lease the exporter holds for a client: the host's lease, the
// opened device, its console transcript and what the exporter last switched.
type held struct {
	e     *Exporter
	token string
	l     *lease.Lease
	info  driver.Info
	dev   driver.Device
	user  string
	// releaseOnDetach: Acquire and TryAcquire leases end with their
	// session; CreateLease ones wait idleTTL for the next.
	releaseOnDetach bool
	idleTTL         time.Duration
	transcript      *transcript // nil without a console
	console         io.ReadWriteCloser

	// op serialises the calls that drive the device.
	op sync.Mutex
	// ctx ends when the lease does (end cancels it first), stopping the
	// call in progress.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	power    dutv1.PowerState
	storage  dutv1.StorageMode
	session  bool        // a session is attached
	idle     *time.Timer // ends the lease when no session comes
	ended    bool
	endedWhy string
	done     chan struct{} // closed when the lease has ended
}

// newToken returns a lease token: 128 random bits in hex.
func newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// grant opens the leased device, puts it in its known starting state
// (powered off, storage off), starts its console transcript and records the
// lease under a new token. On any failure the device is closed and the
// lease released.
func (e *Exporter) grant(ctx context.Context, l *lease.Lease, user string, releaseOnDetach bool, ttl time.Duration) (*held, error) {
	h := &held{e: e, token: newToken(), l: l, info: l.Info(), user: user, releaseOnDetach: releaseOnDetach, idleTTL: ttl, done: make(chan struct{})}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	dev, err := l.Open(ctx)
	if err != nil {
		h.cancel()
		l.Release()
		return nil, err
	}
	h.dev = dev
	if err := h.start(ctx); err != nil {
		h.cancel()
		h.close()
		return nil, fmt.Errorf("start the lease of %s: %w", h.info.Name, err)
	}
	h.idle = time.AfterFunc(ttl, func() { h.end(context.Background(), "no session attached within the idle time-to-live") })
	e.mu.Lock()
	e.held[h.token] = h
	e.mu.Unlock()
	if err := e.shuttingDown(); err != nil {
		// Shutdown began while this lease was being granted: it may have
		// missed it, so end it here.
		h.end(ctx, "exporter shutting down")
		return nil, err
	}
	e.log.Info("lease granted", "device", h.info.Key(), "user", user, "test", l.Holder().Test, "host", l.Holder().Host, "release_on_detach", releaseOnDetach, "idle_ttl", ttl)
	return h, nil
}

// start powers the device off, switches its storage off and opens its
// console into a transcript.
func (h *held) start(ctx context.Context) error {
	if err := h.settle(ctx); err != nil {
		return err
	}
	if cp, ok := driver.Has[driver.ConsolePort](h.dev); ok {
		c, err := cp.OpenConsole(ctx)
		if err != nil {
			return fmt.Errorf("open the console: %w", err)
		}
		h.console = c
		h.transcript = newTranscript(h.e.cfg.TranscriptBytes)
		go h.transcript.fill(c)
	}
	return nil
}

// settle powers the device off and switches its storage off: the state a
// lease starts in and every session leaves behind.
func (h *held) settle(ctx context.Context) error {
	var errs []error
	if p, ok := driver.Has[driver.Power](h.dev); ok {
		if err := p.PowerOff(ctx); err != nil {
			errs = append(errs, fmt.Errorf("power off: %w", err))
		} else {
			h.setPower(dutv1.PowerState_POWER_STATE_OFF)
		}
	}
	if s, ok := driver.Has[driver.StorageMux](h.dev); ok {
		if err := s.SetStorage(ctx, driver.StorageOff); err != nil {
			errs = append(errs, fmt.Errorf("storage off: %w", err))
		} else {
			h.setStorage(dutv1.StorageMode_STORAGE_MODE_OFF)
		}
	}
	return errors.Join(errs...)
}

func (h *held) setPower(s dutv1.PowerState) {
	h.mu.Lock()
	h.power = s
	h.mu.Unlock()
}

func (h *held) setStorage(m dutv1.StorageMode) {
	h.mu.Lock()
	h.storage = m
	h.mu.Unlock()
}

// close closes the console and the device and releases the host's lease.
func (h *held) close() {
	if h.console != nil {
		h.console.Close()
	}
	if c, ok := h.dev.(driver.Closer); ok {
		c.Close()
	}
	if h.transcript != nil {
		h.transcript.close(fmt.Errorf("%w: the lease of %s ended", driver.ErrClosed, h.info.Name))
	}
	h.l.Release()
}

// settleTimeout bounds the power off and storage off when a lease or
// session ends.
const settleTimeout = 30 * time.Second

// end ends the lease: the device powered off, its storage off, the device
// closed and the host's lease released. Ending an ended lease does
// nothing.
func (h *held) end(ctx context.Context, why string) error {
	h.mu.Lock()
	if h.ended {
		h.mu.Unlock()
		return nil
	}
	h.ended, h.endedWhy = true, why
	if h.idle != nil {
		h.idle.Stop()
	}
	h.mu.Unlock()
	h.e.mu.Lock()
	delete(h.e.held, h.token)
	h.e.mu.Unlock()

	h.cancel()  // stop a call in progress (a flash)...
	h.op.Lock() // ...and wait for it
	defer h.op.Unlock()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	err := h.settle(sctx)
	h.close()
	close(h.done)
	if err != nil {
		h.e.log.Error("lease ended, but the device could not be settled", "device", h.info.Key(), "why", why, "err", err)
		return fmt.Errorf("end the lease of %s: %w", h.info.Name, err)
	}
	h.e.log.Info("lease ended", "device", h.info.Key(), "why", why, "user", h.user)
	return nil
}

// attach marks a session attached; a second one is refused.
func (h *held) attach() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.ended:
		return h.endedError()
	case h.session:
		return fmt.Errorf("%w: the lease of %s already has a session attached", driver.ErrBusy, h.info.Name)
	}
	h.session = true
	h.idle.Stop()
	return nil
}

// detach ends a session: the device is settled (powered off, storage off)
// and the lease ended, or, for a lease made by CreateLease, left for its
// next session until its idle time-to-live passes.
func (h *held) detach(why string) {
	if h.releaseOnDetach {
		h.end(context.Background(), "session ended: "+why)
		return
	}
	h.op.Lock()
	sctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	err := h.settle(sctx)
	cancel()
	h.op.Unlock()
	if err != nil {
		h.end(context.Background(), "session ended and the device could not be settled: "+err.Error())
		return
	}
	h.mu.Lock()
	h.session = false
	if !h.ended {
		h.idle.Reset(h.idleTTL)
	}
	h.mu.Unlock()
	h.e.log.Info("session ended; the lease waits for its next", "device", h.info.Key(), "why", why, "idle_ttl", h.idleTTL)
}

// isEnded says the lease has ended.
func (h *held) isEnded() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ended
}

func (h *held) endedError() error {
	return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%w: the lease of %s has ended (%s): acquire it again", driver.ErrClosed, h.info.Name, h.endedWhy))
}

// errNoLease is wrapped by the refusal of a token that names no lease.
var errNoLease = errors.New("the lease token names no lease")

// lookup returns the lease ref names, or a PermissionDenied error that says
// why not: no token, a token of no lease, a token of another device.
func (e *Exporter) lookup(ref *dutv1.LeaseRef) (*held, error) {
	if ref.GetToken() == "" {
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("the request carries no lease: acquire the device's lease first (LeaseService.Acquire) and pass its token as the field lease"))
	}
	e.mu.Lock()
	var h *held
	for tok, c := range e.held {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(ref.GetToken())) == 1 {
			h = c
		}
	}
	e.mu.Unlock()
	switch {
	case h == nil:
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%w of exporter %s (released, expired, or from another exporter): acquire the device again", errNoLease, e.cfg.Name))
	case ref.GetDevice() != h.info.Key():
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("the lease token is the lease of %s, not of %s: a lease acts only on its own device", h.info.Key(), ref.GetDevice()))
	}
	return h, nil
}

// acting returns the lease ref names for a call that changes its device:
// the lease must have a session attached, so that the device is settled
// when its holder goes away. It holds the lease's op lock until release is
// called.
func (e *Exporter) acting(ref *dutv1.LeaseRef) (h *held, release func(), err error) {
	h, err = e.lookup(ref)
	if err != nil {
		return nil, nil, err
	}
	h.op.Lock()
	h.mu.Lock()
	ended, session := h.ended, h.session
	h.mu.Unlock()
	switch {
	case ended:
		h.op.Unlock()
		return nil, nil, h.endedError()
	case !session:
		h.op.Unlock()
		return nil, nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%w: the lease of %s has no session attached: attach one (LeaseService.Session) before acting on the device, so that it is powered off if the client goes away", driver.ErrClosed, h.info.Name))
	}
	return h, h.op.Unlock, nil
}

// leaseProto describes h for its holder.
func (h *held) leaseProto() *dutv1.Lease {
	hp := wire.HolderToProto(h.l.Holder(), h.user)
	return &dutv1.Lease{
		Token: h.token, Device: wire.DeviceToProto(h.info, hp), Holder: hp,
		IdleTtl: durationProto(h.idleTTL), ReleaseOnDetach: h.releaseOnDetach,
	}
}

// heldBy returns the exporter's lease of a device key, if it holds one.
func (e *Exporter) heldBy(key string) *held {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, h := range e.held {
		if h.info.Key() == key {
			return h
		}
	}
	return nil
}
