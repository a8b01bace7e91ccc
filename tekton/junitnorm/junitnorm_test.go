package junitnorm

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/tekton/internal/junitxsd"
)

// testdata/gotestsum-mixed.xml and .jsonl are what gotestsum v1.13.0 wrote
// (--junitfile, --jsonfile, relative suite and class names) for a module of
// three packages: "ok" (a passing test with a property, a failing one with a
// property and a control character in its message, a skip, a failing
// subtest), "bad" (does not compile) and "tm" (TestMain exits 3 after its
// tests pass).

func normalizeFile(t *testing.T, opts Options) *Suites {
	t.Helper()
	f, err := os.Open("testdata/gotestsum-mixed.xml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := Normalize(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func find(t *testing.T, s *Suites, suite, name string) *Case {
	t.Helper()
	for i := range s.Suites {
		if s.Suites[i].Name != suite {
			continue
		}
		for j := range s.Suites[i].Cases {
			if s.Suites[i].Cases[j].Name == name {
				return &s.Suites[i].Cases[j]
			}
		}
	}
	t.Fatalf("no testcase %s.%s", suite, name)
	return nil
}

// validate checks a written file against Jenkins xunit's junit-10.xsd.
func validate(t *testing.T, s *Suites) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := s.Write(&buf); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "junit.xml")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("xmllint"); err != nil {
		t.Fatal("xmllint is needed for the schema check: apt-get install libxml2-utils")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "xmllint", "--noout", "--schema", junitxsd.Path(t), path).CombinedOutput(); err != nil {
		t.Fatalf("not valid against junit-10.xsd: %v\n%s\n%s", err, out, buf.Bytes())
	}
	return buf.Bytes()
}

func TestRawGotestsumIsInvalid(t *testing.T) {
	// The reason this package exists: the schema rejects gotestsum's file.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "xmllint", "--noout", "--schema", junitxsd.Path(t), "testdata/gotestsum-mixed.xml").CombinedOutput()
	if err == nil {
		t.Fatal("gotestsum's own file passed the schema; is the check working?")
	}
	for _, want := range []string{"'errors' is required", "'0.055000' is not accepted", "properties': This element is not expected"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("xmllint does not say %q:\n%s", want, out)
		}
	}
}

func TestNormalizeCountsAndValidity(t *testing.T) {
	stream, err := os.Open("testdata/gotestsum-mixed.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	s := normalizeFile(t, Options{Stream: stream})
	out := validate(t, s)

	// gotestsum said tests=6 failures=5 errors=1 over 4 suites, one of them
	// nameless and empty, and bad's suite said tests=0 while holding a case.
	if len(s.Suites) != 3 {
		t.Fatalf("%d suites, want 3 (the empty nameless one dropped)", len(s.Suites))
	}
	c := s.Counts()
	if c != (Counts{Tests: 8, Passed: 2, Failed: 5, Skipped: 1, Errors: 1}) {
		t.Errorf("counts %+v", c)
	}
	if s.Tests != 8 || s.Failures != 4 || s.Errors != 1 {
		t.Errorf("testsuites tests=%d failures=%d errors=%d", s.Tests, s.Failures, s.Errors)
	}
	for _, su := range s.Suites {
		var f, e, sk int
		for _, tc := range su.Cases {
			if tc.Classname == "" {
				t.Errorf("%s.%s has no classname", su.Name, tc.Name)
			}
			switch {
			case tc.Error != nil:
				e++
			case tc.Failure != nil:
				f++
			case tc.Skipped != nil:
				sk++
			}
		}
		if su.Tests != len(su.Cases) || su.Failures != f || su.Errors != e || su.Skipped != sk {
			t.Errorf("suite %s: tests=%d failures=%d errors=%d skipped=%d for %d cases (%d/%d/%d)", su.Name, su.Tests, su.Failures, su.Errors, su.Skipped, len(su.Cases), f, e, sk)
		}
	}
	if regexp.MustCompile(`time="\d+\.\d{4,}"`).Match(out) {
		t.Errorf("a time with six decimals survived:\n%s", out)
	}

	build := find(t, s, "bad", "TestMain")
	if build.Error == nil || build.Failure != nil {
		t.Fatalf("the build failure is not an <error>: %+v", build)
	}
	if !strings.Contains(build.Error.Text, "undefined: undefined") {
		t.Errorf("the build error lacks the compiler's output:\n%s", build.Error.Text)
	}
	if tm := find(t, s, "tm", "TestMain"); tm.Failure == nil || tm.Classname != "tm" {
		t.Errorf("TestMain's exit: %+v", tm)
	}

	fail := find(t, s, "ok", "TestFail")
	if fail.Failure.Message != "ok_test.go:4: boom <&> \x01 ctrl" && fail.Failure.Message != "ok_test.go:4: boom <&> \uFFFD ctrl" {
		t.Errorf("failure message %q", fail.Failure.Message)
	}
	if v, ok := fail.Prop("dut.name"); !ok || v != "y" {
		t.Errorf("TestFail's property dut.name = %q, %v", v, ok)
	}
	if fail.Properties != nil || !strings.Contains(fail.SystemOut.Text, "[[PROPERTY|dut.name=y]]") {
		t.Errorf("the property is not in system-out: %+v", fail)
	}
	if v, _ := find(t, s, "ok", "TestPass").Prop("dut.name"); v != "x" {
		t.Errorf("TestPass's dut.name = %q", v)
	}
	// And as properties of the suite, named after the testcase.
	suiteProps := map[string]string{}
	for _, su := range s.Suites {
		if su.Name == "ok" && su.Properties != nil {
			for _, p := range su.Properties.Items {
				suiteProps[p.Name] = p.Value
			}
		}
	}
	if suiteProps["TestFail:dut.name"] != "y" || suiteProps["TestPass:dut.name"] != "x" {
		t.Errorf("suite properties by testcase: %v", suiteProps)
	}
	if sub := find(t, s, "ok", "TestSub/a"); sub.Failure.Message != "ok_test.go:6: sub fails" {
		t.Errorf("subtest message %q", sub.Failure.Message)
	}
}

func TestNormalizeWithoutStream(t *testing.T) {
	s := normalizeFile(t, Options{})
	validate(t, s)
	if b := find(t, s, "bad", "TestMain"); b.Error == nil || !strings.Contains(b.Error.Text, "[build failed]") {
		t.Errorf("without the stream the build error still says what failed: %+v", b.Error)
	}
}

func TestPropertiesElementMode(t *testing.T) {
	s := normalizeFile(t, Options{CaseProperties: PropertiesElement})
	tc := find(t, s, "ok", "TestPass")
	if tc.Properties == nil || tc.SystemOut != nil {
		t.Fatalf("element mode moved the properties: %+v", tc)
	}
	if _, err := Normalize(strings.NewReader("<testsuites/>"), Options{CaseProperties: "attributes"}); err == nil {
		t.Error("an unknown mode was accepted")
	}
}

// hwReport is a gotestsum file with hardware testcases whose console logs
// live in dir.
func hwReport(dir string) string {
	return `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="3" failures="2" errors="0" time="12.345678">
	<testsuite tests="3" failures="2" time="12.345678" name="hw" timestamp="2026-01-02T03:04:05Z">
		<testcase classname="hw" name="TestAssert" time="4.000000">
			<properties>
				<property name="artifacts" value="` + dir + `/_artifacts/1"></property>
				<property name="dut.console_log" value="` + dir + `/_artifacts/1/console.log"></property>
				<property name="dut.image" value="/images/os.img.zst"></property>
			</properties>
			<failure message="Failed" type="">=== RUN   TestAssert
    reserve.go:109: discover: driver qemu found 1 device(s) in 3ms
    hw_test.go:17: jumpstarter: flashing /images/os.img.zst onto qemu-0
    dut.go:460: jumpstarter: flash qemu-0: 100%, 48/48 MiB, 264.4 MB/s
    hw_test.go:19: jumpstarter: qemu-0 reached the login prompt 4.2s after power-on
    hw_test.go:23: 
        	Error Trace:	/src/hw_test.go:23
        	Error:      	Not equal: 
        	            	expected: "2.0"
        	Messages:   	wrong release
    session.go:367: release: unlocked qemu/qemu-0
--- FAIL: TestAssert (4.00s)
</failure>
		</testcase>
		<testcase classname="hw" name="TestTimeout" time="8.000000">
			<properties>
				<property name="dut.console_log" value="` + dir + `/_artifacts/2/console.log"></property>
			</properties>
			<failure message="Failed" type="">=== RUN   TestTimeout
    hw_test.go:30: jumpstarter: the DUT did not reach a logged-in shell: console qemu-0: timed out after 8s waiting for a login prompt; unmatched output after the cursor:
        	| stage1: switching to the root file system
--- FAIL: TestTimeout (8.00s)
</failure>
		</testcase>
		<testcase classname="hw" name="TestGone" time="1.000000">
			<properties>
				<property name="dut.console_log" value="` + dir + `/_artifacts/3/console.log"></property>
			</properties>
		</testcase>
	</testsuite>
</testsuites>
`
}

func TestConsoleTailAndRelativePaths(t *testing.T) {
	dir := t.TempDir()
	var log strings.Builder
	for i := 1; i <= 100; i++ {
		log.WriteString("10:00:00.000000 | line " + strings.Repeat("x", i%3) + string(rune('0'+i%10)) + "\n")
	}
	log.WriteString("10:00:01.000000 | the last line ]]> with a CDATA end\n")
	for _, n := range []string{"1", "2"} {
		if err := os.MkdirAll(filepath.Join(dir, "_artifacts", n), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "_artifacts", n, "console.log"), []byte(log.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err := Normalize(strings.NewReader(hwReport(dir)), Options{TailLines: 10, RelativeBase: dir, RelativeTo: dir})
	if err != nil {
		t.Fatal(err)
	}
	out := validate(t, s)

	a := find(t, s, "hw", "TestAssert")
	if want := "hw_test.go:23: Not equal: wrong release"; a.Failure.Message != want {
		t.Errorf("message %q, want %q", a.Failure.Message, want)
	}
	if !strings.Contains(a.Failure.Text, "--- DUT console, last 10 lines of console.log ---") ||
		!strings.Contains(a.Failure.Text, "the last line ]]> with a CDATA end") ||
		strings.Count(a.Failure.Text, " | line ") != 9 {
		t.Errorf("console tail:\n%s", a.Failure.Text)
	}
	if v, _ := a.Prop("dut.console_log"); v != "_artifacts/1/console.log" {
		t.Errorf("dut.console_log = %q, want it relative", v)
	}
	if v, _ := a.Prop("dut.image"); v != "/images/os.img.zst" {
		t.Errorf("a path outside the base changed: %q", v)
	}

	to := find(t, s, "hw", "TestTimeout")
	if strings.Contains(to.Failure.Text, "--- DUT console") {
		t.Errorf("the tail was appended to a failure that quotes the console:\n%s", to.Failure.Text)
	}
	if !strings.HasPrefix(to.Failure.Message, "hw_test.go:30: jumpstarter: the DUT did not reach") {
		t.Errorf("message %q", to.Failure.Message)
	}
	if g := find(t, s, "hw", "TestGone"); g.Failure != nil {
		t.Errorf("a passing test got a failure")
	}
	if s.Time != "12.346" {
		t.Errorf("time %q", s.Time)
	}
	if !bytes.Contains(out, []byte("]]]]><![CDATA[>")) {
		t.Errorf("a CDATA end inside the text was not split")
	}

	// A failed test whose console log is gone says so instead of a tail.
	if err := os.RemoveAll(filepath.Join(dir, "_artifacts", "1")); err != nil {
		t.Fatal(err)
	}
	s, err = Normalize(strings.NewReader(hwReport(dir)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a := find(t, s, "hw", "TestAssert"); !strings.Contains(a.Failure.Text, "console.log does not exist") {
		t.Errorf("missing console log:\n%s", a.Failure.Text)
	}
}

func TestFailureMessage(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"=== RUN   T\n    a_test.go:3: first log\n    a_test.go:5: the failure\n--- FAIL: T (0.00s)\n", "a_test.go:5: the failure"},
		{"=== RUN   T\n--- FAIL: T (0.00s)\n", ""},
		{"    helper.go:9: jumpstarter: flashing x onto y\n    helper.go:10: jumpstarter: infrastructure failure: power: no device\n", "helper.go:10: jumpstarter: infrastructure failure: power: no device"},
		{"    a_test.go:1: " + strings.Repeat("é", 400) + "\n", "a_test.go:1: " + strings.Repeat("é", 143) + "..."},
	} {
		if got := failureMessage(c.text); got != c.want {
			t.Errorf("failureMessage(%q) = %q, want %q", c.text, got, c.want)
		}
	}
}

func TestXMLSafe(t *testing.T) {
	if got := xmlSafe("a\x00b\x1bc\td\n\uFFFE\xff"); got != "a\uFFFDb\uFFFDc\td\n\uFFFD\uFFFD" {
		t.Errorf("xmlSafe = %q", got)
	}
}
