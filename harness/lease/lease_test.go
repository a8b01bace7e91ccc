package lease_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
)

// bench is a driver value of the test's own: boards named by the test,
// opened as plain devices.
type bench struct {
	name   string
	boards []driver.Info
	opened chan string
}

func newBench(name string, boards ...string) *bench {
	b := &bench{name: name, opened: make(chan string, 16)}
	for i, n := range boards {
		b.boards = append(b.boards, driver.Info{Driver: name, Name: n, Serial: fmt.Sprintf("S%d", i), Tags: []string{"lab", n}})
	}
	return b
}

func (b *bench) Name() string { return b.name }
func (b *bench) Discover(ctx context.Context) ([]driver.Info, error) {
	return b.boards, ctx.Err()
}
func (b *bench) Open(_ context.Context, info driver.Info) (driver.Device, error) {
	b.opened <- info.Name
	return board{info}, nil
}

type board struct{ info driver.Info }

func (d board) Name() string   { return d.info.Name }
func (d board) Serial() string { return d.info.Serial }
func (d board) Tags() []string { return d.info.Tags }
func (d board) Driver() string { return d.info.Driver }

func request(t *testing.T, b *bench, name string) lease.Request {
	return lease.Request{Drivers: []driver.Driver{b}, Name: name, Dir: t.TempDir()}
}

func TestAcquireOpensOnlyTheLeasedDevice(t *testing.T) {
	t.Parallel()
	b := newBench("bench", "client", "server")
	r := request(t, b, "server")
	l, err := lease.Acquire(t.Context(), r, lease.Holder{Test: t.Name()})
	require.NoError(t, err)
	defer l.Release()
	assert.Equal(t, "bench/server", l.Info().Key())
	assert.Empty(t, b.opened, "discovery opens nothing")
	dev, err := l.Open(t.Context())
	require.NoError(t, err)
	assert.Equal(t, "server", dev.Name())
	assert.Equal(t, "server", <-b.opened)

	h, held, err := lease.HolderOf(r.Dir, l.Info())
	require.NoError(t, err)
	assert.True(t, held)
	assert.Equal(t, t.Name(), h.Test)
	require.NoError(t, l.Release())
	_, held, err = lease.HolderOf(r.Dir, l.Info())
	require.NoError(t, err)
	assert.False(t, held)
	require.NoError(t, l.Release(), "a second release does nothing")
}

func TestTryAcquireReturnsABusyErrorNamingTheHolder(t *testing.T) {
	t.Parallel()
	b := newBench("bench", "only")
	r := request(t, b, "only")
	l, err := lease.Acquire(t.Context(), r, lease.Holder{Test: "TestNightly", PID: 4242, Host: "lab7"})
	require.NoError(t, err)
	defer l.Release()

	start := time.Now()
	_, err = lease.TryAcquire(t.Context(), r, lease.Holder{Test: t.Name()})
	assert.Less(t, time.Since(start), 5*time.Second, "TryAcquire does not wait")
	var busy *lease.BusyError
	require.ErrorAs(t, err, &busy)
	assert.ErrorIs(t, err, driver.ErrBusy)
	assert.NoError(t, busy.Err, "no wait, no context error")
	require.Len(t, busy.Devices, 1)
	assert.Equal(t, "only", busy.Devices[0].Name)
	assert.Equal(t, "TestNightly", busy.Holders[0].Test)
	assert.Contains(t, err.Error(), "held by TestNightly (pid 4242 on host lab7)")

	r.Timeout = 50 * time.Millisecond
	_, err = lease.Acquire(t.Context(), r, lease.Holder{Test: t.Name()})
	require.ErrorAs(t, err, &busy)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "a wait that timed out")
	assert.GreaterOrEqual(t, busy.Waited, 50*time.Millisecond)
}

func TestSelectionErrorsTellTheUsersMistakeFromAnEmptyLab(t *testing.T) {
	t.Parallel()
	b := newBench("bench", "client")
	_, err := lease.Acquire(t.Context(), request(t, b, "nosuch"), lease.Holder{})
	require.ErrorIs(t, err, driver.ErrNoDevice)
	assert.NotErrorIs(t, err, lease.ErrNothingFound, "devices were found: the name is wrong")
	assert.Contains(t, err.Error(), "found client (serial S0) [lab,client]")

	_, err = lease.Acquire(t.Context(), request(t, newBench("empty"), ""), lease.Holder{})
	require.ErrorIs(t, err, driver.ErrNoDevice)
	assert.ErrorIs(t, err, lease.ErrNothingFound)

	r := request(t, b, "")
	r.Driver = "nosuch"
	_, err = lease.Acquire(t.Context(), r, lease.Holder{})
	assert.ErrorIs(t, err, lease.ErrBadRequest)
}

// A driver that fails does not hide the others, unless it is the one asked
// for.
func TestAFailingDriverDoesNotHideTheOthers(t *testing.T) {
	t.Parallel()
	good := newBench("good", "a")
	r := lease.Request{Drivers: []driver.Driver{failing{}, good}, Dir: t.TempDir()}
	f, err := lease.Discover(t.Context(), r)
	require.NoError(t, err)
	require.Len(t, f.Devices, 1)
	require.Len(t, f.Failed, 1)
	assert.Equal(t, "failing", f.Failed[0].Driver)

	r.Driver = "failing"
	_, err = lease.Acquire(t.Context(), r, lease.Holder{})
	var de *lease.DiscoverError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, "failing", de.Driver)
}

type failing struct{}

func (failing) Name() string { return "failing" }
func (failing) Discover(context.Context) ([]driver.Info, error) {
	return nil, errors.New("no emulator here")
}
func (failing) Open(context.Context, driver.Info) (driver.Device, error) {
	return nil, errors.New("cannot open")
}

// Two users that want the same two boards, in opposite orders, both get
// them in turn: neither holds one while it waits for the other.
func TestAcquireAllInOppositeOrdersDoesNotDeadlock(t *testing.T) {
	t.Parallel()
	b := newBench("bench", "client", "server")
	dir := t.TempDir()
	req := func(name string) lease.Request {
		return lease.Request{Drivers: []driver.Driver{b}, Name: name, Dir: dir, Timeout: 20 * time.Second}
	}
	orders := [][]string{{"client", "server"}, {"server", "client"}}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			order := orders[i%2]
			ls, err := lease.AcquireAll(t.Context(), []lease.Request{req(order[0]), req(order[1])}, lease.Holder{Test: fmt.Sprintf("user-%d", i)})
			if err != nil {
				errs[i] = err
				return
			}
			if ls[0].Info().Name != order[0] || ls[1].Info().Name != order[1] {
				errs[i] = fmt.Errorf("got %s and %s, want %v", ls[0].Info().Name, ls[1].Info().Name, order)
			}
			time.Sleep(5 * time.Millisecond) // use the boards a moment
			for _, l := range ls {
				if err := l.Release(); err != nil {
					errs[i] = err
				}
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		assert.NoError(t, err, "user %d", i)
	}
}

// AcquireAll never gives one board to two requests, and holds nothing when
// it cannot serve every request.
func TestAcquireAllIsAllOrNothing(t *testing.T) {
	t.Parallel()
	b := newBench("bench", "a", "b")
	dir := t.TempDir()
	anyLab := lease.Request{Drivers: []driver.Driver{b}, Tags: []string{"lab"}, Dir: dir}
	ls, err := lease.AcquireAll(t.Context(), []lease.Request{anyLab, anyLab}, lease.Holder{Test: "two"})
	require.NoError(t, err)
	assert.NotEqual(t, ls[0].Info().Name, ls[1].Info().Name, "two requests, two boards")
	for _, l := range ls {
		require.NoError(t, l.Release())
	}

	held, err := lease.Acquire(t.Context(), lease.Request{Drivers: []driver.Driver{b}, Name: "b", Dir: dir}, lease.Holder{Test: "holder"})
	require.NoError(t, err)
	defer held.Release()
	anyLab.Timeout = 100 * time.Millisecond
	_, err = lease.AcquireAll(t.Context(), []lease.Request{anyLab, anyLab}, lease.Holder{Test: "two"})
	var busy *lease.BusyError
	require.ErrorAs(t, err, &busy)
	_, isHeld, err := lease.HolderOf(dir, driver.Info{Driver: "bench", Name: "a"})
	require.NoError(t, err)
	assert.False(t, isHeld, "the free board was given back")
}

func ExampleAcquire() {
	// A driver value built in code (here a test's own; sim.New, qemu.New
	// or dutlink.New in practice): no registry, no environment.
	lab := newBench("bench", "client", "server")
	dir, _ := os.MkdirTemp("", "lease-example-")
	defer os.RemoveAll(dir)
	l, err := lease.Acquire(context.Background(), lease.Request{
		Drivers: []driver.Driver{lab},
		Tags:    []string{"server"},
		Dir:     dir,
		Timeout: time.Minute, // wait at most this long for a busy board
	}, lease.Holder{Test: "ExampleAcquire"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Release()
	dev, err := l.Open(context.Background()) // opened only once the lease is held
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("leased", dev.Name())
	// Output: leased server
}

// ctxBench is a bench whose Open records the candidates it was given.
type ctxBench struct {
	*bench
	got chan []driver.Info
}

func (b ctxBench) Open(ctx context.Context, info driver.Info) (driver.Device, error) {
	b.got <- lease.CandidatesFrom(ctx)
	return b.bench.Open(ctx, info)
}

// A driver's Open learns the devices the selection matched, the leased
// one first (so one whose devices are arbitrated elsewhere may take any);
// a selection of one device, and AcquireAll, give none.
func TestOpenIsToldTheCandidates(t *testing.T) {
	t.Parallel()
	b := ctxBench{newBench("bench", "a", "b", "c"), make(chan []driver.Info, 4)}
	dir := t.TempDir()
	keys := func(infos []driver.Info) (out []string) {
		for _, i := range infos {
			out = append(out, i.Key())
		}
		return out
	}
	held, err := lease.Acquire(t.Context(), lease.Request{Drivers: []driver.Driver{b}, Name: "a", Dir: dir}, lease.Holder{Test: t.Name()})
	require.NoError(t, err)
	defer held.Release()
	l, err := lease.Acquire(t.Context(), lease.Request{Drivers: []driver.Driver{b}, Tags: []string{"lab"}, Dir: dir}, lease.Holder{Test: t.Name()})
	require.NoError(t, err)
	defer l.Release()
	_, err = l.Open(t.Context())
	require.NoError(t, err)
	assert.Equal(t, []string{"bench/b", "bench/a", "bench/c"}, keys(<-b.got), "the leased device first, then the other candidates")
	_, err = held.Open(t.Context())
	require.NoError(t, err)
	assert.Empty(t, <-b.got, "a selection of one device has no other candidates")

	ls, err := lease.AcquireAll(t.Context(), []lease.Request{{Drivers: []driver.Driver{b}, Tags: []string{"lab"}, Dir: t.TempDir()}}, lease.Holder{Test: t.Name()})
	require.NoError(t, err)
	defer ls[0].Release()
	_, err = ls[0].Open(t.Context())
	require.NoError(t, err)
	assert.Empty(t, <-b.got, "AcquireAll's leases give no candidates (another request may want them)")
}
