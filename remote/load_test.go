package remote_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/remote"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
)

// The load test's client processes and what they are told.
const (
	loadClients = 8
	loadHold    = 200 * time.Millisecond

	envLoadExporter = "REMOTE_LOAD_EXPORTER" // the exporter's URL
	envLoadName     = "REMOTE_LOAD_NAME"     // the client's name: its holder's test
	envLoadHold     = "REMOTE_LOAD_HOLD"     // how long it holds the device
)

// loadChild is one client process.
type loadChild struct {
	name string
	cmd  *exec.Cmd
	in   *os.File // the write end of its stdin: "GO\n" lets it ask

	mu  sync.Mutex
	rep loadReport
}

// loadReport is what the parent knows of a client, from the lines it
// printed.
type loadReport struct {
	ready   bool
	waiting time.Time // just before Open
	queued  bool      // the exporter said it waits
	device  string
	got     time.Time // right after Open returned
	state   string    // the power state right after Open
	drop    time.Time // right before Close
	done    bool
	errs    []string
	lines   []string
}

// scan records the lines the child prints until its stdout closes.
func (cc *loadChild) scan(sc *bufio.Scanner) {
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		cc.mu.Lock()
		c := &cc.rep
		c.lines = append(c.lines, line)
		if len(f) > 0 {
			switch {
			case f[0] == "READY":
				c.ready = true
			case f[0] == "WAITING" && len(f) == 2:
				c.waiting = unixNano(f[1])
			case f[0] == "QUEUED":
				c.queued = true
			case f[0] == "GOT" && len(f) == 3:
				c.device, c.got = f[1], unixNano(f[2])
			case f[0] == "STATE" && len(f) == 3:
				c.state = f[2]
			case f[0] == "DROP" && len(f) == 3:
				c.drop = unixNano(f[2])
			case f[0] == "DONE":
				c.done = true
			case f[0] == "ERROR":
				c.errs = append(c.errs, line)
			}
		}
		cc.mu.Unlock()
	}
}

func unixNano(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// snapshot returns a copy of what the child said so far.
func (c *loadChild) snapshot() loadReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rep
	r.errs, r.lines = slices.Clone(r.errs), slices.Clone(r.lines)
	return r
}

// queuedOnExporter reports whether the exporter's host lease has queued a
// ticket for the waiter whose holder's test is name: the lock package's
// documented queue, <lock dir>/queue/*.ticket, each a JSON record naming
// the waiter's test.
func queuedOnExporter(lockDir, name string) bool {
	files, _ := filepath.Glob(filepath.Join(lockDir, "queue", "*.ticket"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue // removed meanwhile
		}
		var tk struct {
			Test string `json:"test"`
		}
		if json.Unmarshal(data, &tk) == nil && tk.Test == name {
			return true
		}
	}
	return false
}

// until polls cond every few milliseconds until it holds or the deadline
// passes (a bounded wait for a condition, not a sleep standing in for
// one).
func until(deadline time.Time, cond func() bool) bool {
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestEightClientProcessesContendForTwoDevices runs eight client processes
// against one exporter serving sim-0 and sim-1. Each asks for a device by
// tag ("sim") through the remote driver with a lease directory of its own,
// so that only the exporter arbitrates; it holds the device about 200 ms,
// switching its power, and lets it go.
//
// Arrival order: the processes are started first (exec and the first
// connection take a while on two busy cores) and each waits for a "GO" on
// its stdin; client i+1 is told to go only once client i has its device or
// the exporter's host lease has queued client i's ticket (the lock
// package's queue, which is what its arrival order is), so arrival order
// is the clients' order by construction.
//
// Then: no device ever has two holders (per device, one client's DROP,
// printed before it closes the device, comes before the next one's GOT,
// printed after its Open returns); every client got a device; each device
// served its clients in arrival order (the lease package serves waiters for
// a key in the order of their tickets, and the remote driver's Open asks
// its exporter for one device, the one its local lease chose, so the
// exporter's order is per device); and every client found its device
// powered off. (Today every client's own lease chooses sim-0, so sim-1
// serves none: see TestClientsSelectingByTagShareTheExportersDevices.)
func TestEightClientProcessesContendForTwoDevices(t *testing.T) {
	if testing.Short() {
		t.Skip("starts eight client processes")
	}
	l := newLab(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	begin := time.Now()

	children := make([]*loadChild, loadClients)
	var readers sync.WaitGroup
	for i := range children {
		c := &loadChild{name: fmt.Sprintf("load-client-%d", i)}
		c.cmd = exec.CommandContext(ctx, os.Args[0], "-test.run=^TestLoadClientChild$", "-test.count=1")
		c.cmd.Env = append(os.Environ(), envLoadExporter+"="+l.url, envLoadName+"="+c.name, envLoadHold+"="+loadHold.String())
		r, w, err := os.Pipe()
		require.NoError(t, err)
		c.cmd.Stdin, c.in = r, w
		out, err := c.cmd.StdoutPipe()
		require.NoError(t, err)
		c.cmd.Stderr = os.Stderr
		require.NoError(t, c.cmd.Start())
		r.Close()
		t.Cleanup(func() { _ = c.in.Close(); _ = c.cmd.Process.Kill() })
		readers.Go(func() { c.scan(bufio.NewScanner(out)) })
		children[i] = c
	}
	waitErrs := make([]error, loadClients)
	var exited sync.WaitGroup
	for i, c := range children {
		exited.Go(func() {
			readers.Wait() // Wait closes stdout: read it all first
			waitErrs[i] = c.cmd.Wait()
		})
	}
	require.True(t, until(time.Now().Add(60*time.Second), func() bool {
		for _, c := range children {
			if s := c.snapshot(); !s.ready && !s.done && len(s.errs) == 0 {
				return false
			}
		}
		return true
	}), "the client processes did not start within 60s")
	started := time.Now()

	for i, c := range children {
		_, err := c.in.WriteString("GO\n")
		require.NoError(t, err)
		arrived := until(time.Now().Add(20*time.Second), func() bool {
			s := c.snapshot()
			return !s.got.IsZero() || len(s.errs) > 0 || (!s.waiting.IsZero() && queuedOnExporter(l.lockDir, c.name))
		})
		require.True(t, arrived, "client %d neither got a device nor was queued on the exporter within 20s: %q", i, c.snapshot().lines)
	}
	exitedCh := make(chan struct{})
	go func() { exited.Wait(); close(exitedCh) }()
	select {
	case <-exitedCh:
	case <-ctx.Done():
		t.Fatalf("the clients did not finish within the test's deadline")
	}
	t.Logf("%d clients served in %s after they were told to go (%s with their start)", loadClients,
		time.Since(started).Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))

	got := make([]loadReport, loadClients)
	for i, c := range children {
		got[i] = c.snapshot()
		s := got[i]
		assert.NoError(t, waitErrs[i], "client %d: %q", i, s.lines)
		assert.Empty(t, s.errs, "client %d", i)
		// (b) every client got a device, and let it go.
		if !assert.False(t, s.got.IsZero(), "client %d got no device: %q", i, s.lines) ||
			!assert.False(t, s.drop.IsZero(), "client %d did not let its device go: %q", i, s.lines) {
			continue
		}
		assert.True(t, s.done, "client %d did not finish: %q", i, s.lines)
		// (d) every grant found the device powered off.
		assert.Equal(t, dutv1.PowerState_POWER_STATE_OFF.String(), s.state, "client %d found %s powered", i, s.device)
		assert.True(t, s.drop.After(s.got), "client %d dropped %s before it got it", i, s.device)
		t.Logf("client %d: %s after %s (queued on the exporter: %v), held %s", i, s.device,
			s.got.Sub(s.waiting).Round(time.Millisecond), s.queued, s.drop.Sub(s.got).Round(time.Millisecond))
	}
	if t.Failed() {
		return
	}
	byDevice := map[string][]int{}
	queued := 0
	for i, s := range got {
		byDevice[s.device] = append(byDevice[s.device], i)
		if s.queued {
			queued++
		}
	}
	for dev, idx := range byDevice {
		slices.SortFunc(idx, func(a, b int) int { return got[a].got.Compare(got[b].got) })
		for k := 1; k < len(idx); k++ {
			prev, next := got[idx[k-1]], got[idx[k]]
			// (a) one holder at a time.
			assert.True(t, prev.drop.Before(next.got), "%s had two holders: client %d held it %s..%s and client %d got it at %s",
				dev, idx[k-1], prev.got.Format(time.StampMicro), prev.drop.Format(time.StampMicro), idx[k], next.got.Format(time.StampMicro))
		}
		// (c) served in arrival order: the clients are numbered by arrival.
		assert.True(t, slices.IsSorted(idx), "%s served its clients in the order %v, not in their arrival order", dev, idx)
		t.Logf("%s served clients %v", dev, idx)
	}
	if len(byDevice) < 2 {
		t.Logf("only %d of the 2 devices served the clients: see the skipped TestClientsSelectingByTagShareTheExportersDevices", len(byDevice))
	}
	assert.GreaterOrEqual(t, queued, loadClients/2, "too few clients waited for the test to say anything of the queue")
	for _, name := range []string{"sim-0", "sim-1"} {
		if d := l.sims.device(name); d != nil {
			assert.Equal(t, sim.PowerStateOff, d.PowerState(), "%s was left powered", name)
		}
	}
}

// TestLoadClientChild is a client process of
// TestEightClientProcessesContendForTwoDevices: it waits for "GO" on its
// stdin, leases a device by tag through the remote driver (with a lease
// directory of its own), reports the power state it found, switches the
// power for about REMOTE_LOAD_HOLD and lets the device go.
func TestLoadClientChild(t *testing.T) {
	url := os.Getenv(envLoadExporter)
	if url == "" {
		t.Skip("a client process of TestEightClientProcessesContendForTwoDevices")
	}
	say := func(format string, args ...any) { fmt.Fprintf(os.Stdout, format+"\n", args...) }
	fail := func(what string, err error) {
		say("ERROR %s: %v", what, err)
		t.Fatalf("%s: %v", what, err)
	}
	name := os.Getenv(envLoadName)
	hold, err := time.ParseDuration(os.Getenv(envLoadHold))
	if err != nil {
		fail("hold", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var once sync.Once
	drv := remote.New(remote.Options{Exporters: []string{url}, WaitReport: func(dev string, _ *dutv1.Waiting) {
		once.Do(func() { say("QUEUED %s", dev) })
	}})
	if _, err := drv.Discover(ctx); err != nil { // connect before the race starts
		fail("discover", err)
	}
	say("READY")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fail("wait for GO", err)
	}
	say("WAITING %d", time.Now().UnixNano())
	ls, err := lease.Acquire(ctx, lease.Request{Drivers: []driver.Driver{drv}, Tags: []string{"sim"}, Dir: t.TempDir()}, lease.Holder{Test: name})
	if err != nil {
		fail("lease", err)
	}
	defer ls.Release()
	dev, err := ls.Open(ctx)
	if err != nil {
		fail("open", err)
	}
	gotAt := time.Now()
	rd := dev.(*remote.Device)
	say("GOT %s %d", rd.Name(), gotAt.UnixNano())
	s, err := rd.PowerState(ctx)
	if err != nil {
		fail("power state", err)
	}
	say("STATE %s %s", rd.Name(), s)
	if err := rd.PowerOn(ctx); err != nil {
		fail("power on", err)
	}
	if s, err := rd.PowerState(ctx); err != nil || s != dutv1.PowerState_POWER_STATE_ON {
		fail("power state after PowerOn", fmt.Errorf("%s, %v", s, err))
	}
	if err := rd.PowerOff(ctx); err != nil {
		fail("power off", err)
	}
	time.Sleep(time.Until(gotAt.Add(hold))) // the workload: hold the device
	say("DROP %s %d", rd.Name(), time.Now().UnixNano())
	if err := rd.Close(); err != nil {
		fail("close", err)
	}
	say("DONE")
}

// leaseByTag leases a device tagged "sim" through a remote driver of its
// own, with a lease directory of its own (a client on another host), and
// opens it, waiting at most within; the device is closed and its lease
// released when the test ends.
func (l *lab) leaseByTag(t *testing.T, who string, within time.Duration) (*remote.Device, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	drv := remote.New(remote.Options{Exporters: []string{l.url}})
	ls, err := lease.Acquire(ctx, lease.Request{Drivers: []driver.Driver{drv}, Tags: []string{"sim"}, Dir: t.TempDir()}, lease.Holder{Test: who})
	if err != nil {
		return nil, err
	}
	dev, err := ls.Open(ctx)
	if err != nil {
		_ = ls.Release()
		return nil, err
	}
	t.Cleanup(func() { _ = dev.(driver.Closer).Close(); _ = ls.Release() })
	return dev.(*remote.Device), nil
}

// TestClientsSelectingByTagShareTheExportersDevices: two remote clients
// on other hosts (each with its own lease directory) that both ask for
// "a device tagged sim" must not queue for one device while the exporter
// has another free, and a waiter must take whichever device frees first.
func TestClientsSelectingByTagShareTheExportersDevices(t *testing.T) {
	t.Parallel()
	t.Run("a free device is taken at once", func(t *testing.T) {
		l := newLab(t, 2)
		a, err := l.leaseByTag(t, "client-a", 10*time.Second)
		require.NoError(t, err)
		start := time.Now()
		b, err := l.leaseByTag(t, "client-b", 3*time.Second)
		require.NoError(t, err, "the second client waited for %s while the other device was free", a.Name())
		assert.NotEqual(t, a.Name(), b.Name())
		t.Logf("the second client had %s in %s", b.Name(), time.Since(start).Round(time.Millisecond))
	})
	t.Run("a waiter takes the device that frees first", func(t *testing.T) {
		l := newLab(t, 2)
		a, err := l.leaseByTag(t, "client-a", 10*time.Second)
		require.NoError(t, err)
		b, err := l.leaseByTag(t, "client-b", 10*time.Second)
		require.NoError(t, err)
		require.NotEqual(t, a.Name(), b.Name())
		type result struct {
			dev *remote.Device
			err error
		}
		got := make(chan result, 1)
		var waiter sync.WaitGroup
		defer waiter.Wait() // no t.Cleanup from the waiter after the test ends
		waiter.Go(func() {
			d, err := l.leaseByTag(t, "client-c", 10*time.Second)
			got <- result{d, err}
		})
		require.True(t, until(time.Now().Add(10*time.Second), func() bool { return queuedOnExporter(l.lockDir, "client-c") }),
			"client-c was not queued on the exporter")
		freed := b.Name()
		require.NoError(t, b.Close())
		r := <-got
		require.NoError(t, r.err, "client-c did not get %s, freed while it waited", freed)
		assert.Equal(t, freed, r.dev.Name())
	})
}
