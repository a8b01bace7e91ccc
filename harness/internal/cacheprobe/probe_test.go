package cacheprobe

import (
	"os"
	"testing"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	_ "github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
)

// TestProbe acquires the simulated DUT when JUMPSTARTER_CACHE_PROBE is
// "acquire", and only passes when it is "plain" (the control: a test that
// touches no DUT is cached as usual). Unset, it skips.
func TestProbe(t *testing.T) {
	switch os.Getenv("JUMPSTARTER_CACHE_PROBE") {
	case "acquire":
		harness.Acquire(t, harness.WithDriver("sim"))
	case "plain":
	default:
		t.Skip("run by harness's TestHardwareResultsAreNeverCached")
	}
}
