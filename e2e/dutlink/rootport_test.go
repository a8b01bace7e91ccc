package dutlinke2e_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
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
	t.Parallel()
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{RootPort: true, DiskID: "SanDisk_Ultra_4C530001",
		DiskAppearDelay: 300 * time.Millisecond, Config: map[string]string{"name": "root-1"}})
	opts, img := setup(t, lab, "", filter("SanDisk"))
	before, err := lab.AddDisk("SanDisk_Cruzer_0BEF0RE", 1<<20)
	require.NoError(t, err)

	f := faketb.New(t)
	f.Run(func(tb testing.TB) { harness.Acquire(tb, opts...).Flash() })
	require.True(t, f.Failed())
	assert.Contains(t, f.Message(), "set storage_filter")
	assert.Contains(t, f.Message(), "infrastructure failure")
	assert.False(t, b.Power())
	assert.Equal(t, "off", b.Storage())
	assert.NotContains(t, b.Events(), "storage host")
	assert.True(t, dutlinksim.Zeroed(t, b.DiskFile()))
	dutlinksim.Untouched(t, before)

	opts, img = setup(t, lab, "", func(o *dutlink.Options) { o.StorageFilters = map[string]string{b.Serial(): "4C530001"} })
	during := lab.ForeignOnSwitch(t, b, "SanDisk_Cruzer_1DUR1NG", 100*time.Millisecond)
	f = faketb.New(t)
	f.Run(func(tb testing.TB) { harness.Acquire(tb, opts...).Flash() })
	require.False(t, f.Failed(), f.Message())
	assert.True(t, dutlinksim.DiskHas(t, b.DiskFile(), img))
	dutlinksim.Untouched(t, before)
	dutlinksim.Untouched(t, during())
}
