package harness_test

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/faketb"
)

// TestTwoDUTsInOneTest: a client board and a server board, each flashed,
// booted and driven, each with its own properties and console log.
func TestTwoDUTsInOneTest(t *testing.T) {
	t.Parallel()
	im := buildImages(t)
	opts := simDrivers(t, 2)
	f := faketb.New(t)
	f.Run(func(tb testing.TB) {
		duts := harness.AcquireAll(tb,
			harness.Want{Role: "client", Options: append(opts, harness.WithName("sim-0"), harness.WithImage(im.a))},
			harness.Want{Role: "server", Options: append(opts, harness.WithTags("odd"), harness.WithImage(im.b))},
		)
		client, server := duts[0], duts[1]
		for _, d := range duts {
			d.Flash()
			d.PowerOn()
		}
		assert.Contains(tb, client.Login().Run("cat /etc/dut-release"), "1.0.0-A")
		assert.Contains(tb, server.Login().Run("cat /etc/dut-release"), "2.0.0-B")
	})
	require.False(t, f.Failed(), f.Message())
	for role, want := range map[string]string{"client": "sim-0", "server": "sim-1"} {
		name, ok := f.AttrValue("dut." + role + ".name")
		assert.True(t, ok, role)
		assert.Equal(t, want, name)
		_, ok = f.AttrValue("dut." + role + ".image_sha256")
		assert.True(t, ok, "%s records its flash", role)
		_, err := os.Stat(filepath.Join(f.Dir, role+"-console.log"))
		assert.NoError(t, err, "%s has its console log", role)
	}
	_, ok := f.AttrValue("dut.name")
	assert.False(t, ok, "no property without a role when a test has several DUTs")
}

// TestTwoTestsWantTwoDUTsInOppositeOrders: neither holds one DUT while it
// waits for the other, so both run, one after the other, long before the
// acquire timeout.
func TestTwoTestsWantTwoDUTsInOppositeOrders(t *testing.T) {
	t.Parallel()
	opts := simDrivers(t, 2)
	orders := [][]string{{"sim-0", "sim-1"}, {"sim-1", "sim-0"}}
	var wg sync.WaitGroup
	fakes := make([]*faketb.TB, 4)
	start := time.Now()
	for i := range fakes {
		fakes[i] = faketb.New(t)
		order := orders[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			fakes[i].Run(func(tb testing.TB) {
				duts := harness.AcquireAll(tb,
					harness.Want{Role: "a", Options: append(opts, harness.WithName(order[0]), harness.WithAcquireTimeout(time.Minute))},
					harness.Want{Role: "b", Options: append(opts, harness.WithName(order[1]))},
				)
				duts[0].PowerOn()
				duts[1].PowerOn()
			})
		}()
	}
	wg.Wait()
	for i, f := range fakes {
		assert.False(t, f.Failed(), "test %d: %s", i, f.Message())
	}
	assert.Less(t, time.Since(start), 30*time.Second, "no test waited out its acquire timeout")
}

func TestAcquireAllRefusesUnnamedOrRepeatedRoles(t *testing.T) {
	t.Parallel()
	opts := simDrivers(t, 2)
	for _, wants := range [][]harness.Want{
		{{Role: "", Options: opts}},
		{{Role: "x", Options: opts}, {Role: "x", Options: opts}},
		{{Role: "a.b", Options: opts}},
	} {
		f := faketb.New(t)
		f.Run(func(tb testing.TB) { harness.AcquireAll(tb, wants...) })
		assert.True(t, f.Failed())
		assert.Contains(t, f.Message(), "distinct one-word role")
	}
}
