package examples

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
)

// TestFlashedImageBoots flashes DUT_IMAGE, boots it and proves from the DUT's
// own console that the flashed image is the one running.
func TestFlashedImageBoots(t *testing.T) {
	dut := harness.Acquire(t)
	dut.Flash()
	dut.PowerOn()
	sh := dut.Login()

	release := strings.TrimSpace(sh.Run("cat /etc/dut-release"))
	if want := os.Getenv("DUT_EXPECT_RELEASE"); want != "" {
		require.Equal(t, want, release, "the DUT booted another image than the one flashed")
	}
	require.NotEmpty(t, release)
	require.Contains(t, sh.Run("cat /etc/os-release"), "VERSION_ID=")
}
