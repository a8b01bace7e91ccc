//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package lock

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// deadline bounds every wait for an event in these tests.
const deadline = 10 * time.Second

func acquireWithin(t *testing.T, d time.Duration, dir string, keys []string, who Holder) (*Lease, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return Acquire(ctx, dir, keys, who)
}

// tickets lists the queue tickets in dir.
func tickets(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, queueDirName, "*"+ticketSuffix))
	require.NoError(t, err)
	return m
}

// waitTickets waits until dir's queue holds n tickets.
func waitTickets(t *testing.T, dir string, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return len(tickets(t, dir)) == n },
		deadline, time.Millisecond, "waiting for %d queue tickets", n)
}

func TestAcquireRelease(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "locks", "dut")
	before := time.Now()
	l, err := acquireWithin(t, deadline, dir, []string{"sim/sim-0"}, Holder{Test: t.Name()})
	require.NoError(t, err)
	t.Cleanup(func() { l.Release() })

	assert.Equal(t, "sim/sim-0", l.Key())
	assert.Equal(t, filepath.Join(dir, "sim_sim-0.lock"), l.Path())
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.ModeDir|os.ModeSticky|0o777, fi.Mode(), "lock dir mode")
	fi, err = os.Stat(l.Path())
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o666), fi.Mode(), "lock file mode")

	h := l.Holder()
	host, _ := os.Hostname()
	assert.Equal(t, t.Name(), h.Test)
	assert.Equal(t, os.Getpid(), h.PID)
	assert.Equal(t, host, h.Host)
	assert.Equal(t, strings.Join(os.Args, " "), h.Command)
	assert.False(t, h.Since.Before(before.Truncate(time.Second)), "since %v, before %v", h.Since, before)

	// The file holds the record as JSON with lower-case names.
	data, err := os.ReadFile(l.Path())
	require.NoError(t, err)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(data, &raw))
	assert.Equal(t, t.Name(), raw["test"])
	assert.EqualValues(t, os.Getpid(), raw["pid"])
	assert.Contains(t, raw, "host")
	assert.Contains(t, raw, "since")
	assert.Contains(t, raw, "command")

	got, held, err := ReadHolder(dir, "sim/sim-0")
	require.NoError(t, err)
	assert.True(t, held)
	assert.Equal(t, h.Test, got.Test)
	assert.Equal(t, h.PID, got.PID)
	assert.True(t, h.Since.Equal(got.Since), "since %v read back as %v", h.Since, got.Since)

	require.NoError(t, l.Release())
	data, err = os.ReadFile(l.Path())
	require.NoError(t, err)
	assert.Empty(t, data, "released lease file is truncated")
	_, held, err = ReadHolder(dir, "sim/sim-0")
	require.NoError(t, err)
	assert.False(t, held)
	assert.NoError(t, l.Release(), "second Release")

	// Free again: acquired at once.
	l2, err := acquireWithin(t, deadline, dir, []string{"sim/sim-0"}, Holder{Test: t.Name()})
	require.NoError(t, err)
	require.NoError(t, l2.Release())
	assert.Empty(t, tickets(t, dir), "an uncontended Acquire needs no ticket")
}

func TestHolderDefaultsKept(t *testing.T) {
	dir := t.TempDir()
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	who := Holder{Test: "T", PID: 42, Host: "lab9", Since: since, Command: "cmd"}
	l, err := acquireWithin(t, deadline, dir, []string{"k"}, who)
	require.NoError(t, err)
	defer l.Release()
	assert.Equal(t, who, l.Holder())
	got, held, err := ReadHolder(dir, "k")
	require.NoError(t, err)
	assert.True(t, held)
	assert.Equal(t, who, got)
}

func TestReadHolderIgnoresStaleContent(t *testing.T) {
	dir := t.TempDir()
	_, held, err := ReadHolder(dir, "nope")
	require.NoError(t, err)
	assert.False(t, held, "no lock file: not held")

	// A holder that died left its record behind; nobody holds the lock.
	stale, err := json.Marshal(Holder{Test: "TestDead", PID: 1})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "k.lock"), stale, 0o666))
	h, held, err := ReadHolder(dir, "k")
	require.NoError(t, err)
	assert.False(t, held)
	assert.Zero(t, h)

	l, err := acquireWithin(t, deadline, dir, []string{"k"}, Holder{Test: "TestAlive"})
	require.NoError(t, err)
	defer l.Release()
	h, held, err = ReadHolder(dir, "k")
	require.NoError(t, err)
	assert.True(t, held)
	assert.Equal(t, "TestAlive", h.Test)
}

func TestSameKeyMutualExclusion(t *testing.T) {
	dir := t.TempDir()
	const workers, rounds = 6, 25
	var inside, overlaps, total atomic.Int32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range rounds {
				l, err := acquireWithin(t, deadline, dir, []string{"sim-0"}, Holder{Test: t.Name(), PID: w + 1})
				if !assert.NoError(t, err) {
					return
				}
				if inside.Add(1) != 1 {
					overlaps.Add(1)
				}
				total.Add(1)
				for range 3 {
					runtime.Gosched()
				}
				inside.Add(-1)
				assert.NoError(t, l.Release())
			}
		})
	}
	wg.Wait()
	assert.Zero(t, overlaps.Load(), "leases of one key overlapped")
	assert.EqualValues(t, workers*rounds, total.Load())
	assert.Empty(t, tickets(t, dir), "tickets left behind")
}

func TestSameProcessExcludes(t *testing.T) {
	dir := t.TempDir()
	l, err := acquireWithin(t, deadline, dir, []string{"sim-0"}, Holder{Test: "first"})
	require.NoError(t, err)
	_, err = acquireWithin(t, 50*time.Millisecond, dir, []string{"sim-0"}, Holder{Test: "second"})
	var te *TimeoutError
	require.ErrorAs(t, err, &te, "a second lease on a held key in the same process")
	require.Len(t, te.Holders, 1)
	assert.Equal(t, "first", te.Holders[0].Test)
	require.NoError(t, l.Release())
}

func TestMultiKey(t *testing.T) {
	dir := t.TempDir()
	a, err := acquireWithin(t, deadline, dir, []string{"sim-a"}, Holder{Test: "TestA"})
	require.NoError(t, err)
	defer a.Release()

	start := time.Now()
	b, err := acquireWithin(t, deadline, dir, []string{"sim-a", "sim-b"}, Holder{Test: "TestB"})
	require.NoError(t, err)
	defer b.Release()
	assert.Equal(t, "sim-b", b.Key())
	assert.Less(t, time.Since(start), time.Second, "a free candidate is taken at once")

	// The first free candidate in the given order wins.
	c, err := acquireWithin(t, deadline, dir, []string{"sim-a", "sim-b", "sim-c", "sim-d"}, Holder{})
	require.NoError(t, err)
	defer c.Release()
	assert.Equal(t, "sim-c", c.Key())

	// Both held: a timeout naming both holders.
	_, err = acquireWithin(t, 50*time.Millisecond, dir, []string{"sim-a", "sim-b"}, Holder{})
	var te *TimeoutError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, []string{"sim-a", "sim-b"}, te.Keys)
	require.Len(t, te.Holders, 2)
	assert.Equal(t, "TestA", te.Holders[0].Test)
	assert.Equal(t, "TestB", te.Holders[1].Test)
	assert.Contains(t, err.Error(), "sim-a held by TestA (pid ")
	assert.Contains(t, err.Error(), "sim-b held by TestB (pid ")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestFairness(t *testing.T) {
	dir := t.TempDir()
	h, err := acquireWithin(t, deadline, dir, []string{"sim-0"}, Holder{Test: "H"})
	require.NoError(t, err)

	// W1..W5 queue up one after the other; each starts only once the
	// previous one's ticket exists.
	const waiters = 5
	var (
		mu    sync.Mutex
		order []int
		wg    sync.WaitGroup
	)
	for i := 1; i <= waiters; i++ {
		wg.Go(func() {
			l, err := acquireWithin(t, deadline, dir, []string{"sim-0"}, Holder{Test: "W", PID: i})
			if !assert.NoError(t, err) {
				return
			}
			mu.Lock()
			order = append(order, i) // under the lease: records the lease order
			mu.Unlock()
			assert.NoError(t, l.Release())
		})
		waitTickets(t, dir, i)
	}
	require.NoError(t, h.Release())
	wg.Wait()
	assert.Equal(t, []int{1, 2, 3, 4, 5}, order, "leases granted out of arrival order")
	assert.Empty(t, tickets(t, dir))
}

func TestFairnessPerKey(t *testing.T) {
	dir := t.TempDir()
	a, err := acquireWithin(t, deadline, dir, []string{"a"}, Holder{Test: "HA"})
	require.NoError(t, err)
	defer a.Release()

	// An older waiter queued for a does not hold back a newer one that can
	// take b.
	done := make(chan error, 1)
	go func() {
		l, err := acquireWithin(t, deadline, dir, []string{"a"}, Holder{Test: "W1"})
		if err == nil {
			err = l.Release()
		}
		done <- err
	}()
	waitTickets(t, dir, 1)
	b, err := acquireWithin(t, deadline, dir, []string{"b", "a"}, Holder{Test: "W2"})
	require.NoError(t, err)
	assert.Equal(t, "b", b.Key())
	require.NoError(t, b.Release())

	// A newer waiter may not take a freed key an older waiter wants, even
	// when it would otherwise win the race: with W1 queued, "a" goes to W1.
	require.NoError(t, a.Release())
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(deadline):
		t.Fatal("W1 did not get the released key")
	}
}

func TestCancelRemovesTicket(t *testing.T) {
	dir := t.TempDir()
	h, err := acquireWithin(t, deadline, dir, []string{"sim-0"}, Holder{Test: "TestHolder"})
	require.NoError(t, err)
	defer h.Release()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Acquire(ctx, dir, []string{"sim-0"}, Holder{Test: "TestWaiter"})
		done <- err
	}()
	waitTickets(t, dir, 1)
	cancelled := time.Now()
	cancel()
	var err2 error
	select {
	case err2 = <-done:
	case <-time.After(deadline):
		t.Fatal("Acquire did not return after its context was cancelled")
	}
	t.Logf("returned %v after cancel", time.Since(cancelled))
	assert.Less(t, time.Since(cancelled), 500*time.Millisecond, "prompt return after cancel")
	var te *TimeoutError
	require.ErrorAs(t, err2, &te)
	assert.ErrorIs(t, err2, context.Canceled)
	assert.ErrorIs(t, err2, ErrTimeout)
	assert.Positive(t, te.Waited)
	require.Len(t, te.Holders, 1)
	assert.Equal(t, "TestHolder", te.Holders[0].Test)
	assert.Contains(t, err2.Error(), "held by TestHolder (pid ")
	assert.Empty(t, tickets(t, dir), "the cancelled waiter left its ticket")
	entries, err := os.ReadDir(filepath.Join(dir, queueDirName))
	require.NoError(t, err)
	assert.Empty(t, entries, "queue directory not empty")
}

func TestExpiredContextStillTriesOnce(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l, err := Acquire(ctx, dir, []string{"k"}, Holder{})
	require.NoError(t, err)
	defer l.Release()
	_, err = Acquire(ctx, dir, []string{"k"}, Holder{})
	assert.True(t, errors.Is(err, ErrTimeout) && errors.Is(err, context.Canceled), "got %v", err)
	assert.Empty(t, tickets(t, dir))
}

func TestRemovedLockFileIsRecreated(t *testing.T) {
	dir := t.TempDir()
	l, err := acquireWithin(t, deadline, dir, []string{"k"}, Holder{Test: "old"})
	require.NoError(t, err)
	defer l.Release()
	// Someone deletes the lock file although they must not: the next
	// Acquire locks a fresh file rather than fighting over the old inode.
	require.NoError(t, os.Remove(l.Path()))
	l2, err := acquireWithin(t, deadline, dir, []string{"k"}, Holder{Test: "new"})
	require.NoError(t, err)
	defer l2.Release()
	h, held, err := ReadHolder(dir, "k")
	require.NoError(t, err)
	assert.True(t, held)
	assert.Equal(t, "new", h.Test)
}

func TestPollWaiter(t *testing.T) {
	// The first wait returns by itself after minPoll.
	p := newPollWaiter()
	start := time.Now()
	p.wait(context.Background())
	assert.GreaterOrEqual(t, time.Since(start), minPoll)

	// A done context ends a wait at once, however long; the backoff still
	// advances.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got := []time.Duration{minPoll}
	for range 6 {
		got = append(got, p.next)
		p.wait(ctx)
	}
	ms := time.Millisecond
	assert.Equal(t, []time.Duration{10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 250 * ms, 250 * ms}, got)
}
