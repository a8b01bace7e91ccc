package remotee2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/faketb"
	"github.com/jumpstarter-dev/jumpstarter-go/remote"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
)

// TestExamplesOverTLSAcrossNamespaces runs the examples, unchanged, with
// DUT_DRIVER=remote against an exporter in another network namespace over
// TLS with a client token.
func TestExamplesOverTLSAcrossNamespaces(t *testing.T) {
	t.Parallel()
	img := need(t)
	l := newLab(t)
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-v", "./examples/")
	cmd.Dir = root
	cmd.Env = append(filterEnv(os.Environ(), "DUT_"), l.env()...)
	cmd.Env = append(cmd.Env, "DUT_REQUIRE=1", "DUT_IMAGE="+img, "DUT_EXPECT_RELEASE=1.0.0", "DUT_LOCK_DIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the examples through the exporter in namespace %s:\n%s", l.ns, out)
	assert.NotContains(t, string(out), "--- SKIP")
	assert.GreaterOrEqual(t, strings.Count(string(out), "--- PASS: Test"), 4, "every example ran and passed")
	assert.Contains(t, l.logText(), "lease ended", "the exporter served the examples")
}

// TestQEMUEndToEndOverTLSAcrossNamespaces runs the QEMU end-to-end tests
// (e2e/qemu), unchanged, through the exporter in another namespace: four
// virtual DUTs, one per parallel test.
func TestQEMUEndToEndOverTLSAcrossNamespaces(t *testing.T) {
	t.Parallel()
	need(t)
	images, err := filepath.Abs("../../out/qemu-images")
	require.NoError(t, err)
	if v := os.Getenv("DUT_QEMU_IMAGES"); v != "" {
		images = v
	}
	l := newLabOf(t, 4)
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-v", "./e2e/qemu/")
	cmd.Dir = root
	cmd.Env = append(filterEnv(os.Environ(), "DUT_"), l.env()...)
	cmd.Env = append(cmd.Env, "DUT_QEMU_DIR="+l.qemuDir(), "DUT_QEMU_IMAGES="+images)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "e2e/qemu through the exporter in namespace %s:\n%s", l.ns, out)
	assert.NotContains(t, string(out), "--- SKIP")
	assert.GreaterOrEqual(t, strings.Count(string(out), "--- PASS: Test"), 5, "every end-to-end test ran and passed")
}

// TestAPlainTextClientIsRefusedByTheTLSListener: a client speaking plain
// HTTP/2 (h2c) or HTTP/1.1 to the TLS port gets no answer of the
// exporter's services, and changes nothing.
func TestAPlainTextClientIsRefusedByTheTLSListener(t *testing.T) {
	t.Parallel()
	need(t)
	l := newLab(t)
	plain := strings.Replace(l.url, "https://", "http://", 1)
	_, err := remote.New(remote.Options{Exporters: []string{plain}, Token: l.token}).Discover(context.Background())
	require.Error(t, err, "a plain-text client was served")
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(plain + "/jumpstarter.dut.v1.DeviceService/ListDevices?encoding=json&message={}")
	if err == nil {
		defer resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "Go's TLS server answers plain HTTP with 400")
	}
	assert.NotContains(t, l.logText(), "lease granted")
}

// session acquires the lab's DUT through the harness with the remote
// driver value (no environment), flashes the 1.0.0 image, boots it and
// logs in.
func session(tb testing.TB, l *lab, img string, opts ...harness.Option) (*harness.DUT, *harness.Shell) {
	opts = append([]harness.Option{
		harness.WithDrivers(l.driver()), harness.WithLockDir(l.t.TempDir()), harness.WithImage(img),
		harness.WithBootTimeout(3 * time.Minute),
	}, opts...)
	dut := harness.Acquire(tb, opts...)
	dut.Flash()
	dut.PowerOn()
	return dut, dut.Login()
}

// TestTheConsoleStreamSurvivesA3sCut cuts the link between the namespaces
// for 3 s while the DUT prints numbered lines: the stream resumes, every
// line arrives once and in order.
func TestTheConsoleStreamSurvivesA3sCut(t *testing.T) {
	t.Parallel()
	img := need(t)
	l := newLab(t)
	_, sh := session(t, l, img)
	const lines = 600
	cutDone := make(chan time.Duration, 1)
	go func() {
		// Cut once the output is flowing (the DUT prints for about 6 s),
		// for 3 s: the workload's pace and the fault's length, not waits
		// for an event.
		time.Sleep(time.Second)
		l.link(false)
		cut := time.Now()
		time.Sleep(3 * time.Second)
		l.link(true)
		cutDone <- time.Since(cut)
	}()
	out := sh.Run(fmt.Sprintf("i=1; while [ $i -le %d ]; do echo L$i; i=$((i+1)); sleep 0.01; done", lines))
	t.Logf("link was down for %s", (<-cutDone).Round(time.Millisecond))
	got := strings.Fields(out)
	require.Len(t, got, lines, "every line once")
	for i, s := range got {
		require.Equal(t, fmt.Sprintf("L%d", i+1), s, "line %d", i+1)
	}
}

// TestACutLongerThanTheKeepaliveFailsClearly: with a 3 s keepalive bound, a
// 7 s cut ends the session: the exporter powers the DUT off and frees it,
// and the test fails as an infrastructure failure that says why.
func TestACutLongerThanTheKeepaliveFailsClearly(t *testing.T) {
	t.Parallel()
	img := need(t)
	l := newLab(t, "--keepalive-timeout", "3s")
	f := faketb.New(t)
	cutDone := make(chan time.Time, 1)
	f.Run(func(tb testing.TB) {
		_, sh := session(tb, l, img)
		go func() {
			time.Sleep(time.Second) // let the command start
			l.link(false)
			time.Sleep(7 * time.Second) // the cut itself, beyond the bound
			l.link(true)
			cutDone <- time.Now()
		}()
		sh.Run("sleep 60")
	})
	require.True(t, f.Failed(), "the test passed through a cut beyond the keepalive bound")
	v, _ := f.AttrValue(harness.AttrFailure)
	assert.Equal(t, "infrastructure", v, f.Message())
	assert.Regexp(t, "ping|keepalive|gone|unreachable", f.Message())
	<-cutDone
	dev := openRemote(t, l, 30*time.Second)
	s, err := dev.PowerState(context.Background())
	require.NoError(t, err)
	assert.Equal(t, dutv1.PowerState_POWER_STATE_OFF, s)
	assert.Contains(t, l.logText(), "keepalive")
}

// TestAKilledExporterFailsTheTestWithinSeconds SIGKILLs the exporter under
// a running command: the test fails as an infrastructure failure naming
// the exporter within seconds; a restarted exporter has no lease left and
// hands the DUT out powered off.
func TestAKilledExporterFailsTheTestWithinSeconds(t *testing.T) {
	t.Parallel()
	img := need(t)
	l := newLab(t)
	f := faketb.New(t)
	var killed time.Time
	f.Run(func(tb testing.TB) {
		_, sh := session(tb, l, img)
		go func() {
			time.Sleep(time.Second) // let the command start
			killed = time.Now()
			l.stop(syscall.SIGKILL)
		}()
		sh.Run("sleep 120")
	})
	require.True(t, f.Failed())
	took := time.Since(killed)
	t.Logf("the test failed %s after the exporter was killed", took.Round(time.Millisecond))
	assert.Less(t, took, 15*time.Second, "within seconds, not at a timeout")
	v, _ := f.AttrValue(harness.AttrFailure)
	assert.Equal(t, "infrastructure", v, f.Message())
	assert.Contains(t, f.Message(), "lab-", "the error names the exporter")

	l.start()
	dev := openRemote(t, l, 30*time.Second)
	s, err := dev.PowerState(context.Background())
	require.NoError(t, err)
	assert.Equal(t, dutv1.PowerState_POWER_STATE_OFF, s, "a restarted exporter hands the DUT out off")
}

// openRemote leases and opens the lab's DUT (waiting up to within).
func openRemote(t *testing.T, l *lab, within time.Duration) *remote.Device {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	ls, err := lease.Acquire(ctx, lease.Request{Drivers: []driver.Driver{l.driver()}, Dir: t.TempDir()}, lease.Holder{Test: t.Name()})
	require.NoError(t, err)
	dev, err := ls.Open(ctx)
	if err != nil {
		ls.Release()
	}
	require.NoError(t, err)
	t.Cleanup(func() { _ = dev.(driver.Closer).Close(); _ = ls.Release() })
	return dev.(*remote.Device)
}
