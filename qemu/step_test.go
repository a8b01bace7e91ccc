package qemu

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/step"
)

// TestStartIsAStepWithItsCommandLine: QEMU's start is a step under the
// caller's, and its start event already carries the command line, so that
// a start that hangs shows how to run the same VM by hand.
func TestStartIsAStepWithItsCommandLine(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "hang.pid")
	d := newFakeDevice(t, "hang", pidFile)
	var rec step.Recorder
	ctx, cancel := context.WithTimeout(step.WithTracer(t.Context(), step.New(&rec)), 10*time.Second)
	defer cancel()
	ctx, power := step.Start(ctx, "power on")
	errc := make(chan error, 1)
	go func() { errc <- d.PowerOn(ctx) }()

	started, err := rec.WaitStarted(ctx, "qemu start")
	require.NoError(t, err)
	assert.Equal(t, power.Record().ID, started.Parent, "inside the caller's step")
	assert.Equal(t, "fake", started.Device)
	assert.Equal(t, d.CommandLine(), started.Arg("cmdline"))
	assert.Contains(t, started.Arg("cmdline"), "-qmp")
	running := rec.Running()
	require.Len(t, running, 2, "the start hangs (no QMP socket)")
	assert.Equal(t, "qemu start", running[1].Name)

	cancel()
	require.Error(t, <-errc)
	power.End(nil)
	fin := rec.Finished()
	require.Len(t, fin, 2)
	assert.Equal(t, "qemu start", fin[0].Name)
	assert.Equal(t, step.Error, fin[0].Outcome)
	assert.Contains(t, fin[0].Error, "reproduce with: ")
}
