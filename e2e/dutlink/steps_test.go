package dutlinke2e_test

import (
	"os"
	"path/filepath"
	"strings"
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
	t.Parallel()
	lab := dutlinksim.NewTestLab(t)
	lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.09", Config: map[string]string{"name": "bench-1"}})
	opts, _ := setup(t, lab, dutlink.TransportShell)
	f := faketb.New(t)
	f.Run(func(tb testing.TB) {
		dut := harness.Acquire(tb, opts...)
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
