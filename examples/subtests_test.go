package examples

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
)

// TestOneBootManyChecks flashes and boots once, then runs several subtests on
// the same DUT. dut.Sub(t) binds the DUT to the subtest, so each subtest gets
// its own console log, its own properties, and its own failures: use the
// subtest's shell (dut.Sub(t).Shell()), never the parent's, inside t.Run.
func TestOneBootManyChecks(t *testing.T) {
	dut := harness.Acquire(t)
	dut.Flash()
	dut.PowerOn()
	dut.Login()

	t.Run("hostname", func(t *testing.T) {
		sh := dut.Sub(t).Shell()
		name := sh.Run("hostname")
		assert.NotEqual(t, "\n", name)
		assert.Equal(t, name, sh.Run("uname -n"))
	})
	t.Run("kernel", func(t *testing.T) {
		sh := dut.Sub(t).Shell()
		assert.True(t, strings.HasPrefix(sh.Run("uname -s"), "Linux"))
	})
	t.Run("exit-codes", func(t *testing.T) {
		sh := dut.Sub(t).Shell()
		_, code := sh.RunCode("sh -c 'exit 3'")
		assert.Equal(t, 3, code)
	})
}
