package dutlink_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/faketb"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
)

// Through the harness, a board on a root port: with only a filter for every
// board (DUTLINK_STORAGE_FILTER=SanDisk) Flash fails as the lab's failure,
// saying how to name the board's stick, before the mux moves, with the DUT
// off and no disk written; with the board's own filter it flashes the
// board's disk while a stranger's stick that matches "SanDisk", plugged
// 100 ms after the switch and ready before the board's, stays untouched.
func TestHarnessRootPortBoard(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{RootPort: true, DiskID: "SanDisk_Ultra_4C530001",
		DiskAppearDelay: 300 * time.Millisecond, Config: map[string]string{"name": "root-1"}})
	img := harnessEnv(t, lab, "")
	before, err := lab.AddDisk("SanDisk_Cruzer_0BEF0RE", 1<<20)
	require.NoError(t, err)

	t.Setenv("DUTLINK_STORAGE_FILTER", "SanDisk")
	f := faketb.New(t)
	f.Run(func(tb testing.TB) { harness.Acquire(tb).Flash() })
	require.True(t, f.Failed())
	assert.Contains(t, f.Message(), "set storage_filter")
	assert.Contains(t, f.Message(), "infrastructure failure")
	assert.False(t, b.Power())
	assert.Equal(t, "off", b.Storage())
	assert.NotContains(t, b.Events(), "storage host")
	assert.True(t, zeros(t, b.DiskFile()))
	untouched(t, before)

	t.Setenv("DUTLINK_STORAGE_FILTER", b.Serial()+"=4C530001")
	during := foreignOnSwitch(t, lab, b, "SanDisk_Cruzer_1DUR1NG", 100*time.Millisecond)
	f = faketb.New(t)
	f.Run(func(tb testing.TB) { harness.Acquire(tb).Flash() })
	require.False(t, f.Failed(), f.Message())
	assert.True(t, diskHas(t, b.DiskFile(), img))
	untouched(t, before)
	untouched(t, during())
}
