package remote_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/remote"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/exporter"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1/dutv1connect"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/wire"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
)

// waitFor opens name with a deadline of within and says how long the
// lease took to come: a device another holds is granted the moment it is
// freed.
func (l *lab) waitFor(t *testing.T, name string, within time.Duration) (*remote.Device, time.Duration) {
	t.Helper()
	drv := remote.New(remote.Options{Exporters: []string{l.url}})
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	infos, err := drv.Discover(ctx)
	require.NoError(t, err)
	got, err := driver.Select(infos, name, nil)
	require.NoError(t, err)
	start := time.Now()
	dev, err := drv.Open(ctx, got[0])
	require.NoError(t, err, "the device was not freed within %s", within)
	t.Cleanup(func() { _ = dev.(driver.Closer).Close() })
	return dev.(*remote.Device), time.Since(start)
}

// TestAKilledClientLeavesTheDeviceOffAndFree kills a client process that
// holds a device, during a flash, a boot and a command: each time the
// exporter sees the connection close, powers the device off, switches its
// storage off and gives it to the next client at once.
func TestAKilledClientLeavesTheDeviceOffAndFree(t *testing.T) {
	t.Parallel()
	for _, phase := range []string{"flash", "boot", "run"} {
		t.Run(phase, func(t *testing.T) {
			t.Parallel()
			so := sim.Options{BootTime: 20 * time.Second, DiskSize: 256 << 20} // a long boot, a disk for a large image
			if phase == "run" {
				so = sim.Options{BootTime: 100 * time.Millisecond} // a quick boot: the phase is the command
			}
			l := newLabOf(t, 1, so)
			child := startChild(t, []string{"REMOTE_CHILD_EXPORTER=" + l.url, "REMOTE_CHILD_PHASE=" + phase, "REMOTE_CHILD_DIR=" + t.TempDir()})
			select {
			case <-child.ready:
			case <-time.After(60 * time.Second):
				t.Fatalf("the child client did not reach its %s within 60s", phase)
			}
			truth := l.sims.device("sim-0")
			require.NotEqual(t, phase == "flash", truth.PowerState() == sim.PowerStateOn, "during the %s the device is powered as expected", phase)
			require.NoError(t, child.cmd.Process.Kill())
			killed := time.Now()
			dev, _ := l.waitFor(t, "sim-0", 10*time.Second)
			t.Logf("%s: the next client got sim-0 %s after the holder was killed", phase, time.Since(killed).Round(time.Millisecond))
			assert.Less(t, time.Since(killed), 3*time.Second, "the exporter took too long to notice the client's death")
			assert.Equal(t, sim.PowerStateOff, truth.PowerState(), "the new lease found the device powered")
			assert.Equal(t, driver.StorageOff, truth.StorageState(), "the new lease found the storage switched")
			s, err := dev.PowerState(context.Background())
			require.NoError(t, err)
			assert.Equal(t, dutv1.PowerState_POWER_STATE_OFF, s)
		})
	}
}

// child is a client process of the kill test.
type child struct {
	cmd   *exec.Cmd
	ready chan struct{} // closed when it says it is in its phase
}

func startChild(t *testing.T, env []string) *child {
	t.Helper()
	c := &child{cmd: exec.Command(os.Args[0], "-test.run=^TestClientChild$", "-test.v"), ready: make(chan struct{})}
	c.cmd.Env = append(os.Environ(), env...)
	out, err := c.cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, c.cmd.Start())
	t.Cleanup(func() { _ = c.cmd.Process.Kill(); _ = c.cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			if strings.Contains(sc.Text(), "CHILD READY") {
				once.Do(func() { close(c.ready) })
			}
		}
	}()
	return c
}

// TestClientChild is the client process of the kill test: it takes sim-0
// and goes into its phase (REMOTE_CHILD_PHASE: a flash of a large image, a
// long boot, a long command), says so, and waits to be killed.
func TestClientChild(t *testing.T) {
	url := os.Getenv("REMOTE_CHILD_EXPORTER")
	if url == "" {
		t.Skip("the client process of TestAKilledClientLeavesTheDeviceOffAndFree")
	}
	drv := remote.New(remote.Options{Exporters: []string{url}})
	ready := func() { os.Stdout.WriteString("\nCHILD READY\n") }
	switch os.Getenv("REMOTE_CHILD_PHASE") {
	case "flash":
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		infos, err := drv.Discover(ctx)
		require.NoError(t, err)
		dev, err := drv.Open(ctx, infos[0])
		require.NoError(t, err)
		img := filepath.Join(os.Getenv("REMOTE_CHILD_DIR"), "big.img")
		require.NoError(t, writeRandom(img, 200<<20))
		once := sync.Once{}
		_, _, err = dev.(*remote.Device).Flash(ctx, img, flash.Options{ProgressEvery: 1 << 20, NoHashCache: true, Progress: func(flash.Progress) { once.Do(ready) }})
		t.Fatalf("the flash ended before the kill: %v", err)
	case "boot":
		dut := harness.Acquire(t, harness.WithDrivers(drv), harness.WithLockDir(os.Getenv("REMOTE_CHILD_DIR")))
		dut.PowerOn()
		ready()
		dut.Login() // the boot takes 20 s: killed before
	case "run":
		dut := harness.Acquire(t, harness.WithDrivers(drv), harness.WithLockDir(os.Getenv("REMOTE_CHILD_DIR")))
		dut.PowerOn()
		sh := dut.Login()
		ready()
		sh.Run("sleep 600")
	}
}

// writeRandom writes n pseudo-random bytes to path.
func writeRandom(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, 1<<20)
	for off := int64(0); off < n; off += int64(len(b)) {
		for i := range b {
			b[i] = byte(off>>20) ^ byte(i*31)
		}
		if _, err := f.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// TestASilentSessionEndsWithinTheKeepaliveBound attaches a session that
// never pings: the exporter ends it within its keepalive timeout, powers
// the device off and frees it.
func TestASilentSessionEndsWithinTheKeepaliveBound(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1)
	c := l.clients("")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lz := tryAcquire(t, c, "sim-0")
	s := c.leases.Session(ctx)
	require.NoError(t, s.Send(&dutv1.SessionRequest{Message: &dutv1.SessionRequest_Attach{Attach: ref(lz)}}))
	m, err := s.Receive()
	require.NoError(t, err)
	require.NotNil(t, m.GetAttached())
	_, err = c.power.PowerOn(ctx, connect.NewRequest(&dutv1.PowerOnRequest{Lease: ref(lz)}))
	require.NoError(t, err)
	start := time.Now()
	_, waited := l.waitFor(t, "sim-0", 10*time.Second)
	t.Logf("silent session ended after %s (keepalive timeout 2s)", waited.Round(time.Millisecond))
	assert.Less(t, time.Since(start), 4*time.Second)
	assert.GreaterOrEqual(t, time.Since(start), 1500*time.Millisecond, "the session ended before its keepalive timeout")
	m, err = s.Receive()
	if err == nil {
		assert.Contains(t, m.GetEnded().GetReason(), "keepalive")
	}
}

// clients are raw protocol clients of the lab, with a token.
type clients struct {
	devices dutv1connect.DeviceServiceClient
	leases  dutv1connect.LeaseServiceClient
	power   dutv1connect.PowerServiceClient
	console dutv1connect.ConsoleServiceClient
	flash   dutv1connect.FlashServiceClient
}

func (l *lab) clients(token string) clients {
	hc := unixClient(l.url)
	opts := []connect.ClientOption{connect.WithGRPC(), connect.WithInterceptors(wire.ClientInterceptor(l.url))}
	if token != "" {
		opts = append(opts, connect.WithInterceptors(headerInterceptor{"Authorization", "Bearer " + token}))
	}
	return clients{
		devices: dutv1connect.NewDeviceServiceClient(hc, "http://exporter", opts...),
		leases:  dutv1connect.NewLeaseServiceClient(hc, "http://exporter", opts...),
		power:   dutv1connect.NewPowerServiceClient(hc, "http://exporter", opts...),
		console: dutv1connect.NewConsoleServiceClient(hc, "http://exporter", opts...),
		flash:   dutv1connect.NewFlashServiceClient(hc, "http://exporter", opts...),
	}
}

func tryAcquire(t *testing.T, c clients, name string) *dutv1.Lease {
	t.Helper()
	resp, err := c.leases.TryAcquire(context.Background(), connect.NewRequest(&dutv1.TryAcquireRequest{Selector: &dutv1.Selector{Name: name}, Holder: &dutv1.Holder{Test: t.Name()}}))
	require.NoError(t, err)
	return resp.Msg.GetLease()
}

func ref(l *dutv1.Lease) *dutv1.LeaseRef {
	return &dutv1.LeaseRef{Device: l.GetDevice().GetKey(), Token: l.GetToken()}
}

// TestOnlyTheLeaseHolderChangesADevice: calls without a lease, with the
// lease of another device, with a lease no session keeps, and after
// release are refused, and the device stays as it was.
func TestOnlyTheLeaseHolderChangesADevice(t *testing.T) {
	t.Parallel()
	l := newLab(t, 2)
	c := l.clients("")
	ctx := context.Background()
	l0, l1 := tryAcquire(t, c, "sim-0"), tryAcquire(t, c, "sim-1")
	on := func(r *dutv1.LeaseRef) error {
		_, err := c.power.PowerOn(ctx, connect.NewRequest(&dutv1.PowerOnRequest{Lease: r}))
		return err
	}
	err := on(nil)
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(err), "%v", err)
	assert.ErrorContains(t, err, "carries no lease")
	err = on(&dutv1.LeaseRef{Device: "sim/sim-0", Token: l1.GetToken()})
	assert.Equal(t, connect.CodePermissionDenied, connect.CodeOf(err), "%v", err)
	assert.ErrorContains(t, err, "is the lease of sim/sim-1, not of sim/sim-0")
	err = on(&dutv1.LeaseRef{Device: "sim/sim-0", Token: "0123456789abcdef0123456789abcdef"})
	assert.ErrorContains(t, err, "names no lease")
	err = on(ref(l0))
	assert.ErrorIs(t, err, driver.ErrClosed, "a lease with no session must not act")
	assert.ErrorContains(t, err, "no session attached")
	assert.Equal(t, sim.PowerStateOff, l.sims.device("sim-0").PowerState())
	assert.Equal(t, sim.PowerStateOff, l.sims.device("sim-1").PowerState())

	_, err = c.leases.Release(ctx, connect.NewRequest(&dutv1.ReleaseRequest{Lease: ref(l0)}))
	require.NoError(t, err)
	resp, err := c.leases.Release(ctx, connect.NewRequest(&dutv1.ReleaseRequest{Lease: ref(l0)}))
	require.NoError(t, err, "releasing a released lease does nothing")
	assert.False(t, resp.Msg.GetWasHeld())
	assert.ErrorContains(t, on(ref(l0)), "names no lease")
}

// TestCallersMustAuthenticate: with tokens configured, a call with no
// token or a wrong one is refused (Unauthenticated, saying what to set)
// and changes nothing; the right token lists devices.
func TestCallersMustAuthenticate(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1, func(c *exporter.Config) { c.Tokens = map[string]string{"s3cret-token": "ci"} })
	ctx := context.Background()
	for name, tok := range map[string]string{"no token": "", "wrong token": "guess"} {
		c := l.clients(tok)
		_, err := c.devices.ListDevices(ctx, connect.NewRequest(&dutv1.ListDevicesRequest{}))
		assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), "%s: %v", name, err)
		assert.ErrorContains(t, err, "DUT_EXPORTER_TOKEN", name)
		_, err = c.leases.TryAcquire(ctx, connect.NewRequest(&dutv1.TryAcquireRequest{}))
		assert.Equal(t, connect.CodeUnauthenticated, connect.CodeOf(err), "%s: %v", name, err)
	}
	_, held, err := lease.HolderOf(l.lockDir, driver.Info{Driver: "sim", Name: "sim-0"})
	require.NoError(t, err)
	assert.False(t, held, "a refused caller took the lease")

	resp, err := l.clients("s3cret-token").devices.ListDevices(ctx, connect.NewRequest(&dutv1.ListDevicesRequest{}))
	require.NoError(t, err)
	require.Len(t, resp.Msg.GetDevices(), 1)
	lz := tryAcquire(t, l.clients("s3cret-token"), "sim-0")
	assert.Equal(t, "ci", lz.GetHolder().GetUser(), "the holder is known by its token's name")

	_, err = remote.New(remote.Options{Exporters: []string{l.url}, Token: "guess"}).Discover(ctx)
	assert.ErrorContains(t, err, "does not know this client token")
}

// TestAWaiterIsToldWhoHoldsTheDevice: a second client waits while the
// first holds the device; when its wait ends first, the error is busy and
// names the holder.
func TestAWaiterIsToldWhoHoldsTheDevice(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1)
	l.open(t, "sim-0")
	drv := remote.New(remote.Options{Exporters: []string{l.url}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	infos, err := drv.Discover(ctx)
	require.NoError(t, err)
	require.Len(t, infos, 1)
	assert.Contains(t, strings.Join(infos[0].Problems, ";"), "held on exporter test-lab by "+t.Name())
	_, err = drv.Open(ctx, infos[0])
	require.Error(t, err)
	assert.ErrorIs(t, err, driver.ErrBusy)
	var we *wire.Error
	require.True(t, errors.As(err, &we), "%v", err)
	require.NotEmpty(t, we.Holders)
	assert.Equal(t, t.Name(), we.Holders[0].Holder.Test)
}

// headerInterceptor sets a header on every request.
type headerInterceptor struct{ key, value string }

func (h headerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set(h.key, h.value)
		return next(ctx, req)
	}
}

func (h headerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		c := next(ctx, spec)
		c.RequestHeader().Set(h.key, h.value)
		return c
	}
}

func (h headerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// TestALeaseHandedOverOutlivesItsSessions: a lease made by CreateLease for
// another party is used through its token (Options.Lease); each session's
// end powers the DUT off but keeps the lease (no one else gets the
// device), a new session attaches again, and once no session comes within
// its idle time-to-live, the lease ends and the device is free.
func TestALeaseHandedOverOutlivesItsSessions(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1)
	c := l.clients("")
	resp, err := c.leases.CreateLease(context.Background(), connect.NewRequest(&dutv1.CreateLeaseRequest{
		Selector: &dutv1.Selector{Name: "sim-0"}, Holder: &dutv1.Holder{Test: "pod default/test-1"}, IdleTtl: durationpb.New(3 * time.Second),
	}))
	require.NoError(t, err)
	token := resp.Msg.GetLease().GetToken()
	require.False(t, resp.Msg.GetLease().GetReleaseOnDetach())

	use := func() {
		drv := remote.New(remote.Options{Exporters: []string{l.url}, Lease: token})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		infos, err := drv.Discover(ctx)
		require.NoError(t, err)
		dev, err := drv.Open(ctx, infos[0])
		require.NoError(t, err)
		require.NoError(t, dev.(driver.Power).PowerOn(ctx))
		require.Equal(t, sim.PowerStateOn, l.sims.device("sim-0").PowerState())
		require.NoError(t, dev.(driver.Closer).Close())
	}
	use()
	assert.Equal(t, sim.PowerStateOff, l.sims.device("sim-0").PowerState(), "the session's end powers the DUT off")
	_, err = c.leases.TryAcquire(context.Background(), connect.NewRequest(&dutv1.TryAcquireRequest{Selector: &dutv1.Selector{Name: "sim-0"}}))
	assert.ErrorIs(t, err, driver.ErrBusy, "the handed-over lease still holds the device between sessions")
	use() // the token serves again
	start := time.Now()
	_, waited := l.waitFor(t, "sim-0", 10*time.Second)
	t.Logf("the idle lease ended %s after its last session (idle TTL 3s)", waited.Round(time.Millisecond))
	assert.GreaterOrEqual(t, time.Since(start), 2*time.Second, "the lease ended before its idle time-to-live")

	_, err = remote.New(remote.Options{Exporters: []string{l.url}, Lease: token}).Open(context.Background(), driver.Info{Name: "sim-0", Facts: []driver.Fact{{Key: remote.FactURL, Value: l.url}, {Key: remote.FactKey, Value: "sim/sim-0"}}})
	assert.ErrorContains(t, err, "names no lease", "an ended lease's token is refused")
}

// TestShutdownStopsAFlashInProgress: the exporter shutting down (SIGTERM)
// ends a lease whose flash is running: the flash is stopped (it fails)
// rather than left to hold the shutdown for its whole length, and the DUT
// ends off, its storage off. (How fast it stops is a figure, logged, not a
// pass/fail bound: under the race detector on a busy machine it takes
// seconds.)
func TestShutdownStopsAFlashInProgress(t *testing.T) {
	t.Parallel()
	l := newLabOf(t, 1, sim.Options{BootTime: 100 * time.Millisecond, DiskSize: 64 << 20})
	dev := l.open(t, "sim-0")
	raw := filepath.Join(t.TempDir(), "slow.img")
	noise := make([]byte, 12<<20) // incompressible: slow to unpack
	_, _ = rand.Read(noise)
	require.NoError(t, os.WriteFile(raw, noise, 0o644))
	out, err := exec.Command("bzip2", "-1", raw).CombinedOutput() // Go's own bzip2 decoder unpacks it at a few MB/s
	require.NoError(t, err, "%s", out)
	started := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		_, _, err := dev.Flash(context.Background(), raw+".bz2", flash.Options{PureGo: true, ProgressEvery: 1 << 20, NoHashCache: true,
			Progress: func(flash.Progress) { once.Do(func() { close(started) }) }})
		done <- err
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("the flash ended before the shutdown: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the flash did not start within 30s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	require.NoError(t, l.exp.Shutdown(ctx))
	t.Logf("shutdown took %s with a flash running", time.Since(start).Round(time.Millisecond))
	err = <-done
	require.Error(t, err, "the flash went on through the shutdown: the lease's end did not stop it")
	assert.Equal(t, sim.PowerStateOff, l.sims.device("sim-0").PowerState())
	assert.Equal(t, driver.StorageOff, l.sims.device("sim-0").StorageState())
}
