package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
)

// dut flash --json prints the flash.Report's JSON, the shape of a test's
// flash.json: nothing else on stdout.
func TestFlashJSON(t *testing.T) {
	env(t)
	d := simDevice(t, "sim-0")
	img := writeImage(t, 1<<20)
	data, err := os.ReadFile(img)
	require.NoError(t, err)
	sum := sha256.Sum256(data)

	r := dut(t, "flash", "sim-0", img, "--json")
	require.Equal(t, exitOK, r.code, r.stderr)
	var rep flash.Report
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), "stdout is the report alone")
	assert.Equal(t, img, rep.Image)
	assert.Equal(t, d.DiskPath(), rep.Target)
	assert.Equal(t, int64(1<<20), rep.Bytes)
	assert.Equal(t, hex.EncodeToString(sum[:]), rep.SHA256)
	assert.Equal(t, flash.ModeFull, rep.Mode)
	assert.True(t, rep.Verified)
	assert.Positive(t, rep.Duration)
	same, err := flash.MarshalReport(rep, nil)
	require.NoError(t, err)
	assert.Equal(t, string(same), r.stdout, "the one shape: what flash.MarshalReport writes for flash.json")
	assert.Contains(t, r.stderr, "dut: flashing "+img, "the progress stays on stderr")
}

func TestFlashJSONFailed(t *testing.T) {
	env(t)
	simDevice(t, "sim-0")
	bad := filepath.Join(t.TempDir(), "bad.img.gz")
	require.NoError(t, os.WriteFile(bad, append([]byte{0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 0xff}, bytes.Repeat([]byte("not deflate"), 1000)...), 0o644))

	r := dut(t, "flash", "sim-0", bad, "--json")
	assert.Equal(t, exitFailure, r.code)
	var fields map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &fields), "a failed flash has its report too")
	assert.Equal(t, bad, fields["image"])
	assert.Equal(t, "gzip", fields["format"])
	assert.Contains(t, fields["error"], "gzip", "and says why it failed")
	assert.Equal(t, false, fields["verified"])
	assert.Contains(t, r.stderr, "dut: flash "+bad+" onto sim-0: ", "the error is still reported as usual")
}
