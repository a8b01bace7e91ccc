package harness_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/step"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/faketb"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/simimage"
)

// hangDriver is the sim driver whose devices hang in PowerOn until their
// context ends: a board that never answers.
type hangDriver struct {
	*sim.Driver
	entered  chan struct{} // closed when PowerOn hangs
	returned chan struct{} // closed when its context ended
}

func (h *hangDriver) Open(ctx context.Context, info driver.Info) (driver.Device, error) {
	dev, err := h.Driver.Open(ctx, info)
	if err != nil {
		return nil, err
	}
	return &hangDevice{Device: dev.(*sim.Device), h: h}, nil
}

type hangDevice struct {
	*sim.Device
	h *hangDriver
}

func (d *hangDevice) PowerOn(ctx context.Context) error {
	close(d.h.entered)
	<-ctx.Done()
	close(d.h.returned)
	return ctx.Err()
}

func simImage(t *testing.T) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "a.img")
	require.NoError(t, simimage.WriteFile(img, simimage.Spec{Version: "1.0.0-A"}))
	return img
}

func readSteps(t *testing.T, path string) []step.Event {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err, "the steps file is in the test's artifacts")
	defer f.Close()
	events, err := step.ReadJSONL(f)
	require.NoError(t, err)
	return events
}

// ended returns the end records of the steps named name.
func ended(events []step.Event, name string) []step.Record {
	var out []step.Record
	for _, e := range events {
		if e.Kind == step.Ended && e.Name == name {
			out = append(out, e.Record)
		}
	}
	return out
}

// running returns the names of the steps started and not ended.
func running(events []step.Event) []string {
	done := map[uint64]bool{}
	for _, e := range events {
		if e.Kind == step.Ended {
			done[e.ID] = true
		}
	}
	var out []string
	for _, e := range events {
		if e.Kind == step.Started && !done[e.ID] {
			out = append(out, e.Name)
		}
	}
	return out
}

// TestAHangShowsTheRunningStepBeforeTheDeadline: a board that hangs in
// power on. While it hangs, before the test's deadline ends the step, the
// log already shows the step's start line and steps.jsonl its start; then
// the deadline ends it, the test fails naming it, and cleanup powers off
// once.
func TestAHangShowsTheRunningStepBeforeTheDeadline(t *testing.T) {
	t.Parallel()
	img := simImage(t)
	h := &hangDriver{
		Driver:  sim.New(sim.Options{Devices: 1, Dir: t.TempDir(), BootTime: 50 * time.Millisecond}),
		entered: make(chan struct{}), returned: make(chan struct{}),
	}
	f := faketb.New(t)
	f.Until = time.Now().Add(4 * time.Second) // steps end a second before: the cleanup reserve
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Run(func(tb testing.TB) {
			dut := harness.Acquire(tb, harness.WithDrivers(h), harness.WithLockDir(t.TempDir()), harness.WithImage(img))
			dut.Flash()
			dut.PowerOn()
		})
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	select {
	case <-h.entered:
	case <-ctx.Done():
		t.Fatal("the device never hung in power on")
	}

	logs := f.Logs()
	stepsFile := filepath.Join(f.Dir, harness.StepsFile)
	during := readSteps(t, stepsFile)
	select {
	case <-h.returned:
		t.Fatal("the deadline ended the step before the log was read: the test proves nothing")
	default:
	}
	assert.Contains(t, logs, "→ sim-0: power on\n", "the log shows the running step")
	assert.NotContains(t, logs, "← sim-0: power on", "it has not ended")
	assert.Equal(t, []string{"power on"}, running(during), "steps.jsonl ends with the running step's start")

	<-done
	require.True(t, f.Failed())
	assert.Contains(t, f.Message(), "power on")
	v, _ := f.AttrValue(harness.AttrFailureStep)
	assert.Equal(t, "power on", v)
	assert.Regexp(t, `← sim-0: power on \([\d.]+m?s\) error: .*deadline`, f.Logs())

	after := readSteps(t, stepsFile)
	assert.Empty(t, running(after), "every step ended")
	power := ended(after, "power on")
	require.Len(t, power, 1)
	assert.Equal(t, step.Error, power[0].Outcome)
	assert.InDelta(t, 3*time.Second, power[0].Duration, float64(1500*time.Millisecond), "it ran until the test's deadline less the reserve")
	for _, name := range []string{"acquire", "lock", "open", "flash", "write", "storage dut"} {
		recs := ended(after, name)
		if assert.NotEmpty(t, recs, name) {
			assert.Equal(t, step.OK, recs[0].Outcome, name)
		}
	}
	var offsAfter int
	seenPowerOn := false
	for _, e := range after {
		if e.Kind == step.Ended && e.Name == "power on" {
			seenPowerOn = true
		}
		if seenPowerOn && e.Kind == step.Started && (e.Name == "power off" || e.Name == "force off") {
			offsAfter++
		}
	}
	assert.Equal(t, 1, offsAfter, "cleanup powers off once")
}

// TestStepsFileRecordsEveryStepNested: a test's steps.jsonl holds acquire,
// flash (with storage host, the write and storage off inside), power on,
// login, each command and a power cycle, nested as they ran, with their
// arguments and results.
func TestStepsFileRecordsEveryStepNested(t *testing.T) {
	t.Parallel()
	img := simImage(t)
	opts := append(simDrivers(t, 1), harness.WithImage(img))
	f := faketb.New(t)
	f.Run(func(tb testing.TB) {
		dut := harness.Acquire(tb, opts...)
		dut.Flash()
		dut.PowerOn()
		dut.Login().Run("echo hi")
		dut.PowerCycle()
	})
	require.False(t, f.Failed(), f.Message())
	events := readSteps(t, filepath.Join(f.Dir, harness.StepsFile))
	assert.Empty(t, running(events))
	byID := map[uint64]step.Record{}
	for _, e := range events {
		if e.Kind == step.Ended {
			byID[e.ID] = e.Record
			assert.Equal(t, step.OK, e.Outcome, e.Name)
			assert.False(t, e.Start.IsZero(), e.Name)
			assert.InDelta(t, e.End.Sub(e.Start), e.Duration, float64(time.Millisecond), e.Name)
		}
	}
	parent := func(r step.Record) string { return byID[r.Parent].Name }

	acq := ended(events, "acquire")
	require.Len(t, acq, 1)
	assert.Contains(t, acq[0].Arg("device"), "sim-0")
	for _, name := range []string{"lock", "open", "open console"} {
		r := ended(events, name)
		require.NotEmpty(t, r, name)
		assert.Equal(t, "acquire", parent(r[0]), name)
	}

	fl := ended(events, "flash")
	require.Len(t, fl, 1)
	assert.Equal(t, img, fl[0].Arg("image"))
	assert.NotEmpty(t, fl[0].Arg("sha256"))
	assert.Equal(t, "sim-0", fl[0].Device)
	for _, name := range []string{"storage host", "find block target", "write"} {
		r := ended(events, name)
		require.Len(t, r, 1, name)
		assert.Equal(t, "flash", parent(r[0]), name)
	}
	assert.NotEmpty(t, ended(events, "write")[0].Arg("target"))

	ons := ended(events, "power on")
	require.Len(t, ons, 2, "PowerOn and the power cycle's")
	assert.Equal(t, "", parent(ons[0]))
	assert.Equal(t, "power cycle", parent(ons[1]))
	sd := ended(events, "storage dut")
	require.Len(t, sd, 2)
	assert.Equal(t, "power on", parent(sd[0]))

	boot := ended(events, "boot")
	require.Len(t, boot, 1)
	assert.NotEmpty(t, boot[0].Arg("boot_seconds"))
	login := ended(events, "login")
	require.Len(t, login, 1)
	assert.Equal(t, "root", login[0].Arg("user"))
	runs := ended(events, "run")
	require.NotEmpty(t, runs)
	assert.Equal(t, "echo hi", runs[len(runs)-1].Arg("cmd"))
	assert.Equal(t, "0", runs[len(runs)-1].Arg("exit"))

	var offs []string
	for _, r := range ended(events, "power off") {
		offs = append(offs, parent(r))
	}
	assert.Equal(t, []string{"acquire", "flash", "power cycle", ""}, offs, "cleanup powers off once, at the top level")
}

// TestEachDUTAndSubtestHasItsOwnStepsFile: with several DUTs each writes
// <role>-steps.jsonl with its own device's steps; a subtest bound with
// dut.Sub has its own steps.jsonl.
func TestEachDUTAndSubtestHasItsOwnStepsFile(t *testing.T) {
	t.Parallel()
	opts := simDrivers(t, 2)
	f := faketb.New(t)
	sub := faketb.New(t)
	f.Run(func(tb testing.TB) {
		duts := harness.AcquireAll(tb,
			harness.Want{Role: "client", Options: append(opts, harness.WithName("sim-0"))},
			harness.Want{Role: "server", Options: append(opts, harness.WithName("sim-1"))},
		)
		duts[1].PowerOn()
		sub.Run(func(stb testing.TB) { duts[1].Sub(stb).PowerOff() })
	})
	require.False(t, f.Failed(), f.Message())
	require.False(t, sub.Failed(), sub.Message())
	for role, dev := range map[string]string{"client": "sim-0", "server": "sim-1"} {
		events := readSteps(t, filepath.Join(f.Dir, role+"-"+harness.StepsFile))
		assert.NotEmpty(t, ended(events, "lock all"), role)
		for _, e := range events {
			if e.Device != "" {
				assert.Equal(t, dev, e.Device, "%s's file holds %s's steps only: %s", role, dev, e.Name)
			}
		}
		assert.NotEmpty(t, ended(events, "acquire"), role)
	}
	server := readSteps(t, filepath.Join(f.Dir, "server-"+harness.StepsFile))
	assert.Len(t, ended(server, "power on"), 1)
	subSteps := readSteps(t, filepath.Join(sub.Dir, "server-"+harness.StepsFile))
	offs := ended(subSteps, "power off")
	require.Len(t, offs, 1, "the subtest's power off is in its own file")
	assert.Equal(t, "sim-1", offs[0].Device)
	assert.Empty(t, ended(subSteps, "power on"), "the parent's steps are not")
	assert.Equal(t, 1, strings.Count(f.Logs(), "→ lock all"), "the shared step is logged once")
}

// TestAHangShowsInTheStreamedLogOfATestProcess: a go test process (-v)
// whose test waits for output that never comes prints the start of the
// step it hangs in as it starts, seconds before the test's deadline ends
// it, and the end of the step only then.
func TestAHangShowsInTheStreamedLogOfATestProcess(t *testing.T) {
	simEnv(t)
	t.Setenv("DUT_IMAGE", simImage(t))
	t.Setenv("DUT_NAME", "sim-0")
	t.Setenv("DUT_CLEANUP_RESERVE", "3s")
	t.Setenv("DUT_COMMAND_TIMEOUT", "10m")
	cmd, out, _, _ := child(t, "hang", "-test.timeout=20s") // room for a loaded machine to reach the hang
	waitLine(t, out, "POWERED", 30*time.Second)
	startLine := readLineContaining(t, out, "→ sim-0: expect", 30*time.Second)
	startedAt := time.Now()
	assert.Contains(t, startLine, `a line that never comes`)
	assert.Nil(t, cmd.ProcessState, "the test process still runs")
	endLine := readLineContaining(t, out, "← sim-0: expect", 30*time.Second)
	assert.Greater(t, time.Since(startedAt), 500*time.Millisecond, "the start line came well before the deadline ended the step")
	assert.Contains(t, endLine, "error: ")
	_ = cmd.Wait()
}

// readLineContaining reads r until a line containing s, within d.
func readLineContaining(t *testing.T, r interface{ ReadString(byte) (string, error) }, s string, d time.Duration) string {
	t.Helper()
	found := make(chan string, 1)
	go func() {
		defer close(found)
		for {
			line, err := r.ReadString('\n')
			if strings.Contains(line, s) {
				found <- line
				return
			}
			if err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	select {
	case line, ok := <-found:
		require.True(t, ok, "the process ended before printing %q", s)
		return line
	case <-ctx.Done():
		t.Fatalf("no %q within %s", s, d)
		return ""
	}
}
