package dutlinksim_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
)

// An OUT request returns once the firmware latched it; its action runs
// afterwards, and the next request waits for it.
func TestOutRequestReturnsBeforeItsAction(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.09", Config: map[string]string{"power_on": "w5,p1"}})
	c := openCtl(t, lab, b)
	start := time.Now()
	c.out(reqPower, 1, nil)
	returned := time.Now()
	c.barrier()
	waited := time.Now()
	log := b.PowerLog()
	require.Len(t, log, 1)
	assert.True(t, log[0].On)
	assert.True(t, returned.Before(log[0].At), "the Power request returned before the DUT's power changed")
	assert.GreaterOrEqual(t, log[0].At.Sub(start), 500*time.Millisecond, "w5 waits 500 ms")
	assert.False(t, waited.Before(log[0].At), "the next request waited for the sequence")
}

// The host's ctx does not reach the firmware: a sequence goes on after the
// ctx of its request ended.
func TestSequenceIgnoresHostContext(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.09", Config: map[string]string{"power_on": "w3,p1"}})
	c := openCtl(t, lab, b)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := c.c.Control(ctx, reqOut, reqPower, 1, ifc, nil)
	require.NoError(t, err)
	cancel()
	require.Eventually(t, b.Power, wait, 10*time.Millisecond)
}

// A request that waits for the previous action gives up when its ctx
// ends, without doing anything.
func TestWaitingRequestGivesUpWithItsContext(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.09", Config: map[string]string{"power_on": "p1,w5"}})
	c := openCtl(t, lab, b)
	c.out(reqPower, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.c.Control(ctx, reqOut, reqSetPin, 2, ifc, []byte{0})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 400*time.Millisecond, "it gave up with its ctx, not when the sequence ended")
	c.barrier()
	assert.Equal(t, "z", b.Pin("b"), "the given-up request did nothing")
	assert.NotContains(t, b.Events(), "pin b l")
}

// Shell input waits for a running vendor action too.
func TestShellWaitsForVendorAction(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.09", Config: map[string]string{"power_on": "w3,p1"}})
	tm := openTerm(t, b.TTY())
	tm.toShell()
	c := openCtl(t, lab, b)
	c.out(reqPower, 1, nil)
	tm.send("version\r\n")
	tm.until("v")
	require.Len(t, b.PowerLog(), 1, "the echo came after the sequence ended")
	tm.until("#> ")
}

// Unplug and Reboot end a running sequence; the rest of it never runs.
func TestUnplugAndRebootEndSequence(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	cfg := map[string]string{"power_on": "w50,p1"}
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.09", Config: cfg})
	c := openCtl(t, lab, b)
	c.out(reqPower, 1, nil)
	start := time.Now()
	b.Reboot()
	assert.Less(t, time.Since(start), 2*time.Second, "Reboot cut the 5 s wait short")
	c.barrier()
	assert.Empty(t, b.PowerLog())

	c.out(reqPower, 1, nil)
	start = time.Now()
	b.Unplug()
	assert.Less(t, time.Since(start), 2*time.Second, "Unplug cut the 5 s wait short")
	assert.Empty(t, b.PowerLog())
	_, err := c.c.Control(context.Background(), reqIn, reqRead, 0, ifc, make([]byte, 64))
	assert.ErrorIs(t, err, dutlink.ErrGone)
}

// On 0.08 a vendor Power request runs the sequence of the last Refresh's
// snapshot (none after boot); the shell always uses the flash.
func TestPowerSequenceFromSnapshot008(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.08", Config: map[string]string{"power_on": "p1,bL", "power_off": "bZ,p0"}})
	c := openCtl(t, lab, b)
	step := func(val uint16) []string {
		n := len(b.Events())
		c.out(reqPower, val, nil)
		c.barrier()
		return eventsAfter(b, n)
	}
	assert.Equal(t, []string{"power on"}, step(1), "no Refresh yet: a plain power on")
	assert.Equal(t, []string{"power off"}, step(0))

	c.out(reqRefresh, 0, nil)
	assert.Equal(t, []string{"power on", "pin b l"}, step(1), "the snapshot's sequence")
	c.out(reqConfig, 3, []byte("p1,cH"))
	assert.Equal(t, []string{"pin b z", "power off"}, step(0))
	assert.Equal(t, []string{"power on", "pin b l"}, step(1), "the new config is not in the snapshot yet")

	b.Reboot()
	assert.Equal(t, []string{"power on"}, step(1), "Reboot lost the snapshot")
	assert.Equal(t, []string{"power off"}, step(0))

	tm := openTerm(t, b.TTY())
	tm.toShell()
	n := len(b.Events())
	tm.send("power on\r\n")
	tm.until("Device powered on\r\n#> ")
	assert.Equal(t, []string{"power on", "pin c h"}, eventsAfter(b, n), "the shell reads the flash")
}

// On 0.09 a vendor Power request reads the sequence from flash.
func TestPowerSequenceFromFlash009(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.09", Config: map[string]string{"power_on": "p1,bL", "power_rescue": "p1,aL,w1,aZ"}})
	c := openCtl(t, lab, b)
	c.out(reqPower, 1, nil)
	c.barrier()
	assert.Equal(t, []string{"power on", "pin b l"}, b.Events(), "no Refresh needed")
	c.out(reqConfig, 3, []byte("p1,dH"))
	c.out(reqPower, 2, nil)
	c.barrier()
	n := len(b.Events())
	c.out(reqPower, 1, nil)
	c.barrier()
	assert.Equal(t, []string{"power on", "pin d h"}, eventsAfter(b, n), "a config written over USB counts at once")
	c.out(reqPower, 2, nil)
	c.barrier()
	n = len(b.Events())
	c.out(reqPower, 4, nil)
	c.barrier()
	assert.Equal(t, []string{"power on", "pin a l", "wait 100ms", "pin a z"}, eventsAfter(b, n))
}

func TestPowerLog(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.09", Config: map[string]string{"power_off": "p1,w2,p0"}})
	c := openCtl(t, lab, b)
	ons := func() []bool {
		var out []bool
		for _, p := range b.PowerLog() {
			out = append(out, p.On)
		}
		return out
	}
	c.out(reqPower, 3, nil) // force on
	c.out(reqPower, 3, nil) // no change, no entry
	c.out(reqPower, 2, nil) // force off
	c.out(reqPower, 0, nil) // off: p1, 200 ms, p0
	c.barrier()
	require.Equal(t, []bool{true, false, true, false}, ons())
	log := b.PowerLog()
	assert.GreaterOrEqual(t, log[3].At.Sub(log[2].At), 200*time.Millisecond, "w2 between p1 and p0")
	for i := 1; i < len(log); i++ {
		assert.False(t, log[i].At.Before(log[i-1].At), "in order")
	}

	c.out(reqPower, 3, nil)
	c.barrier()
	b.Reboot()
	assert.Equal(t, []bool{true, false, true, false, true, false}, ons(), "a reboot cuts the power")
	b.Reboot()
	assert.Len(t, b.PowerLog(), 6, "nothing to cut")
	c.out(reqPower, 3, nil)
	c.barrier()
	b.Unplug()
	assert.Equal(t, []bool{true, false, true, false, true, false, true, false}, ons(), "unplugging cuts the power")
}
