package harness

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ with what the code makes now")

// assertGolden compares got with testdata/name, or, with -update, writes
// it there.
func assertGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "no golden file: go test ./harness -run '%s' -update writes it", t.Name())
	assert.Equal(t, string(want), string(got), "%s differs: if the change is meant, go test ./harness -run '%s' -update rewrites it", path, t.Name())
}

// render is properties as a golden file holds them: key=value, one a line,
// in the order recorded.
func render(props ...[]property) []byte {
	var b strings.Builder
	for _, ps := range props {
		for _, p := range ps {
			b.WriteString(p.Key + "=" + p.Value + "\n")
		}
	}
	return []byte(b.String())
}

var sha = strings.Repeat("5e", 32)

// flashCases are the flash reports of the golden files: what the engine
// reports for each kind of flash.
var flashCases = []struct {
	name string
	rep  flash.Report
	err  error
}{
	{name: "flash-dense", rep: flash.Report{
		Image: "/images/os.img.zst", Format: flash.Zstd, Decoder: "built-in", Target: "/dev/sdb",
		Bytes: 512 << 20, SHA256: sha, Duration: 2500 * time.Millisecond,
		Mode: flash.ModeFull, MappedBytes: 512 << 20, MappedFraction: 1, Direct: true,
		Verified: true, VerifyDuration: 180 * time.Millisecond,
	}},
	{name: "flash-sparse", rep: flash.Report{
		Image: "/images/os.img", Format: flash.Raw, Decoder: "none", Target: "/var/lib/dut/disk.img",
		Bytes: 64 << 20, SHA256: sha, SHA256Cached: true, Duration: 400 * time.Millisecond,
		Mode: flash.ModeFull, MappedBytes: 20 << 20, MappedFraction: 0.3125,
		ZeroedBytes: 44 << 20, ZeroedBy: "punch-hole", Verified: true, VerifyDuration: 15 * time.Millisecond,
	}},
	{name: "flash-bmap", rep: flash.Report{
		Image: "/images/os.img.xz", Format: flash.Xz, Decoder: "xz", Target: "/dev/sdb",
		Bytes: 1 << 30, SHA256: sha, Duration: 3 * time.Second,
		Mode: flash.ModeBmap, Bmap: "/images/os.img.bmap", MappedBytes: 96 << 20, MappedFraction: 0.09375,
		Direct: true, Verified: true, VerifyDuration: 220 * time.Millisecond,
	}},
	{name: "flash-truncated", rep: flash.Report{
		// The write failed 16 MiB in: no hash yet, nothing verified.
		Image: "/images/os.img.gz", Format: flash.Gzip, Decoder: "built-in", Target: "/dev/sdb",
		Bytes: 16 << 20, Duration: 900 * time.Millisecond, Mode: flash.ModeFull, MappedBytes: 16 << 20,
	}, err: errors.New("flash /images/os.img.gz onto /dev/sdb: write at 16777216: input/output error")},
}

func TestFlashEvidenceGolden(t *testing.T) {
	for _, c := range flashCases {
		t.Run(c.name, func(t *testing.T) {
			assertGolden(t, c.name+".golden", render(flashProperties(c.rep), imageHashProperties(c.rep)))
			b, err := flashReportJSON(c.rep, c.err)
			require.NoError(t, err)
			assertGolden(t, c.name+".json.golden", b)
		})
	}
}

func TestDeviceBootPowerGolden(t *testing.T) {
	assertGolden(t, "device.golden", render(
		deviceProperties(driver.Info{Driver: "dutlink", Name: "bench-1", Serial: "1a2b3c4d", Tags: []string{"arm64"}}),
		deviceProperties(driver.Info{Driver: "qemu", Name: "vm-1"}), // no serial: none recorded
		// A remote device names its exporter.
		deviceProperties(driver.Info{Driver: "remote", Name: "sim-0", Serial: "SIM00000", Facts: []driver.Fact{{Key: "exporter", Value: "lab-1"}, {Key: "exporter_url", Value: "unix:///run/jumpstarter/dut.sock"}}}),
	))
	assertGolden(t, "boot.golden", render(bootProperties(12345678901*time.Nanosecond)))
	assertGolden(t, "power.golden", render(powerProperties(driver.PowerReading{Volts: 5.02, Amps: 0.8134, Watts: 4.083})))
}

// Each DUT of AcquireAll records under its role.
func TestRoleKeysGolden(t *testing.T) {
	rep := flashCases[0].rep
	client := withRole("client", slices.Concat(
		deviceProperties(driver.Info{Driver: "dutlink", Name: "bench-1", Serial: "1a2b3c4d"}),
		flashProperties(rep), imageHashProperties(rep), bootProperties(9*time.Second)))
	server := withRole("server", deviceProperties(driver.Info{Driver: "qemu", Name: "vm-1"}))
	alone := withRole("", deviceProperties(driver.Info{Driver: "qemu", Name: "vm-1"}))
	assertGolden(t, "roles.golden", render(client, server, alone))
}

// A flash property says what the flash report's field of the same name
// says: dut.flash_<x> is the JSON's <x>, dut.image is image and
// dut.image_sha256 sha256.
func TestFlashPropertiesNameTheirFields(t *testing.T) {
	for _, c := range flashCases {
		b, err := flashReportJSON(c.rep, c.err)
		require.NoError(t, err)
		var fields map[string]any
		require.NoError(t, json.Unmarshal(b, &fields))
		for _, p := range slices.Concat(flashProperties(c.rep), imageHashProperties(c.rep)) {
			name := map[string]string{AttrImage: "image", AttrImageSHA256: "sha256"}[p.Key]
			if name == "" {
				name = strings.TrimPrefix(p.Key, "dut.flash_")
			}
			v, ok := fields[name]
			if !assert.True(t, ok, "%s: %s: flash.json has no field %q", c.name, p.Key, name) {
				continue
			}
			assertSameValue(t, v, p.Value, "%s: %s", c.name, p.Key)
		}
	}
}

// assertSameValue checks that the property value prop says the JSON value
// v (a number rounded as a property rounds it).
func assertSameValue(t *testing.T, v any, prop string, msgAndArgs ...any) {
	t.Helper()
	switch v := v.(type) {
	case float64:
		f, err := strconv.ParseFloat(prop, 64)
		require.NoError(t, err, msgAndArgs...)
		decimals := len(prop) - strings.IndexByte(prop+".", '.') - 1
		assert.InDelta(t, v, f, 0.5*math.Pow10(-decimals)+1e-12, msgAndArgs...)
	case bool:
		assert.Equal(t, strconv.FormatBool(v), prop, msgAndArgs...)
	default:
		assert.Equal(t, v, prop, msgAndArgs...)
	}
}

// attrConstants are the package's Attr* constants and their values, read
// from its source.
func attrConstants(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	consts := map[string]string{}
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		require.NoError(t, err)
		ast.Inspect(f, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			for i, id := range vs.Names {
				if !strings.HasPrefix(id.Name, "Attr") || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					consts[id.Name], _ = strconv.Unquote(lit.Value)
				}
			}
			return true
		})
	}
	return consts
}

// readmeProperties are the property names of README's properties table:
// the rows "| `dut.x` | ... |" of the table headed "| Property |".
func readmeProperties(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "README.md"))
	require.NoError(t, err)
	defer f.Close()
	row := regexp.MustCompile("^\\| `(dut\\.[a-z0-9_]+)` \\|")
	var names []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "| Property |"):
			in = true
		case in && !strings.HasPrefix(line, "|"):
			return names
		case in:
			if m := row.FindStringSubmatch(line); m != nil {
				names = append(names, m[1])
			}
		}
	}
	require.NoError(t, sc.Err())
	return names
}

func TestREADMEListsEveryProperty(t *testing.T) {
	consts := attrConstants(t)
	require.NotEmpty(t, consts)
	documented := readmeProperties(t)
	require.NotEmpty(t, documented, "README.md has no table headed | Property |")
	assert.Equal(t, slices.Sorted(maps.Values(consts)), slices.Sorted(slices.Values(documented)),
		"README's properties table lists exactly the Attr* constants, once each")
	assert.Equal(t, AttrFlashMappedBytes, consts["AttrFlashMappedBytes"], "the source read is this package's")
}
