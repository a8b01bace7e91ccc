package remote_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/remote"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/exporter"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/imagecache"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/simimage"
)

// recorder is a sim driver that remembers the devices the exporter opened,
// so a test can see the truth behind the network (power, pins) and unplug
// a board.
type recorder struct {
	*sim.Driver
	mu     sync.Mutex
	opened map[string]*sim.Device
}

func (r *recorder) Open(ctx context.Context, info driver.Info) (driver.Device, error) {
	dev, err := r.Driver.Open(ctx, info)
	if err == nil {
		r.mu.Lock()
		r.opened[info.Name] = dev.(*sim.Device)
		r.mu.Unlock()
	}
	return dev, err
}

// device is the device the exporter opened last under name.
func (r *recorder) device(name string) *sim.Device {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opened[name]
}

// lab is an exporter serving sim devices in this process, over a unix
// socket.
type lab struct {
	sims    *recorder
	exp     *exporter.Exporter
	url     string
	lockDir string
	cache   *imagecache.Cache
}

// newLab serves n sim devices (image 1.0.0 on their disks) on a unix
// socket until the test ends.
func newLab(t *testing.T, n int, mod ...func(*exporter.Config)) *lab {
	return newLabOf(t, n, sim.Options{BootTime: 100 * time.Millisecond}, mod...)
}

// newLabOf is newLab with the sims' options (boot time, disk size).
func newLabOf(t *testing.T, n int, so sim.Options, mod ...func(*exporter.Config)) *lab {
	if os.Getenv("LABLOG") != "" {
		mod = append(mod, func(c *exporter.Config) { c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil)) })
	}
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "sims"), 0o755))
	for i := range n {
		disk := filepath.Join(dir, "sims", "sim-"+string(rune('0'+i))+".disk")
		require.NoError(t, simimage.WriteFile(disk, simimage.Spec{Version: "1.0.0"}))
		if so.DiskSize > 0 {
			require.NoError(t, os.Truncate(disk, so.DiskSize))
		}
	}
	so.Devices, so.Dir = n, filepath.Join(dir, "sims")
	rec := &recorder{Driver: sim.New(so), opened: map[string]*sim.Device{}}
	cache, err := imagecache.Open(filepath.Join(dir, "cache"), 1<<30)
	require.NoError(t, err)
	cfg := exporter.Config{
		Name: "test-lab", Drivers: []driver.Driver{rec}, LockDir: filepath.Join(dir, "locks"), Images: cache,
		KeepaliveInterval: 200 * time.Millisecond, KeepaliveTimeout: 2 * time.Second, IdleTTL: 2 * time.Second,
	}
	for _, m := range mod {
		m(&cfg)
	}
	exp, err := exporter.New(cfg)
	require.NoError(t, err)
	sock := filepath.Join(dir, "dut.sock")
	l := exporter.Listener{Address: "unix://" + sock}
	ln, err := exp.Listen(l)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- exp.ServeOn(ctx, ln, l) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer scancel()
		require.NoError(t, exp.Shutdown(sctx))
		cancel()
		require.NoError(t, <-done)
	})
	return &lab{sims: rec, exp: exp, url: "unix://" + sock, lockDir: cfg.LockDir, cache: cache}
}

// open leases and opens the remote device of name through a new remote
// driver, as the harness does (a client-side lease, then Open with the
// test as its holder), closed and released when the test ends.
func (l *lab) open(t *testing.T, name string, o ...func(*remote.Options)) *remote.Device {
	t.Helper()
	opts := remote.Options{Exporters: []string{l.url}}
	for _, m := range o {
		m(&opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ls, err := lease.TryAcquire(ctx, lease.Request{Drivers: []driver.Driver{remote.New(opts)}, Name: name, Dir: t.TempDir()}, lease.Holder{Test: t.Name()})
	require.NoError(t, err)
	dev, err := ls.Open(ctx)
	if err != nil {
		ls.Release()
	}
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = dev.(driver.Closer).Close()
		_ = ls.Release()
	})
	return dev.(*remote.Device)
}

// unixClient is an HTTP/2 (h2c) client of a unix:// exporter URL.
func unixClient(url string) *http.Client {
	path := strings.TrimPrefix(url, "unix://")
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
	return &http.Client{Transport: tr}
}
