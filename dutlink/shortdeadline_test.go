package dutlink_test

import (
	"context"
	"testing"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
)

// TestShortDeadlineLeavesTheBoardInConsoleMode calls a shell command with
// deadlines of a few milliseconds, which end while the console escape is
// on its way: the exchange must still wait for the escape's answer before
// it sends "console" (written right behind the escape, "console" would
// travel in its packet to the DUT and leave the board at its shell, where
// the DUT's output is discarded), and return promptly.
func TestShortDeadlineLeavesTheBoardInConsoleMode(t *testing.T) {
	for _, v := range []string{"0.07", "0.09"} {
		t.Run("fw"+v, func(t *testing.T) {
			lab := dutlinksim.NewTestLab(t)
			b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: v})
			o := lab.Options()
			o.Transport = dutlink.TransportShell
			d := openOnly(t, dutlink.New(o))
			c, err := d.OpenConsole(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			_ = c.Close()
			for i := range 100 {
				dl := time.Duration(1+i%10) * time.Millisecond
				ctx, cancel := context.WithTimeout(context.Background(), dl)
				start := time.Now()
				err := d.SetPin(ctx, "a", driver.PinHigh)
				took := time.Since(start)
				cancel()
				if took >= dutlink.ShellTimeout {
					t.Fatalf("SetPin with a %v deadline took %v: %v", dl, took, err)
				}
				if b.AtShell() {
					t.Fatalf("SetPin with a %v deadline left the board at its shell: %v", dl, err)
				}
			}
		})
	}
}
