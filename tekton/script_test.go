package tekton

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"

	"github.com/jumpstarter-dev/jumpstarter-go/tekton/internal/inline"
	"github.com/jumpstarter-dev/jumpstarter-go/tekton/internal/junitxsd"
	"github.com/jumpstarter-dev/jumpstarter-go/tekton/junitnorm"
)

// repoRoot is the library's module, whose examples the script runs.
const repoRoot = ".."

func readTask(t *testing.T, file string) *v1.Task {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var task v1.Task
	if err := decodeStrict(data, &task); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return &task
}

// TestTaskScriptIsRunTestsSh: the Task's step script is run-tests.sh byte for
// byte, and `go generate` would change nothing.
func TestTaskScriptIsRunTestsSh(t *testing.T) {
	const yamlFile, scriptFile = "task-go-hardware-tests.yaml", "run-tests.sh"
	script, err := os.ReadFile(scriptFile)
	if err != nil {
		t.Fatal(err)
	}
	task := readTask(t, yamlFile)
	if len(task.Spec.Steps) != 1 {
		t.Fatalf("%s has %d steps, want 1", yamlFile, len(task.Spec.Steps))
	}
	if got := task.Spec.Steps[0].Script; got != string(script) {
		t.Fatalf("the script of %s differs from %s (run `go generate` in tekton/):\n%s", yamlFile, scriptFile, firstDiff(got, string(script)))
	}
	y, err := os.ReadFile(yamlFile)
	if err != nil {
		t.Fatal(err)
	}
	regenerated, err := inline.Inline(y, script)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(regenerated, y) {
		t.Fatalf("go generate would rewrite %s", yamlFile)
	}
	if fi, err := os.Stat(scriptFile); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("%s is not executable (%v)", scriptFile, err)
	}
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < max(len(al), len(bl)); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d: YAML %q, file %q", i+1, x, y)
		}
	}
	return "(they differ only in length)"
}

// TestInlineRejects: the generator refuses scripts YAML would not keep as
// they are.
func TestInlineRejects(t *testing.T) {
	y := []byte("steps:\n  - name: x\n    script: |\n      old\n  - name: y\n")
	for name, script := range map[string]string{
		"no final newline":  "echo hi",
		"two final newline": "echo hi\n\n",
		"blank-only line":   "echo hi\n  \necho ho\n",
		"leading space":     " echo hi\n",
	} {
		if _, err := inline.Inline(y, []byte(script)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	got, err := inline.Inline(y, []byte("#!/bin/sh\n\n\techo \"$(date)\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := "steps:\n  - name: x\n    script: |\n      #!/bin/sh\n\n      \techo \"$(date)\"\n  - name: y\n"
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

// TestContainerfilePins: the step image takes gotestsum from tools/go.mod
// (pinned v1.13.0) and a Go image of the minor version the modules declare.
func TestContainerfilePins(t *testing.T) {
	cf, err := os.ReadFile("Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	toolsMod, err := os.ReadFile(filepath.Join(repoRoot, "tools", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\s*gotest\.tools/gotestsum v1\.13\.0\b`).Match(toolsMod) {
		t.Errorf("tools/go.mod does not pin gotest.tools/gotestsum v1.13.0")
	}
	if !strings.Contains(string(cf), "go -C tools build -trimpath -o /out/ gotest.tools/gotestsum") {
		t.Errorf("the Containerfile does not build gotestsum from tools/go.mod")
	}
	m := regexp.MustCompile(`(?m)^ARG GO_IMAGE=\S+:(\d+\.\d+)-\S+$`).FindSubmatch(cf)
	if m == nil {
		t.Fatal("no `ARG GO_IMAGE=...:1.NN-...` in the Containerfile")
	}
	for _, mod := range []string{filepath.Join(repoRoot, "go.mod"), filepath.Join(repoRoot, "tools", "go.mod"), "go.mod"} {
		data, err := os.ReadFile(mod)
		if err != nil {
			t.Fatal(err)
		}
		gm := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(data)
		if gm == nil || string(gm[1]) != string(m[1]) {
			t.Errorf("%s declares go %s, the Containerfile's image is Go %s", mod, gm[1], m[1])
		}
	}
	for _, pkg := range []string{"libusb-1.0-0", "libusb-1.0-0-dev", "xz-utils", "zstd", "curl"} {
		if !regexp.MustCompile(`\b` + regexp.QuoteMeta(pkg) + `\b`).Match(cf) {
			t.Errorf("the Containerfile does not install %s", pkg)
		}
	}
}

// tools builds what the step image holds (gotestsum, artifacts2attr,
// junitnorm) into a folder, the same way the Containerfile does, once.
var tools = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "tekton-tools-")
	if err != nil {
		return "", err
	}
	toolsDir = dir
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	abs, err := filepath.Abs(repoRoot)
	if err != nil {
		return "", err
	}
	for _, b := range [][]string{
		{"-C", filepath.Join(abs, "tools"), "build", "-o", dir + "/", "gotest.tools/gotestsum"},
		{"-C", abs, "build", "-o", dir + "/", "./cmd/artifacts2attr"},
		{"build", "-o", dir + "/", "./cmd/junitnorm"},
	} {
		cmd := exec.CommandContext(ctx, "go", b...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go %s: %w\n%s", strings.Join(b, " "), err, out)
		}
	}
	return dir, nil
})

var toolsDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if toolsDir != "" {
		os.RemoveAll(toolsDir)
	}
	os.Exit(code)
}

// qemuImages returns the folder with the QEMU virtual DUT's images, or skips.
func qemuImages(t *testing.T, need ...string) string {
	t.Helper()
	dir := os.Getenv("DUT_QEMU_IMAGES")
	if dir == "" {
		dir = filepath.Join(repoRoot, "out", "qemu-images")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range need {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Skipf("the QEMU virtual DUT's images are missing (%v): run `make qemu-images` in the repository root, or set DUT_QEMU_IMAGES", err)
		}
	}
	qemu := os.Getenv("DUT_QEMU_BINARY")
	if qemu == "" {
		qemu = "qemu-system-x86_64"
	}
	if _, err := exec.LookPath(qemu); err != nil {
		t.Skipf("%s is not installed (Debian: qemu-system-x86; `make qemu-deps`)", qemu)
	}
	return dir
}

// xmllint validates a JUnit file against Jenkins xunit's junit-10.xsd.
func xmllint(t *testing.T, file string) {
	t.Helper()
	if _, err := exec.LookPath("xmllint"); err != nil {
		t.Fatalf("xmllint is needed to validate the JUnit file against the schema: apt-get install libxml2-utils")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "xmllint", "--noout", "--schema", junitxsd.Path(t), file).CombinedOutput()
	if err != nil {
		t.Fatalf("%s is not valid against junit-10.xsd: %v\n%s", file, err, out)
	}
}

// stepRun is one run of run-tests.sh with the Task's workspaces as folders.
type stepRun struct {
	artifacts, results string
	exitCode           int
	log                string
}

func (r stepRun) result(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(r.results, name))
	if err != nil {
		t.Fatalf("result %s: %v\n%s", name, err, r.log)
	}
	return string(b)
}

// runStep runs run-tests.sh as the Task's step would: env from the params,
// the workspaces as folders, results as files, extra args as extra-env.
func runStep(t *testing.T, env map[string]string, args ...string) stepRun {
	t.Helper()
	bin, err := tools()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	r := stepRun{artifacts: filepath.Join(tmp, "artifacts"), results: filepath.Join(tmp, "results")}
	for _, d := range []string{r.artifacts, r.results} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	abs, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs("run-tests.sh")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{
		"SOURCE_DIR":     abs, // the source workspace, context-dir "."
		"ARTIFACTS_DIR":  r.artifacts,
		"RESULT_PASSED":  filepath.Join(r.results, "passed"),
		"RESULT_FAILED":  filepath.Join(r.results, "failed"),
		"RESULT_SKIPPED": filepath.Join(r.results, "skipped"),
		"RESULT_JUNIT":   filepath.Join(r.results, "junit"),
		"DUT_REQUIRE":    "1",
		"DUT_LOCK_DIR":   filepath.Join(tmp, "locks"),
		"DUT_QEMU_DIR":   filepath.Join(tmp, "qemu"),
		"TEST_TIMEOUT":   "8m",
		"PATH":           bin + string(os.PathListSeparator) + os.Getenv("PATH"),
	}
	for k, v := range env {
		vars[k] = v
	}
	var environ []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "DUT_") || vars[k] != "" {
			continue // only what this run sets
		}
		environ = append(environ, kv)
	}
	for k, v := range vars {
		environ = append(environ, k+"="+v)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...)
	cmd.Env = environ
	cmd.Dir = tmp // the script must not depend on where it starts
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 30 * time.Second
	err = cmd.Run()
	r.log = out.String()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.exitCode = ee.ExitCode()
	case err != nil:
		t.Fatalf("run-tests.sh: %v\n%s", err, r.log)
	}
	if ctx.Err() != nil {
		t.Fatalf("run-tests.sh did not finish in time\n%s", r.log)
	}
	return r
}

// readReport reads and schema-checks the JUnit file the run named in its
// junit result.
func readReport(t *testing.T, r stepRun) (*junitnorm.Suites, string) {
	t.Helper()
	rel := r.result(t, "junit")
	if rel != "junit.xml" {
		t.Fatalf("junit result %q, want junit.xml", rel)
	}
	path := filepath.Join(r.artifacts, rel)
	xmllint(t, path)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := junitnorm.Read(f)
	if err != nil {
		t.Fatal(err)
	}
	// Counts agree with the testcases, in total and per suite.
	c := s.Counts()
	if s.Tests != c.Tests || s.Failures+s.Errors != c.Failed {
		t.Errorf("testsuites says tests=%d failures=%d errors=%d; the testcases: %v", s.Tests, s.Failures, s.Errors, c)
	}
	for _, su := range s.Suites {
		if su.Tests != len(su.Cases) {
			t.Errorf("suite %s says tests=%d, holds %d testcases", su.Name, su.Tests, len(su.Cases))
		}
	}
	for name, want := range map[string]int{"passed": c.Passed, "failed": c.Failed, "skipped": c.Skipped} {
		if got := r.result(t, name); got != strconv.Itoa(want) {
			t.Errorf("result %s = %q, the JUnit file says %d", name, got, want)
		}
	}
	return s, filepath.Dir(path)
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// checkEvidence: a hardware testcase carries the DUT's properties, and its
// console log and artifacts folder exist where the (relative) properties say.
func checkEvidence(t *testing.T, tc junitnorm.Case, dir, imageSHA string) {
	t.Helper()
	id := tc.Classname + "." + tc.Name
	for _, p := range []string{"dut.driver", "dut.name", "dut.image", "dut.image_sha256", "dut.flash_mbps", "dut.boot_seconds", "dut.console_log", "artifacts"} {
		if v, ok := tc.Prop(p); !ok || v == "" {
			t.Errorf("%s lacks the property %s", id, p)
		}
	}
	if v, _ := tc.Prop("dut.driver"); v != "qemu" {
		t.Errorf("%s: dut.driver=%q, want qemu", id, v)
	}
	if v, _ := tc.Prop("dut.image_sha256"); v != imageSHA {
		t.Errorf("%s: dut.image_sha256=%q, want the image's %s", id, v, imageSHA)
	}
	if v, _ := tc.Prop("dut.flash_mbps"); v != "" {
		if f, err := strconv.ParseFloat(v, 64); err != nil || f <= 0 {
			t.Errorf("%s: dut.flash_mbps=%q", id, v)
		}
	}
	for _, p := range []string{"dut.console_log", "artifacts"} {
		v, _ := tc.Prop(p)
		if v == "" {
			continue
		}
		if filepath.IsAbs(v) {
			t.Errorf("%s: %s=%q is absolute; the report should point into its own folder", id, p, v)
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, v))
		if err != nil {
			t.Errorf("%s: %s: %v", id, p, err)
		} else if p == "dut.console_log" && fi.Size() == 0 {
			t.Errorf("%s: the console log is empty", id)
		}
	}
}

// TestRunTestsScriptQEMU runs the Task's script outside Tekton, with the
// workspaces as folders, on the library's examples against the QEMU virtual
// DUT: a passing run, a run where a test's assertion fails, and a run where a
// boot times out. Each must leave a schema-valid JUnit file with the DUT's
// properties, the test2json stream, the artifacts and the results, and only
// the passing run may exit 0.
func TestRunTestsScriptQEMU(t *testing.T) {
	images := qemuImages(t, "dut-1.0.0.img.zst", "hang.img")
	if _, err := tools(); err != nil {
		t.Fatal(err)
	}
	imageSHA := sha256File(t, filepath.Join(images, "dut-1.0.0.img.zst"))
	base := map[string]string{
		"PACKAGES":   "./examples/...",
		"IMAGES_DIR": images,
		"IMAGE":      "dut-1.0.0.img.zst",
		"DUT_DRIVER": "qemu",
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}

	t.Run("pass", func(t *testing.T) {
		t.Parallel()
		r := runStep(t, with(), "DUT_EXPECT_RELEASE=1.0.0")
		if r.exitCode != 0 {
			t.Fatalf("exit code %d, want 0\n%s", r.exitCode, r.log)
		}
		s, dir := readReport(t, r)
		c := s.Counts()
		if c.Failed != 0 || c.Skipped != 0 || c.Passed < 4 {
			t.Fatalf("counts %v, want at least 4 passed and nothing else\n%s", c, r.log)
		}
		var evidence bool
		for _, su := range s.Suites {
			for _, tc := range su.Cases {
				checkEvidence(t, tc, dir, imageSHA)
				if tc.Name == "TestEvidence" {
					evidence = true
					a, _ := tc.Prop("artifacts")
					if _, err := os.Stat(filepath.Join(dir, a, "os-release")); err != nil {
						t.Errorf("TestEvidence's own artifact: %v", err)
					}
				}
			}
		}
		if !evidence {
			t.Error("no testcase TestEvidence")
		}
		stream, err := os.ReadFile(filepath.Join(r.artifacts, "test2json.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(stream, []byte(`"Action":"attr"`)) || !bytes.Contains(stream, []byte(`"Key":"artifacts"`)) || bytes.Contains(stream, []byte(`"Action":"artifacts"`)) {
			t.Error("test2json.jsonl does not hold the stream gotestsum read (attr events, artifacts rewritten by artifacts2attr)")
		}
	})

	t.Run("assertion-fails", func(t *testing.T) {
		t.Parallel()
		r := runStep(t, with("RUN", "^TestFlashedImageBoots$"), "DUT_EXPECT_RELEASE=9.9.9")
		if r.exitCode == 0 {
			t.Fatalf("exit code 0 for a failing test\n%s", r.log)
		}
		s, dir := readReport(t, r)
		tc := onlyCase(t, s)
		if tc.Failure == nil {
			t.Fatalf("TestFlashedImageBoots did not fail\n%s", r.log)
		}
		if !strings.HasPrefix(tc.Failure.Message, "boot_test.go:") || !strings.Contains(tc.Failure.Message, "Not equal") {
			t.Errorf("failure message %q, want the assertion's location and text", tc.Failure.Message)
		}
		// The assertion does not quote the console: junitnorm appends its tail.
		if !strings.Contains(tc.Failure.Text, "--- DUT console, last ") || !strings.Contains(tc.Failure.Text, "login") {
			t.Errorf("the failure text lacks the console tail:\n%s", tc.Failure.Text)
		}
		checkEvidence(t, tc, dir, imageSHA)
	})

	t.Run("boot-times-out", func(t *testing.T) {
		t.Parallel()
		r := runStep(t, with("RUN", "^TestFlashedImageBoots$", "IMAGE", "hang.img"), "DUT_BOOT_TIMEOUT=8s")
		if r.exitCode == 0 {
			t.Fatalf("exit code 0 for a failing test\n%s", r.log)
		}
		s, _ := readReport(t, r)
		tc := onlyCase(t, s)
		if tc.Failure == nil {
			t.Fatalf("TestFlashedImageBoots did not fail\n%s", r.log)
		}
		if !strings.Contains(tc.Failure.Message, "jumpstarter: ") {
			t.Errorf("failure message %q, want the harness's", tc.Failure.Message)
		}
		// The harness quotes the console itself; nothing is appended twice.
		if !strings.Contains(tc.Failure.Text, "after the cursor") {
			t.Errorf("the failure text does not quote the console:\n%s", tc.Failure.Text)
		}
		if strings.Contains(tc.Failure.Text, "--- DUT console, last ") {
			t.Errorf("the console tail was appended to a failure that quotes the console")
		}
		if v, _ := tc.Prop("dut.driver"); v != "qemu" {
			t.Errorf("dut.driver=%q on the failed testcase", v)
		}
	})
}

func onlyCase(t *testing.T, s *junitnorm.Suites) junitnorm.Case {
	t.Helper()
	var cases []junitnorm.Case
	for _, su := range s.Suites {
		cases = append(cases, su.Cases...)
	}
	if len(cases) != 1 {
		t.Fatalf("%d testcases, want 1", len(cases))
	}
	return cases[0]
}

// TestRunTestsScriptBadInput: a misconfigured step fails at once, with
// results written, before any test runs.
func TestRunTestsScriptBadInput(t *testing.T) {
	r := runStep(t, map[string]string{"SOURCE_DIR": filepath.Join(t.TempDir(), "nope")})
	if r.exitCode != 2 || !strings.Contains(r.log, "does not exist") {
		t.Errorf("missing source folder: exit code %d\n%s", r.exitCode, r.log)
	}
	if got := r.result(t, "failed"); got != "0" {
		t.Errorf("failed result %q", got)
	}
	r = runStep(t, map[string]string{"PACKAGES": "./examples/..."}, "not-an-assignment")
	if r.exitCode != 2 || !strings.Contains(r.log, "is not NAME=VALUE") {
		t.Errorf("bad extra-env: exit code %d\n%s", r.exitCode, r.log)
	}
	r = runStep(t, map[string]string{"JUNIT_FILE": "../junit.xml"})
	if r.exitCode != 2 || !strings.Contains(r.log, "inside the artifacts folder") {
		t.Errorf("JUnit file outside the workspace: exit code %d\n%s", r.exitCode, r.log)
	}
}

// TestPrepareImageScript runs the prepare-image Task's script with a file://
// URL: the image and its bmap land in the images folder and the results name
// it; a wrong SHA-256 fails the step and leaves no image.
func TestPrepareImageScript(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed (the step image has it)")
	}
	task := readTask(t, "task-prepare-image.yaml")
	st := task.Spec.Steps[0]
	var names []string
	for _, e := range st.Env {
		names = append(names, e.Name)
	}
	slices.Sort(names)
	want := []string{"FETCH_BMAP", "FILE_NAME", "IMAGES_DIR", "RESULT_IMAGE", "RESULT_SHA256", "URL", "WANT_SHA256"}
	if !slices.Equal(names, want) {
		t.Fatalf("the step's env is %v; this test sets %v", names, want)
	}
	src := t.TempDir()
	img := filepath.Join(src, "os.img.zst")
	if err := os.WriteFile(img, []byte("not really zstd, but bytes to fetch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "os.img.bmap"), []byte("<bmap/>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256File(t, img)

	run := func(wantSHA string) (dir, results string, code int, log string) {
		dir, results = t.TempDir(), t.TempDir()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", "-c", st.Script)
		cmd.Env = append(os.Environ(),
			"URL=file://"+img, "WANT_SHA256="+wantSHA, "FILE_NAME=", "FETCH_BMAP=true", "IMAGES_DIR="+dir,
			"RESULT_IMAGE="+filepath.Join(results, "image"), "RESULT_SHA256="+filepath.Join(results, "sha256"))
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return dir, results, code, string(out)
	}

	dir, results, code, log := run(strings.ToUpper(sum))
	if code != 0 {
		t.Fatalf("exit code %d\n%s", code, log)
	}
	if got := sha256File(t, filepath.Join(dir, "os.img.zst")); got != sum {
		t.Errorf("fetched image sha256 %s, want %s", got, sum)
	}
	if _, err := os.Stat(filepath.Join(dir, "os.img.bmap")); err != nil {
		t.Errorf("bmap: %v", err)
	}
	for name, want := range map[string]string{"image": "os.img.zst", "sha256": sum} {
		if b, err := os.ReadFile(filepath.Join(results, name)); err != nil || string(b) != want {
			t.Errorf("result %s = %q (%v), want %q", name, b, err, want)
		}
	}

	dir, _, code, log = run(strings.Repeat("0", 64))
	if code == 0 || !strings.Contains(log, "SHA-256 mismatch") {
		t.Errorf("a wrong SHA-256: exit code %d\n%s", code, log)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a wrong SHA-256 left files: %v", entries)
	}
}
