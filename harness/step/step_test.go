package step_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/step"
)

// clock is a fake time that moves on by 10ms at each reading.
func clock() func() time.Time {
	var mu sync.Mutex
	t := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(10 * time.Millisecond)
		return t
	}
}

func TestWithoutATracerStepsDoNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cctx, st := step.Start(ctx, "power on", "device", "x")
	assert.Nil(t, st)
	assert.Equal(t, ctx, cctx, "the context is handed back as it is")
	st.Set("k", "v")
	boom := errors.New("boom")
	assert.Equal(t, boom, st.End(boom), "End still returns the error")
	assert.Equal(t, step.Record{}, st.Record())
	ran := false
	require.NoError(t, step.Do(ctx, "x", func(context.Context) error { ran = true; return nil }))
	assert.True(t, ran)
	assert.Nil(t, step.TracerFrom(ctx))
	assert.Nil(t, step.Current(ctx))
}

func TestStepsNestThroughTheContext(t *testing.T) {
	t.Parallel()
	var rec step.Recorder
	tr := step.New(&rec)
	ctx := step.WithDevice(step.WithTracer(context.Background(), tr), "sim-0")

	fctx, flash := step.Start(ctx, "flash", "image", "/tmp/a.img")
	assert.Same(t, flash, step.Current(fctx))
	require.NoError(t, step.Do(fctx, "storage host", func(ctx context.Context) error {
		_, inner := step.Start(ctx, "board op")
		inner.End(nil)
		return nil
	}))
	other := step.WithDevice(fctx, "usb-hub")
	step.Do(other, "port reset", func(context.Context) error { return nil })
	flash.Set("bytes", 1048576)
	flash.End(nil)

	fin := rec.Finished()
	require.Len(t, fin, 4)
	byName := map[string]step.Record{}
	for _, r := range fin {
		byName[r.Name] = r
	}
	f, sh, op, pr := byName["flash"], byName["storage host"], byName["board op"], byName["port reset"]
	assert.Zero(t, f.Parent)
	assert.Equal(t, 0, f.Depth)
	assert.Equal(t, f.ID, sh.Parent)
	assert.Equal(t, 1, sh.Depth)
	assert.Equal(t, sh.ID, op.Parent)
	assert.Equal(t, 2, op.Depth)
	assert.Equal(t, f.ID, pr.Parent)
	assert.Equal(t, "sim-0", op.Device, "the device is inherited")
	assert.Equal(t, "usb-hub", pr.Device)
	assert.Equal(t, []step.Arg{{Key: "image", Value: "/tmp/a.img"}}, f.Args)
	assert.Equal(t, "1048576", f.Arg("bytes"))
	assert.Equal(t, step.OK, f.Outcome)
	assert.Equal(t, "board op", fin[0].Name, "records come in the order steps end")

	// A tracer put into a traced context starts a new tree.
	_, top := step.Start(step.WithTracer(fctx, tr), "top")
	assert.Zero(t, top.Record().Parent)
	assert.Equal(t, "sim-0", top.Record().Device, "the device survives a new tracer")
}

func TestEndRecordsTheOutcomeOnce(t *testing.T) {
	t.Parallel()
	var rec step.Recorder
	tr := step.New(&rec)
	tr.Now = clock()
	ctx := step.WithTracer(context.Background(), tr)
	_, st := step.Start(ctx, "power off")
	gone := fmt.Errorf("board: %w", driver.ErrGone)
	assert.Equal(t, gone, st.End(gone))
	st.End(nil)
	st.Set("late", "ignored")
	fin := rec.Finished()
	require.Len(t, fin, 1, "only the first End counts")
	r := fin[0]
	assert.Equal(t, step.Error, r.Outcome)
	assert.Equal(t, "board: device gone", r.Error)
	assert.Equal(t, "gone", r.Code, "the shared sentinel's code")
	assert.Equal(t, 10*time.Millisecond, r.Duration)
	assert.Equal(t, r.End.Sub(r.Start), r.Duration)
	assert.Empty(t, r.Result)
	assert.False(t, r.Running())
}

func TestArgsTakePairsAndArgValues(t *testing.T) {
	t.Parallel()
	var rec step.Recorder
	ctx := step.WithTracer(context.Background(), step.New(&rec))
	_, st := step.Start(ctx, "x", "n", 3, step.Arg{Key: "raw", Value: "v"}, "timeout", 2*time.Second, "err", errors.New("e"), 42, "odd")
	st.End(nil)
	assert.Equal(t, []step.Arg{
		{Key: "n", Value: "3"}, {Key: "raw", Value: "v"}, {Key: "timeout", Value: "2s"},
		{Key: "err", Value: "e"}, {Key: "arg", Value: "42"}, {Key: "arg", Value: "odd"},
	}, st.Record().Args)
}

func TestRunningListsTheStepsNotEnded(t *testing.T) {
	t.Parallel()
	var rec step.Recorder
	ctx := step.WithTracer(context.Background(), step.New(&rec))
	actx, acquire := step.Start(ctx, "acquire")
	acquire.End(nil)
	pctx, power := step.Start(actx, "power on")
	_, hang := step.Start(pctx, "wait for the board")
	running := rec.Running()
	require.Len(t, running, 2)
	assert.Equal(t, "power on", running[0].Name)
	assert.Equal(t, "wait for the board", running[1].Name, "the innermost comes last")
	assert.True(t, running[1].Running())
	hang.End(context.DeadlineExceeded)
	power.End(nil)
	assert.Empty(t, rec.Running())
}

func TestRecorderWaitSeesPastAndFutureEvents(t *testing.T) {
	t.Parallel()
	var rec step.Recorder
	ctx := step.WithTracer(context.Background(), step.New(&rec))
	step.Do(ctx, "before", func(context.Context) error { return nil })
	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := rec.WaitStarted(wctx, "before")
	require.NoError(t, err)
	assert.Equal(t, "before", r.Name)

	release := make(chan struct{})
	go func() {
		<-release
		step.Do(ctx, "later", func(context.Context) error { return nil })
	}()
	close(release)
	r, err = rec.WaitStarted(wctx, "later")
	require.NoError(t, err)
	assert.Equal(t, "later", r.Name)

	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	_, err = rec.WaitStarted(short, "never")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), `"never"`)
}

func TestConcurrentStepsKeepTheirOwnTrees(t *testing.T) {
	t.Parallel()
	var rec step.Recorder
	var buf syncBuffer
	var lines syncLines
	tr := step.New(&rec, step.NewJSONL(&buf), step.LogSink(lines.logf))
	ctx := step.WithTracer(context.Background(), tr)
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			wctx, top := step.Start(step.WithDevice(ctx, fmt.Sprintf("dev-%d", w)), "worker")
			for i := range each {
				step.Do(wctx, "op", func(ctx context.Context) error {
					step.Current(ctx).Set("i", i)
					return nil
				})
			}
			top.End(nil)
		})
	}
	wg.Wait()
	events, err := step.ReadJSONL(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	require.Len(t, events, 2*workers*(each+1), "every start and end, one line each")
	assert.Len(t, lines.get(), 2*workers*(each+1))
	tops := map[uint64]string{}
	for _, r := range rec.Finished() {
		if r.Name == "worker" {
			tops[r.ID] = r.Device
		}
	}
	require.Len(t, tops, workers)
	for _, r := range rec.Finished() {
		if r.Name == "op" {
			require.Contains(t, tops, r.Parent)
			assert.Equal(t, tops[r.Parent], r.Device, "a step's parent is its own worker's")
		}
	}
	assert.Empty(t, rec.Running())
}

func TestLogSinkWritesStartAndEndLinesIndentedByDepth(t *testing.T) {
	t.Parallel()
	var lines syncLines
	tr := step.New(step.LogSink(lines.logf))
	tr.Now = clock()
	ctx := step.WithDevice(step.WithTracer(context.Background(), tr), "sim-0")
	fctx, flash := step.Start(ctx, "flash", "image", "/tmp/my image.img")
	step.Do(fctx, "storage host", func(context.Context) error { return nil })
	step.Do(fctx, "write", func(context.Context) error {
		return errors.New("short write\nsecond line of detail")
	}, "target", "/dev/sdb")
	step.Do(step.WithDevice(fctx, "hub"), "port", func(context.Context) error { return nil })
	flash.Set("bytes", 512, "note", "")
	flash.End(nil)
	assert.Equal(t, []string{
		`→ sim-0: flash image="/tmp/my image.img"`,
		`  → storage host`,
		`  ← storage host (10ms) ok`,
		`  → write target=/dev/sdb`,
		`  ← write (10ms) error: short write …`,
		`  → hub: port`,
		`  ← hub: port (10ms) ok`,
		`← sim-0: flash (70ms) ok bytes=512 note=""`,
	}, lines.get())
}

func TestLogSinkCutsLongErrors(t *testing.T) {
	t.Parallel()
	var lines syncLines
	ctx := step.WithTracer(context.Background(), step.New(step.LogSink(lines.logf)))
	step.Do(ctx, "x", func(context.Context) error { return errors.New(strings.Repeat("é", 400)) })
	end := lines.get()[1]
	assert.Less(t, len(end), 400)
	assert.True(t, strings.HasSuffix(end, "é …"), "cut between runes and marked: %q", end[len(end)-10:])
}

func TestJSONLRoundTrips(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	j := step.NewJSONL(&buf)
	tr := step.New(j)
	tr.Now = clock()
	ctx := step.WithDevice(step.WithTracer(context.Background(), tr), "sim-0")
	pctx, power := step.Start(ctx, "power on", "z", "last", "a", "first")
	step.Do(pctx, "storage dut", func(context.Context) error { return fmt.Errorf("mux: %w", driver.ErrPoweredOn) })
	power.Set("pid", 42)
	power.End(nil)
	require.NoError(t, j.Err())

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 4, "one line per event")
	assert.Contains(t, lines[0], `"event":"start"`)
	assert.Contains(t, lines[0], `"args":{"z":"last","a":"first"}`, "arguments keep their order")
	assert.NotContains(t, lines[0], `"outcome"`, "a start has no outcome")
	assert.NotContains(t, lines[0], `"end"`)
	assert.Contains(t, lines[2], `"code":"powered_on"`)

	events, err := step.ReadJSONL(&buf)
	require.NoError(t, err)
	require.Len(t, events, 4)
	assert.Equal(t, step.Started, events[0].Kind)
	assert.Equal(t, []step.Arg{{Key: "z", Value: "last"}, {Key: "a", Value: "first"}}, events[0].Args)
	assert.True(t, events[0].Running())
	assert.Equal(t, "→ sim-0: power on z=last a=first", step.LogLine(events[0]), "a read event logs as it did")
	mux := events[2]
	assert.Equal(t, step.Ended, mux.Kind)
	assert.Equal(t, "storage dut", mux.Name)
	assert.Equal(t, events[0].ID, mux.Parent)
	assert.Equal(t, step.Error, mux.Outcome)
	assert.Equal(t, "mux: device is powered on", mux.Error)
	assert.Equal(t, 10*time.Millisecond, mux.Duration)
	end := events[3]
	assert.Equal(t, "42", end.Arg("pid"))
	assert.Equal(t, 30*time.Millisecond, end.Duration)
	assert.True(t, end.End.Equal(end.Start.Add(end.Duration)))

	_, err = step.ReadJSONL(strings.NewReader(`{"event":"start","id":1,"name":"x","start":"2026-01-02T15:04:05Z"}` + "\nnot json\n"))
	assert.ErrorContains(t, err, "line 2")
	_, err = step.ReadJSONL(strings.NewReader(`{"event":"begin"}`))
	assert.ErrorContains(t, err, `unknown event "begin"`)
}

func TestJSONLStopsAtTheFirstWriteFailure(t *testing.T) {
	t.Parallel()
	w := &failingWriter{}
	j := step.NewJSONL(w)
	ctx := step.WithTracer(context.Background(), step.New(j))
	step.Do(ctx, "a", func(context.Context) error { return nil })
	require.ErrorIs(t, j.Err(), errDiskFull)
	assert.Equal(t, 1, w.calls, "nothing more is written after a failure")
}

var errDiskFull = errors.New("disk full")

type failingWriter struct{ calls int }

func (w *failingWriter) Write([]byte) (int, error) { w.calls++; return 0, errDiskFull }

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

type syncLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *syncLines) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *syncLines) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}
