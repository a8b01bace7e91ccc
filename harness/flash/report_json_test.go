package flash

import (
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// snakeCase is the JSON name a Report field's name makes: "MappedBytes"
// is "mapped_bytes", "SHA256Cached" "sha256_cached".
func snakeCase(name string) string {
	var b strings.Builder
	rs := []rune(name)
	for i, r := range rs {
		if unicode.IsUpper(r) && i > 0 && (unicode.IsLower(rs[i-1]) || unicode.IsDigit(rs[i-1])) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// reportKeys is what the JSON of a Report must hold: each field's
// snake_case name, a duration's with "duration" made "seconds", and mbps.
func reportKeys(t *testing.T) []string {
	t.Helper()
	var keys []string
	rt := reflect.TypeFor[Report]()
	for f := range rt.Fields() {
		tag := f.Tag.Get("json")
		if f.Type == reflect.TypeFor[*Hash]() {
			assert.Equal(t, "-", tag, "%s: a live handle, not data (its sum is sha256)", f.Name)
			continue
		}
		if f.Type == reflect.TypeFor[time.Duration]() {
			assert.Equal(t, "-", tag, "%s: a duration is written as seconds, not as its nanoseconds", f.Name)
			keys = append(keys, snakeCase(strings.Replace(f.Name, "Duration", "Seconds", 1)))
			continue
		}
		assert.Equal(t, snakeCase(f.Name), tag, "%s: its JSON name is its name's snake_case, always present", f.Name)
		keys = append(keys, snakeCase(f.Name))
	}
	return append(keys, "mbps")
}

func sampleReport() Report {
	return Report{
		Image: "/images/os.img.zst", Format: Zstd, Decoder: "built-in", Target: "/dev/sdb",
		Bytes: 1 << 30, SHA256: strings.Repeat("ab", 32), SHA256Cached: true,
		Duration: 4*time.Second + 123456789, Mode: ModeBmap, Bmap: "/images/os.img.bmap",
		MappedBytes: 1 << 28, MappedFraction: 0.25, Direct: true, Verified: true,
		VerifyDuration: 250 * time.Millisecond,
	}
}

func TestReportJSONNamesMatchFields(t *testing.T) {
	b, err := json.Marshal(sampleReport())
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	got := slices.Sorted(maps.Keys(m))
	want := reportKeys(t)
	slices.Sort(want)
	assert.Equal(t, want, got)
	assert.InDelta(t, 4.123456789, m["seconds"], 1e-12)
	assert.InDelta(t, 0.25, m["verify_seconds"], 1e-12)
	assert.InDelta(t, sampleReport().MBps(), m["mbps"], 1e-9)
}

func TestReportJSONRoundTrips(t *testing.T) {
	for _, rep := range []Report{sampleReport(), {Image: "x", Bytes: 512, Duration: time.Nanosecond}, {}} {
		b, err := json.Marshal(rep)
		require.NoError(t, err)
		var back Report
		require.NoError(t, json.Unmarshal(b, &back))
		assert.Equal(t, rep, back, "%s", b)
	}
}

func TestMarshalReportSaysTheError(t *testing.T) {
	rep := Report{Image: "os.img", Bytes: 4096, Duration: time.Second}
	ok, err := MarshalReport(rep, nil)
	require.NoError(t, err)
	assert.NotContains(t, string(ok), `"error"`)
	assert.True(t, strings.HasSuffix(string(ok), "}\n"), "a file's last line ends")

	failed, err := MarshalReport(rep, errors.New("EIO at 4096"))
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(failed, &m))
	assert.Equal(t, "EIO at 4096", m["error"])
	assert.Equal(t, 4096.0, m["bytes"], "how far it got")

	var back Report
	require.NoError(t, json.Unmarshal(failed, &back))
	assert.Equal(t, rep, back, "the error is not a Report field")
}

func TestReportJSONHasNoNonFiniteNumbers(t *testing.T) {
	_, err := json.Marshal(Report{MappedFraction: nanOf()})
	assert.NoError(t, err, "a NaN fraction must not lose the whole report")
}

func nanOf() float64 {
	zero := 0.0
	return zero / zero
}
