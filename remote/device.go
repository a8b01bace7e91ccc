package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/wire"
)

// Device is a device an exporter serves, opened (its lease held on the
// exporter, its session attached). It has the methods of every capability
// and offers those its exporter's device has ([Device.Capabilities]).
type Device struct {
	info driver.Info
	ex   *exporter
	ref  *dutv1.LeaseRef
	caps []string
	// owned says this client took the lease (Close releases it); false
	// for a lease handed over (Close ends only the session).
	owned bool

	// session is the lease's keepalive stream: closing asks it to end
	// (and wait for the exporter), stop cancels it.
	closing   chan struct{}
	stop      context.CancelFunc
	sessionWG sync.WaitGroup

	mu       sync.Mutex
	lost     error // set when the session ended under the device
	closed   bool
	consumed int64    // how far into the transcript the last console read
	console  *console // the open console, if any
}

// open takes the device's lease and attaches its session.
func (ex *exporter) open(ctx context.Context, info driver.Info, o Options) (*Device, error) {
	sel := &dutv1.Selector{Driver: info.Fact(FactDriver), Name: strings.TrimSuffix(info.Name, "@"+info.Fact(FactExporter))}
	if k := info.Fact(FactKey); k != "" {
		if drv, name, ok := strings.Cut(k, "/"); ok {
			sel.Driver, sel.Name = drv, name
		}
	}
	if o.Lease != "" {
		return ex.attachHandedOver(ctx, info, sel, o.Lease)
	}
	// The other devices of this exporter that the selection matched: the
	// exporter grants whichever of them is free first.
	cands := map[string]driver.Info{}
	for _, c := range lease.CandidatesFrom(ctx) {
		if c.Fact(FactURL) == ex.url && c.Fact(FactKey) != "" {
			cands[c.Fact(FactKey)] = c
		}
	}
	if len(cands) > 1 {
		sel = &dutv1.Selector{Keys: slices.Sorted(maps.Keys(cands))}
	}
	who, _ := lease.HolderFrom(ctx)
	l, err := ex.acquire(ctx, sel, who, info.Name, o.WaitReport)
	if err != nil {
		return nil, err
	}
	if c, ok := cands[l.GetDevice().GetKey()]; ok {
		info = c // the device granted, which may not be the one asked for
	}
	d := &Device{info: info, ex: ex, ref: &dutv1.LeaseRef{Device: l.GetDevice().GetKey(), Token: l.GetToken()}, caps: l.GetDevice().GetCapabilities(), owned: true}
	if err := d.attach(ctx); err != nil {
		ex.release(d.ref)
		return nil, err
	}
	return d, nil
}

// attachHandedOver attaches a session to a lease another party created
// for this client (its token).
func (ex *exporter) attachHandedOver(ctx context.Context, info driver.Info, sel *dutv1.Selector, token string) (*Device, error) {
	d := &Device{info: info, ex: ex, ref: &dutv1.LeaseRef{Device: sel.GetDriver() + "/" + sel.GetName(), Token: token}, caps: info.Capabilities}
	if err := d.attach(ctx); err != nil {
		return nil, fmt.Errorf("the lease handed over in %s: %w", EnvLease, err)
	}
	return d, nil
}

// acquire waits for the lease of the device sel names.
func (ex *exporter) acquire(ctx context.Context, sel *dutv1.Selector, who lease.Holder, name string, report func(string, *dutv1.Waiting)) (*dutv1.Lease, error) {
	host, _ := os.Hostname()
	h := wire.HolderToProto(who, "")
	if h.Pid == 0 {
		h.Pid = int64(os.Getpid())
	}
	if h.Host == "" {
		h.Host = host
	}
	if h.Command == "" {
		h.Command = strings.Join(os.Args, " ")
	}
	req := &dutv1.AcquireRequest{Selector: sel, Holder: h}
	if dl, ok := ctx.Deadline(); ok {
		// The exporter ends the wait a little before the call's deadline,
		// so that the answer is its "busy" naming the holders rather than
		// this side's deadline.
		left := time.Until(dl)
		req.Wait = durationpb.New(max(left-min(left/10, 500*time.Millisecond), time.Millisecond))
	}
	stream, err := ex.leases.Acquire(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, fmt.Errorf("lease %s on exporter %s: %w", name, ex.name, err)
	}
	defer stream.Close()
	for stream.Receive() {
		switch ev := stream.Msg().GetEvent().(type) {
		case *dutv1.AcquireResponse_Waiting:
			if report != nil {
				report(name, ev.Waiting)
			}
		case *dutv1.AcquireResponse_Granted:
			return ev.Granted, nil
		}
	}
	if err := stream.Err(); err != nil {
		return nil, fmt.Errorf("lease %s on exporter %s: %w", name, ex.name, err)
	}
	return nil, fmt.Errorf("%w: lease %s on exporter %s: the exporter ended the request without a lease", driver.ErrGone, name, ex.name)
}

// release gives a lease up, bounded by a short deadline.
func (ex *exporter) release(ref *dutv1.LeaseRef) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := ex.leases.Release(ctx, connect.NewRequest(&dutv1.ReleaseRequest{Lease: ref}))
	return err
}

// attach opens the lease's session and keeps it alive in the background.
func (d *Device) attach(ctx context.Context) error {
	sctx, stop := context.WithCancel(context.Background())
	stream := d.ex.leases.Session(sctx)
	fail := func(err error) error {
		stop()
		return fmt.Errorf("attach the session of %s on exporter %s: %w", d.info.Name, d.ex.name, err)
	}
	if err := stream.Send(&dutv1.SessionRequest{Message: &dutv1.SessionRequest_Attach{Attach: d.ref}}); err != nil && !errors.Is(err, io.EOF) {
		return fail(err)
	}
	type got struct {
		m   *dutv1.SessionResponse
		err error
	}
	first := make(chan got, 1)
	go func() {
		m, err := stream.Receive()
		first <- got{m, err}
	}()
	var att *dutv1.Attached
	select {
	case g := <-first:
		if g.err != nil {
			return fail(g.err)
		}
		if att = g.m.GetAttached(); att == nil {
			return fail(fmt.Errorf("%w: the exporter's first session message is not attached", driver.ErrGone))
		}
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	d.stop, d.closing = stop, make(chan struct{})
	d.sessionWG.Go(func() {
		d.keep(sctx, stream, att.GetKeepaliveInterval().AsDuration(), att.GetKeepaliveTimeout().AsDuration())
	})
	return nil
}

// keep pings the exporter every interval until the session ends; a
// session that ends while the device is open leaves it lost.
func (d *Device) keep(ctx context.Context, stream *connect.BidiStreamForClient[dutv1.SessionRequest, dutv1.SessionResponse], interval, timeout time.Duration) {
	interval = max(interval, 100*time.Millisecond)
	timeout = max(timeout, 2*interval)
	pongs := make(chan struct{}, 1)
	ended := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Receive()
			if err != nil {
				ended <- err
				return
			}
			switch {
			case m.GetPong() != nil:
				select {
				case pongs <- struct{}{}:
				default:
				}
			case m.GetEnded() != nil:
				ended <- fmt.Errorf("%w: exporter %s ended the session: %s", driver.ErrClosed, d.ex.name, m.GetEnded().GetReason())
				return
			}
		}
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	lastPong := time.Now()
	var seq uint64
	for {
		select {
		case <-d.closing:
			// The client is done: close its side and wait (bounded) for
			// the exporter to end the stream, which it does once it has
			// powered the device off.
			stream.CloseRequest()
			t := time.NewTimer(detachWait)
			select {
			case <-ended:
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
			stream.CloseResponse()
			return
		case <-ctx.Done():
			stream.CloseRequest()
			stream.CloseResponse()
			return
		case <-pongs:
			lastPong = time.Now()
		case err := <-ended:
			d.lose(err)
			stream.CloseRequest()
			return
		case <-tick.C:
			if time.Since(lastPong) > timeout {
				d.lose(fmt.Errorf("%w: exporter %s answered no ping for %s", driver.ErrGone, d.ex.name, timeout))
				stream.CloseRequest()
				stream.CloseResponse()
				return
			}
			seq++
			_ = stream.Send(&dutv1.SessionRequest{Message: &dutv1.SessionRequest_Ping{Ping: &dutv1.Ping{Seq: seq}}})
		}
	}
}

// detachWait bounds how long Close waits for the exporter to settle the
// device once the session is closed.
const detachWait = 30 * time.Second

// lose records why the device's session ended under it.
func (d *Device) lose(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lost == nil && !d.closed {
		if !errors.Is(err, driver.ErrClosed) && !errors.Is(err, driver.ErrGone) {
			err = fmt.Errorf("%w: the session with exporter %s broke: %w", driver.ErrGone, d.ex.name, err)
		}
		d.lost = fmt.Errorf("%s: %w", d.info.Name, err)
	}
}

// usable returns why the device cannot be used now, or nil.
func (d *Device) usable() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.closed:
		return fmt.Errorf("%s: %w", d.info.Name, driver.ErrClosed)
	case d.lost != nil:
		return d.lost
	}
	return nil
}

// call runs one call on the exporter, refused at once when the device is
// closed or lost; an error names the device.
func (d *Device) call(what string, fn func() error) error {
	if err := d.usable(); err != nil {
		return err
	}
	if err := fn(); err != nil {
		if lost := d.usable(); lost != nil && !errors.Is(err, driver.ErrGone) {
			return fmt.Errorf("%s %s: %w (%w)", what, d.info.Name, err, lost)
		}
		return fmt.Errorf("%s %s: %w", what, d.info.Name, err)
	}
	return nil
}

// Name is the device's name.
func (d *Device) Name() string { return d.info.Name }

// Serial is the device's serial.
func (d *Device) Serial() string { return d.info.Serial }

// Tags are the device's tags.
func (d *Device) Tags() []string { return slices.Clone(d.info.Tags) }

// Driver returns "remote".
func (d *Device) Driver() string { return DriverName }

// Capabilities are those of the exporter's device.
func (d *Device) Capabilities() []string { return slices.Clone(d.caps) }

// Exporter names the exporter serving the device (as it names itself) and
// the URL it is reached at.
func (d *Device) Exporter() (name, url string) { return d.ex.name, d.ex.url }

// Ephemeral says the device's lease ends with this process.
func (d *Device) Ephemeral() string { return d.info.Ephemeral }

// Close releases the lease (the exporter powers the device off and
// switches its storage off) and ends the session; of a lease handed over
// ([Options.Lease]) it ends only the session, and the exporter powers the
// device off and keeps the lease for its creator. Calling it again does
// nothing.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	lost := d.lost
	d.mu.Unlock()
	var err error
	if lost == nil && d.owned {
		err = d.ex.release(d.ref)
	}
	close(d.closing)
	d.sessionWG.Wait()
	d.stop()
	if err != nil {
		return fmt.Errorf("release %s on exporter %s: %w", d.info.Name, d.ex.name, err)
	}
	return nil
}

// PowerOn powers the device on.
func (d *Device) PowerOn(ctx context.Context) error {
	return d.call("power on", func() error {
		_, err := d.ex.power.PowerOn(ctx, connect.NewRequest(&dutv1.PowerOnRequest{Lease: d.ref}))
		return err
	})
}

// PowerOff powers the device off.
func (d *Device) PowerOff(ctx context.Context) error {
	return d.call("power off", func() error {
		_, err := d.ex.power.PowerOff(ctx, connect.NewRequest(&dutv1.PowerOffRequest{Lease: d.ref}))
		return err
	})
}

// PowerCycle powers the device off, waits off, and powers it on.
func (d *Device) PowerCycle(ctx context.Context, off time.Duration) error {
	return d.call("power cycle", func() error {
		_, err := d.ex.power.PowerCycle(ctx, connect.NewRequest(&dutv1.PowerCycleRequest{Lease: d.ref, OffTime: durationpb.New(off)}))
		return err
	})
}

// ForceOn applies power without the power-on sequence.
func (d *Device) ForceOn(ctx context.Context) error {
	return d.call("force on", func() error {
		_, err := d.ex.power.ForceOn(ctx, connect.NewRequest(&dutv1.ForceOnRequest{Lease: d.ref}))
		return err
	})
}

// ForceOff cuts power without the power-off sequence.
func (d *Device) ForceOff(ctx context.Context) error {
	return d.call("force off", func() error {
		_, err := d.ex.power.ForceOff(ctx, connect.NewRequest(&dutv1.ForceOffRequest{Lease: d.ref}))
		return err
	})
}

// Rescue powers the device on into rescue mode.
func (d *Device) Rescue(ctx context.Context) error {
	return d.call("rescue", func() error {
		_, err := d.ex.power.Rescue(ctx, connect.NewRequest(&dutv1.RescueRequest{Lease: d.ref}))
		return err
	})
}

// Reset pulses the reset line.
func (d *Device) Reset(ctx context.Context) error {
	return d.call("reset", func() error {
		_, err := d.ex.power.Reset(ctx, connect.NewRequest(&dutv1.ResetRequest{Lease: d.ref}))
		return err
	})
}

// PowerState says what the exporter last switched the power to.
func (d *Device) PowerState(ctx context.Context) (dutv1.PowerState, error) {
	var s dutv1.PowerState
	err := d.call("power state", func() error {
		resp, err := d.ex.power.GetPowerState(ctx, connect.NewRequest(&dutv1.GetPowerStateRequest{Lease: d.ref}))
		if err != nil {
			return err
		}
		s = resp.Msg.GetState()
		return nil
	})
	return s, err
}

// SetStorage moves the storage multiplexer.
func (d *Device) SetStorage(ctx context.Context, mode driver.StorageMode) error {
	m, err := wire.StorageModeToProto(mode)
	if err != nil {
		return err
	}
	return d.call("storage "+string(mode), func() error {
		_, err := d.ex.storage.SetStorage(ctx, connect.NewRequest(&dutv1.SetStorageRequest{Lease: d.ref, Mode: m}))
		return err
	})
}

// BlockTarget names the storage's block target on the exporter's host
// while it is connected there ("exporter:path"): for messages, since this
// host cannot open it; images go through FlashImage.
func (d *Device) BlockTarget(ctx context.Context) (string, error) {
	var target string
	err := d.call("block target", func() error {
		resp, err := d.ex.storage.GetStorage(ctx, connect.NewRequest(&dutv1.GetStorageRequest{Lease: d.ref}))
		if err != nil {
			return err
		}
		if resp.Msg.GetMode() != dutv1.StorageMode_STORAGE_MODE_HOST {
			return fmt.Errorf("%w: the storage is not connected to exporter %s's host", driver.ErrStorageNotOnHost, d.ex.name)
		}
		target = resp.Msg.GetBlockTarget()
		return nil
	})
	return target, err
}

// PinNames lists the device's pins (nil when the exporter cannot say).
func (d *Device) PinNames() []string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var names []string
	_ = d.call("list pins", func() error {
		resp, err := d.ex.pins.ListPins(ctx, connect.NewRequest(&dutv1.ListPinsRequest{Lease: d.ref}))
		if err != nil {
			return err
		}
		names = resp.Msg.GetNames()
		return nil
	})
	return names
}

// SetPin drives one pin.
func (d *Device) SetPin(ctx context.Context, pin string, level driver.PinLevel) error {
	l, err := wire.PinLevelToProto(level)
	if err != nil {
		return err
	}
	return d.call("set pin "+pin, func() error {
		_, err := d.ex.pins.SetPin(ctx, connect.NewRequest(&dutv1.SetPinRequest{Lease: d.ref, Pin: pin, Level: l}))
		return err
	})
}

// ReadPower reads the power meter.
func (d *Device) ReadPower(ctx context.Context) (driver.PowerReading, error) {
	var r driver.PowerReading
	err := d.call("read power", func() error {
		resp, err := d.ex.meter.ReadPower(ctx, connect.NewRequest(&dutv1.ReadPowerRequest{Lease: d.ref}))
		if err == nil {
			r = driver.PowerReading{Volts: resp.Msg.GetVolts(), Amps: resp.Msg.GetAmps(), Watts: resp.Msg.GetWatts()}
		}
		return err
	})
	return r, err
}

// Config reads the board's stored configuration.
func (d *Device) Config(ctx context.Context) (map[string]string, error) {
	var m map[string]string
	err := d.call("read config", func() error {
		resp, err := d.ex.config.GetConfig(ctx, connect.NewRequest(&dutv1.GetConfigRequest{Lease: d.ref}))
		if err != nil {
			return err
		}
		m = resp.Msg.GetValues()
		return nil
	})
	if m == nil && err == nil {
		m = map[string]string{}
	}
	return m, err
}

// SetConfig writes one key of the board's configuration.
func (d *Device) SetConfig(ctx context.Context, key, value string) error {
	return d.call("set config "+key, func() error {
		_, err := d.ex.config.SetConfig(ctx, connect.NewRequest(&dutv1.SetConfigRequest{Lease: d.ref, Key: key, Value: value}))
		return err
	})
}
