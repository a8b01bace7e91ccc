package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
)

// stepLines returns the step lines of stderr, without the "dut: " prefix.
func stepLines(stderr string) []string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if rest, ok := strings.CutPrefix(l, "dut: "); ok && (strings.Contains(rest, "→ ") || strings.Contains(rest, "← ")) {
			out = append(out, rest)
		}
	}
	return out
}

// TestVerbosePrintsEachStepAtItsStartAndEnd: dut -v logs every hardware
// step on stderr when it starts and when it ends, nested, with its outcome;
// without -v it logs none.
func TestVerbosePrintsEachStepAtItsStartAndEnd(t *testing.T) {
	env(t)
	r := dut(t, "-v", "power", "cycle", "sim-0", "--off-time", "10ms")
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := stepLines(r.stderr)
	want := []string{"→ sim-0: open", "← sim-0: open", "→ sim-0: power off", "← sim-0: power off",
		"→ sim-0: storage dut", "← sim-0: storage dut", "→ sim-0: power on", "← sim-0: power on"}
	require.Len(t, lines, len(want), "%q", lines)
	for i, w := range want {
		assert.True(t, strings.HasPrefix(lines[i], w), "line %d: %q, want %q...", i, lines[i], w)
		if strings.HasPrefix(w, "←") {
			assert.Regexp(t, ` \([\d.]+[µm]?s\) ok$`, lines[i])
		}
	}
	assert.Equal(t, "sim-0: power cycled (off for 10ms)\n", r.stdout, "stdout is untouched")

	r = dut(t, "power", "cycle", "sim-0", "--off-time", "10ms")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Empty(t, stepLines(r.stderr), "without -v no step is logged")

	r = dut(t, "power", "off", "sim-0")
	require.Equal(t, exitOK, r.code, r.stderr)
	r = dut(t, "--verbose", "reset", "sim-0")
	require.Equal(t, exitFailure, r.code)
	lines = stepLines(r.stderr)
	require.NotEmpty(t, lines)
	assert.Regexp(t, `^← sim-0: reset \(\S+\) error: .*powered off`, lines[len(lines)-1], "a failed step says so")
}

// TestVerboseNestsTheBoardsOperations: a DUTlink's own operations are
// steps inside dut's.
func TestVerboseNestsTheBoardsOperations(t *testing.T) {
	lab := env(t)
	lab.AddBoardT(t, dutlinksim.BoardOptions{Serial: "1a2b3c4d", Version: "0.09", Config: map[string]string{"name": "bench-1"}})
	t.Setenv("DUTLINK_TRANSPORT", "shell")
	r := dut(t, "-v", "power", "on", "bench-1", "--keep-storage")
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := stepLines(r.stderr)
	assert.Contains(t, lines, "→ bench-1: power on")
	assert.Contains(t, lines, "  → dutlink power on over=shell")
}

// TestVerboseFlashShowsTheWrite: dut -v flash logs the write as a step
// with its target, between the storage steps.
func TestVerboseFlashShowsTheWrite(t *testing.T) {
	env(t)
	img := filepath.Join(t.TempDir(), "os.img")
	require.NoError(t, os.WriteFile(img, []byte(strings.Repeat("x", 4096)), 0o644))
	d := simDevice(t, "sim-0")
	r := dut(t, "-v", "flash", "sim-0", img)
	require.Equal(t, exitOK, r.code, r.stderr)
	lines := stepLines(r.stderr)
	var names []string
	for _, l := range lines {
		if strings.HasPrefix(l, "→ ") {
			names = append(names, strings.Fields(strings.TrimPrefix(l, "→ sim-0: "))[0])
		}
	}
	assert.Equal(t, []string{"open", "power", "storage", "find", "write", "storage"}, names, "%q", lines)
	assert.Contains(t, lines, "→ sim-0: write target="+d.DiskPath())
}
