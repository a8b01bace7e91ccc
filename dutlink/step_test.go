package dutlink_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/step"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/faketb"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
)

// TestBoardOperationsAreStepsUnderTheHarnesss: each board operation is a
// step nested under the harness step that asked for it, and one the test
// makes with dut.Context() is in the test's steps too.
func TestBoardOperationsAreStepsUnderTheHarnesss(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.09", Config: map[string]string{"name": "bench-1"}})
	harnessEnv(t, lab, dutlink.TransportShell)
	f := faketb.New(t)
	f.Run(func(tb testing.TB) {
		dut := harness.Acquire(tb)
		dut.PowerOn()
		ctx, cancel := dut.Context()
		defer cancel()
		require.NoError(t, dut.Device().(driver.Pins).SetPin(ctx, "a", driver.PinLow))
	})
	require.False(t, f.Failed(), f.Message())
	file, err := os.Open(filepath.Join(f.Dir, harness.StepsFile))
	require.NoError(t, err)
	defer file.Close()
	events, err := step.ReadJSONL(file)
	require.NoError(t, err)
	names := map[uint64]string{}
	parentOf := map[string][]string{}
	for _, e := range events {
		if e.Kind == step.Started {
			names[e.ID] = e.Name
			continue
		}
		parentOf[e.Name] = append(parentOf[e.Name], names[e.Parent])
		if strings.HasPrefix(e.Name, "dutlink ") {
			assert.Equal(t, "shell", e.Arg("over"), e.Name)
			assert.Equal(t, "bench-1", e.Device, e.Name)
		}
	}
	assert.Equal(t, []string{"power on"}, parentOf["dutlink power on"], "the board's power on is inside the harness's")
	assert.Equal(t, []string{"storage dut"}, parentOf["dutlink storage dut"])
	assert.Equal(t, []string{"power off", "power off"}, parentOf["dutlink power off"], "at acquire and at cleanup")
	assert.Equal(t, []string{""}, parentOf["dutlink set pin a low"], "the test's own call is a step of the test")
	assert.Contains(t, f.Logs(), "  → dutlink power on over=shell")
}

// TestBoardOperationsGoToLogfWithoutATracer: a program that calls the
// device with a plain context gets each operation in Options.Logf.
func TestBoardOperationsGoToLogfWithoutATracer(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.09", Config: map[string]string{"name": "bench-1"}})
	harnessEnv(t, lab, dutlink.TransportShell)
	o, err := dutlink.OptionsFromEnv()
	require.NoError(t, err)
	var mu sync.Mutex
	var lines []string
	o.Logf = func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, strings.TrimSpace(strings.ReplaceAll(format, "%s", args[0].(string))))
	}
	drv := dutlink.New(o)
	ctx := context.Background()
	infos, err := drv.Discover(ctx)
	require.NoError(t, err)
	require.Len(t, infos, 1)
	dev, err := drv.Open(ctx, infos[0])
	require.NoError(t, err)
	defer dev.(driver.Closer).Close()
	require.NoError(t, dev.(driver.Power).PowerOff(ctx))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, lines, 2, "%q", lines)
	assert.Equal(t, "→ bench-1: dutlink power off over=shell", lines[0])
	assert.Regexp(t, `^← bench-1: dutlink power off \(\S+\) ok$`, lines[1])
}
