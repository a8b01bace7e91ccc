package examples

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
)

// TestShellCommands logs in and runs commands: exact output, exit codes.
func TestShellCommands(t *testing.T) {
	dut := harness.Acquire(t)
	dut.Flash()
	dut.PowerOn()
	sh := dut.Login()

	// Run returns the exact output and fails the test on a non-zero exit code.
	assert.Equal(t, "hello\n", sh.Run("echo hello"))
	assert.Equal(t, "no newline", sh.Run("printf 'no newline'"))
	assert.Equal(t, "a\n\nb\n", sh.Run(`printf 'a\n\nb\n'`))

	// RunCode hands the exit code to the test.
	out, code := sh.RunCode("cat /does/not/exist")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "No such file or directory")
	_, code = sh.RunCode("false")
	assert.Equal(t, 1, code)

	kernel := strings.TrimSpace(sh.Run("uname -r"))
	require.NotEmpty(t, kernel)
	t.Logf("kernel %s", kernel)
}
