package examples

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
)

// TestEvidence shows what a test leaves behind. The harness records the DUT,
// the image's SHA-256, the flash rate and the boot time as test properties
// (JUnit <properties> under gotestsum) and writes the test's console log to
// t.ArtifactDir(); a test adds its own properties and files the same way.
func TestEvidence(t *testing.T) {
	dut := harness.Acquire(t)
	rep := dut.Flash()
	t.Logf("flashed %d bytes at %.1f MB/s, sha256 %s", rep.Bytes, rep.MBps(), rep.SHA256)
	dut.PowerOn()
	sh := dut.Login()

	// A property of our own: values must be one line.
	kernel := strings.TrimSpace(sh.Run("uname -r"))
	t.Attr("example.kernel", kernel)

	// An artifact of our own, beside the harness's console.log.
	osRelease := sh.Run("cat /etc/os-release")
	require.NoError(t, os.WriteFile(filepath.Join(t.ArtifactDir(), "os-release"), []byte(osRelease), 0o644))
}
