package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/remote"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/simimage"
)

// TestServeEndsEveryLeaseWhenStopped: dut serve exports the bench's sim
// boards on a unix socket; a remote client powers one on; stopping the
// command (SIGTERM cancels its context) powers the board off and releases
// it before dut serve exits 0.
func TestServeEndsEveryLeaseWhenStopped(t *testing.T) {
	env(t)
	dir := t.TempDir()
	sock := "unix://" + filepath.Join(dir, "dut.sock")
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	srv := start(t, ctx, nil, "--driver", "sim", "serve", "--listen", sock, "--cache-dir", filepath.Join(dir, "cache"))
	srv.stderr.waitFor(t, "msg=listening")

	drv := remote.New(remote.Options{Exporters: []string{sock}})
	octx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	infos, err := drv.Discover(octx)
	require.NoError(t, err)
	got, err := driver.Select(infos, "sim-0", nil)
	require.NoError(t, err)
	dev, err := drv.Open(octx, got[0])
	require.NoError(t, err)
	defer dev.(driver.Closer).Close()
	require.NoError(t, dev.(driver.Power).PowerOn(octx))
	require.Equal(t, sim.PowerStateOn, simDevice(t, "sim-0").PowerState())

	stop() // what SIGTERM does
	assert.Equal(t, exitOK, srv.wait(t))
	assert.Equal(t, sim.PowerStateOff, simDevice(t, "sim-0").PowerState(), "dut serve exited leaving a leased board powered")
	assert.Contains(t, srv.stderr.String(), "exporter shutting down")
	assert.ErrorIs(t, dev.(driver.Power).PowerOn(octx), driver.ErrClosed, "the client's lease ended with the exporter")
}

// TestServeRefusesAnUnsafeListener: plain text over TCP without --insecure,
// https without a certificate, and a TCP listener with no way to
// authenticate are refused at start, saying what to give.
func TestServeRefusesAnUnsafeListener(t *testing.T) {
	env(t)
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("ci 0123456789abcdef0123\n"), 0o600))
	open := filepath.Join(dir, "open-tokens")
	require.NoError(t, os.WriteFile(open, []byte("ci 0123456789abcdef0123\n"), 0o644))
	cache := "--cache-dir=" + filepath.Join(dir, "cache")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", cache, "--tokens", tokens, "--listen", "http://127.0.0.1:0"}, "say --insecure"},
		{[]string{"serve", cache, "--tokens", tokens, "--listen", "https://127.0.0.1:0"}, "needs a server certificate"},
		{[]string{"serve", cache, "--insecure", "--listen", "http://127.0.0.1:0"}, "no way to authenticate"},
		{[]string{"serve", cache, "--tokens", open, "--insecure", "--listen", "http://127.0.0.1:0"}, "chmod 600"},
		{[]string{"serve", cache}, "at least one --listen"},
		{[]string{"serve", cache, "--listen", "ftp://x"}, "the scheme must be"},
	} {
		r := dut(t, c.args...)
		assert.Equal(t, exitUsage, r.code, "%v", c.args)
		assert.Contains(t, r.stderr, c.want, "%v", c.args)
	}
}

// TestServeReadsItsConfigFile: the flags as JSON keys; an unknown key is
// refused.
func TestServeReadsItsConfigFile(t *testing.T) {
	env(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"listen": ["unix:///x"], "lissen": []}`), 0o644))
	r := dut(t, "serve", "--config", bad)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, `unknown field "lissen"`)

	good := filepath.Join(dir, "good.json")
	sock := filepath.Join(dir, "dut.sock")
	require.NoError(t, os.WriteFile(good, []byte(`{"listen": ["unix://`+sock+`"], "driver": "sim", "name": "from-file", "cache-dir": "`+filepath.Join(dir, "cache")+`"}`), 0o644))
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	srv := start(t, ctx, nil, "serve", "--config", good)
	srv.stderr.waitFor(t, "msg=listening")
	infos, err := remote.New(remote.Options{Exporters: []string{"unix://" + sock}}).Discover(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, infos)
	assert.Equal(t, "from-file", infos[0].Fact(remote.FactExporter))
	assert.Equal(t, "sim", infos[0].Fact(remote.FactDriver), "the config's driver")
	stop()
	assert.Equal(t, exitOK, srv.wait(t))
}

// TestCommandsWorkThroughAnExporter: with DUT_DRIVER=remote, dut list,
// dut flash and dut power reach the bench's boards through dut serve; the
// image is written by the exporter's engine onto the board's disk.
func TestCommandsWorkThroughAnExporter(t *testing.T) {
	env(t)
	dir := t.TempDir()
	sock := "unix://" + filepath.Join(dir, "dut.sock")
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	srv := start(t, ctx, nil, "--driver", "sim", "serve", "--listen", sock, "--cache-dir", filepath.Join(dir, "cache"))
	srv.stderr.waitFor(t, "msg=listening")
	t.Setenv("DUT_DRIVER", "remote")
	t.Setenv(remote.EnvExporter, sock)

	r := dut(t, "list")
	require.Equal(t, exitOK, r.code)
	assert.Contains(t, r.stdout, "via ")
	img := filepath.Join(dir, "os.img")
	require.NoError(t, simimage.WriteFile(img, simimage.Spec{Version: "2.0.0"}))
	r = dut(t, "flash", "sim-0", img)
	require.Equal(t, exitOK, r.code, r.stderr)
	want, err := os.ReadFile(img)
	require.NoError(t, err)
	disk, err := os.ReadFile(simDevice(t, "sim-0").DiskPath())
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(disk), len(want))
	assert.Equal(t, want, disk[:len(want)], "the exporter wrote the image onto the board's disk")
	assert.Equal(t, driver.StorageOff, simDevice(t, "sim-0").StorageState())
	r = dut(t, "power", "on", "sim-0")
	assert.Equal(t, exitOK, r.code)
	stop()
	assert.Equal(t, exitOK, srv.wait(t))
}
