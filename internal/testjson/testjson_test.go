package testjson

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestArtifactsToAttrs(t *testing.T) {
	in := `{"Action":"run","Package":"p","Test":"TestA"}
{"Time":"2026-11-30T08:24:50.78918972Z","Action":"artifacts","Package":"p","Test":"TestA","Path":"/out/_artifacts/1"}
not json: build output
{"Action":"output","Package":"p","Test":"TestA","Output":"\"Action\":\"artifacts\" in output\n"}
{"Action":"pass","Package":"p","Test":"TestA","Elapsed":0}`
	var out bytes.Buffer
	require.NoError(t, ArtifactsToAttrs(&out, strings.NewReader(in)))
	lines := strings.Split(out.String(), "\n")
	require.Len(t, lines, 5)
	assert.Equal(t, `{"Time":"2026-11-30T08:24:50.78918972Z","Action":"attr","Package":"p","Test":"TestA","Key":"artifacts","Value":"/out/_artifacts/1"}`, lines[1])
	want := strings.Split(in, "\n")
	for _, i := range []int{0, 2, 3, 4} {
		assert.Equal(t, want[i], lines[i], "line %d passes through", i)
	}
}

// TestGotestsumKeepsPropertiesAndCounts runs the real pipeline on a sample
// module: go test -json -artifacts, the rewrite, gotestsum v1.13 (pinned in
// tools/go.mod). Without the rewrite gotestsum drops the properties of tests
// with artifacts and counts them twice; with it, the report is right.
func TestGotestsumKeepsPropertiesAndCounts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds gotestsum and runs go test: not in -short mode")
	}
	goBin, err := exec.LookPath("go")
	require.NoError(t, err)
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	tmp := t.TempDir()

	cmd := exec.Command(goBin, "test", "-json", "-count=1", "-artifacts", "-outputdir", tmp, ".")
	cmd.Dir = "testdata/sample"
	raw, err := cmd.Output()
	require.NoError(t, err, "go test on the sample module")
	var rewritten bytes.Buffer
	require.NoError(t, ArtifactsToAttrs(&rewritten, bytes.NewReader(raw)))

	junit := func(stream []byte) JUnit {
		in := filepath.Join(tmp, "stream.json")
		require.NoError(t, os.WriteFile(in, stream, 0o644))
		out := filepath.Join(tmp, "junit.xml")
		cmd := exec.Command(goBin, "tool", "-modfile="+filepath.Join(root, "tools", "go.mod"), "gotestsum",
			"--junitfile", out, "--raw-command", "--", "cat", in)
		cmd.Dir = root
		b, err := cmd.CombinedOutput()
		require.NoError(t, err, "gotestsum: %s", b)
		f, err := os.Open(out)
		require.NoError(t, err)
		defer f.Close()
		j, err := ParseJUnit(f)
		require.NoError(t, err)
		return j
	}
	req := Requirements{MinPassed: 2, Properties: []string{"dut.name", ArtifactsKey}, ArtifactFiles: []string{"console.log"}}

	bad := junit(raw)
	assert.Error(t, bad.Check(req), "gotestsum v1.13 loses properties without the rewrite; if this passes, the rewrite may no longer be needed")

	good := junit(rewritten.Bytes())
	require.NoError(t, good.Check(req))
	require.Len(t, good.Suites, 1)
	assert.Len(t, good.Suites[0].Cases, 3)
}

func TestCheckFindsInconsistentCounts(t *testing.T) {
	doc := `<testsuites tests="2" failures="0"><testsuite name="p" tests="3" failures="0" skipped="0">
<testcase classname="p" name="TestA"><properties><property name="dut.name" value="x"></property></properties></testcase>
<testcase classname="p" name="TestA"></testcase></testsuite></testsuites>`
	j, err := ParseJUnit(strings.NewReader(doc))
	require.NoError(t, err)
	err = j.Check(Requirements{MinPassed: 1, Properties: []string{"dut.name"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "holds 2 testcases")
	assert.Contains(t, err.Error(), "twice")
	assert.Contains(t, err.Error(), "lacks properties dut.name")
}
