// Package junitnorm turns the JUnit XML that gotestsum v1.13 writes into a
// file that JUnit schema validators accept, while keeping what a reader needs:
// the counts, each testcase's properties and, for a failed hardware test, the
// tail of the DUT's console.
//
// gotestsum's file is rejected by Jenkins xunit's junit-10.xsd for three
// reasons: testsuites lack the required errors attribute, times carry six
// decimals where the schema allows three, and <properties> inside a <testcase>
// is an extension that no published JUnit schema allows (pytest, googletest
// and jest-junit write it too, each warning that it breaks validation). It
// also writes a nameless, empty testsuite when a package fails to build, gives
// the build-failed and TestMain testcases an empty classname, and leaves the
// counts of such a package disagreeing with its testcases.
//
// [Normalize] fixes each of these:
//
//   - counts are recomputed from the testcases, per suite and in total, and
//     every suite carries errors;
//   - times are rounded to milliseconds;
//   - a testcase's properties become lines "[[PROPERTY|name=value]]" in its
//     <system-out>, and properties "<testcase>:<name>" of its testsuite
//     (the system-out convention is the one Testmo's JUnit format documents and
//     several report parsers read), or stay a <properties> element when
//     [Options.CaseProperties] is [PropertiesElement];
//   - the empty suite goes, a testcase without classname gets its suite's
//     name, and a package that failed to build becomes an <error> whose text
//     holds the compiler's output (from the test2json stream, when given);
//   - a failed testcase with a console log (property dut.console_log) gets the
//     log's last lines appended to its failure text, unless the failure
//     already quotes the console (the harness does so on expect timeouts);
//   - a failure's message says what failed (the first "file.go:line: text" of
//     the test's output) instead of gotestsum's "Failed";
//   - optionally, property values that are paths under a base folder become
//     relative to the JUnit file, so the report still points at its artifacts
//     once the artifacts folder is copied elsewhere.
package junitnorm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// CasePropertiesMode says where a testcase's properties go.
type CasePropertiesMode string

const (
	// PropertiesSystemOut writes each property as a line
	// "[[PROPERTY|name=value]]" in the testcase's <system-out>. The file
	// stays valid against Jenkins xunit's junit-10.xsd.
	PropertiesSystemOut CasePropertiesMode = "system-out"
	// PropertiesElement keeps gotestsum's <properties> element inside the
	// testcase, which pytest-style readers understand but no JUnit schema
	// allows.
	PropertiesElement CasePropertiesMode = "element"
)

// Property names the harness records that the normaliser reads.
const (
	// ConsoleLogProperty names the test's console log file.
	ConsoleLogProperty = "dut.console_log"
)

// tailMarkers are phrases with which the harness's console errors quote the
// console themselves (harness/console: TimeoutError, ClosedError,
// WatchError); a failure holding one needs no tail appended.
var tailMarkers = []string{
	"unmatched output after the cursor:",
	"nothing arrived after the cursor",
	"; output around it:",
}

// Options tune [Normalize]. The zero value is usable.
type Options struct {
	// CaseProperties says where testcase properties go; empty means
	// PropertiesSystemOut.
	CaseProperties CasePropertiesMode
	// TailLines is how many lines of a failed test's console log are
	// appended to its failure; 0 means 40, negative means none.
	TailLines int
	// Stream is the test2json stream gotestsum read (its --jsonfile); when
	// set, a package that failed to build gets the compiler's output.
	Stream io.Reader
	// RelativeBase, when set with RelativeTo, rewrites property values that
	// are absolute paths under RelativeBase to paths relative to the folder
	// RelativeTo (usually the JUnit file's folder).
	RelativeBase, RelativeTo string
}

// Counts are the outcome of a report's testcases. Failed counts both
// failures and errors.
type Counts struct {
	Tests, Passed, Failed, Skipped, Errors int
}

func (c Counts) String() string {
	return fmt.Sprintf("%d tests: %d passed, %d failed (%d errors), %d skipped", c.Tests, c.Passed, c.Failed, c.Errors, c.Skipped)
}

// Suites is the root element, as read and as written.
type Suites struct {
	XMLName  xml.Name `xml:"testsuites"`
	Name     string   `xml:"name,attr,omitempty"`
	Tests    int      `xml:"tests,attr"`
	Failures int      `xml:"failures,attr"`
	Errors   int      `xml:"errors,attr"`
	Time     string   `xml:"time,attr,omitempty"`
	Suites   []Suite  `xml:"testsuite"`
}

// Suite is one package's testsuite.
type Suite struct {
	Name       string     `xml:"name,attr"`
	Tests      int        `xml:"tests,attr"`
	Failures   int        `xml:"failures,attr"`
	Errors     int        `xml:"errors,attr"`
	Skipped    int        `xml:"skipped,attr"`
	Time       string     `xml:"time,attr,omitempty"`
	Timestamp  string     `xml:"timestamp,attr,omitempty"`
	Properties *Props     `xml:"properties,omitempty"`
	Cases      []Case     `xml:"testcase"`
	SystemOut  *TextBlock `xml:"system-out,omitempty"`
	SystemErr  *TextBlock `xml:"system-err,omitempty"`
}

// Props wraps a list of properties.
type Props struct {
	Items []Property `xml:"property"`
}

// Property is one name/value pair.
type Property struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

// Case is one testcase.
type Case struct {
	Classname  string     `xml:"classname,attr"`
	Name       string     `xml:"name,attr"`
	Time       string     `xml:"time,attr,omitempty"`
	Properties *Props     `xml:"properties,omitempty"`
	Skipped    *Outcome   `xml:"skipped,omitempty"`
	Error      *Outcome   `xml:"error,omitempty"`
	Failure    *Outcome   `xml:"failure,omitempty"`
	SystemOut  *TextBlock `xml:"system-out,omitempty"`
	SystemErr  *TextBlock `xml:"system-err,omitempty"`
}

// Outcome is a <failure>, <error> or <skipped>.
type Outcome struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr,omitempty"`
	Text    string `xml:",cdata"`
}

// TextBlock is <system-out> or <system-err>.
type TextBlock struct {
	Text string `xml:",cdata"`
}

// Prop returns the value of the testcase property name, wherever it is kept.
func (c *Case) Prop(name string) (string, bool) {
	if c.Properties != nil {
		for _, p := range c.Properties.Items {
			if p.Name == name {
				return p.Value, true
			}
		}
	}
	if c.SystemOut != nil {
		for _, line := range strings.Split(c.SystemOut.Text, "\n") {
			if k, v, ok := parsePropertyLine(line); ok && k == name {
				return v, true
			}
		}
	}
	return "", false
}

// Read parses a JUnit file whose root is <testsuites>.
func Read(r io.Reader) (*Suites, error) {
	var s Suites
	if err := xml.NewDecoder(r).Decode(&s); err != nil {
		return nil, fmt.Errorf("parse JUnit XML: %w", err)
	}
	return &s, nil
}

// Write writes s as an indented XML document. Texts (failure output, system
// output) are written as CDATA so that their lines stay lines for a reader of
// the raw file; characters XML 1.0 cannot hold become U+FFFD.
func (s *Suites) Write(w io.Writer) error {
	s.sanitize()
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return fmt.Errorf("write JUnit XML: %w", err)
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(s); err != nil {
		return fmt.Errorf("write JUnit XML: %w", err)
	}
	if _, err := io.WriteString(w, "\n"); err != nil {
		return fmt.Errorf("write JUnit XML: %w", err)
	}
	return nil
}

func (s *Suites) sanitize() {
	fix := func(o *Outcome) {
		if o != nil {
			o.Text = xmlSafe(o.Text)
		}
	}
	fixBlock := func(b *TextBlock) {
		if b != nil {
			b.Text = xmlSafe(b.Text)
		}
	}
	for i := range s.Suites {
		su := &s.Suites[i]
		fixBlock(su.SystemOut)
		fixBlock(su.SystemErr)
		for j := range su.Cases {
			tc := &su.Cases[j]
			fix(tc.Failure)
			fix(tc.Error)
			fix(tc.Skipped)
			fixBlock(tc.SystemOut)
			fixBlock(tc.SystemErr)
		}
	}
}

// xmlSafe replaces the characters XML 1.0 cannot hold (most C0 controls,
// surrogates, U+FFFE/U+FFFF, invalid UTF-8) with U+FFFD. Attributes need no
// such care: encoding/xml escapes them itself.
func xmlSafe(s string) string {
	ok := func(r rune) bool {
		return r == '\t' || r == '\n' || r == '\r' ||
			(r >= 0x20 && r <= 0xD7FF) || (r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= 0x10FFFF)
	}
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !ok(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if !ok(r) {
			r = utf8.RuneError
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Counts tallies the testcases.
func (s *Suites) Counts() Counts {
	var c Counts
	for _, su := range s.Suites {
		for _, tc := range su.Cases {
			c.Tests++
			switch {
			case tc.Error != nil:
				c.Errors++
				c.Failed++
			case tc.Failure != nil:
				c.Failed++
			case tc.Skipped != nil:
				c.Skipped++
			default:
				c.Passed++
			}
		}
	}
	return c
}

// Normalize reads gotestsum's JUnit XML from r, fixes it as the package doc
// says, and returns the result.
func Normalize(r io.Reader, opts Options) (*Suites, error) {
	s, err := Read(r)
	if err != nil {
		return nil, err
	}
	if opts.CaseProperties == "" {
		opts.CaseProperties = PropertiesSystemOut
	}
	if opts.CaseProperties != PropertiesSystemOut && opts.CaseProperties != PropertiesElement {
		return nil, fmt.Errorf("unknown testcase properties mode %q (want %q or %q)", opts.CaseProperties, PropertiesSystemOut, PropertiesElement)
	}
	if opts.TailLines == 0 {
		opts.TailLines = 40
	}
	var builds map[string]string
	if opts.Stream != nil {
		if builds, err = buildOutputs(opts.Stream); err != nil {
			return nil, err
		}
	}

	kept := s.Suites[:0]
	for _, su := range s.Suites {
		if su.Name == "" && len(su.Cases) == 0 {
			continue // gotestsum's home for build output without a package
		}
		if su.Name == "" {
			su.Name = suiteNameFromCases(su.Cases)
		}
		su.Time = seconds(su.Time)
		for i := range su.Cases {
			moved := normalizeCase(&su.Cases[i], su.Name, builds, opts)
			// Also as suite properties named "<testcase>:<property>", the
			// one schema-valid element a reader can take them from.
			for _, p := range moved {
				if su.Properties == nil {
					su.Properties = &Props{}
				}
				su.Properties.Items = append(su.Properties.Items, Property{Name: su.Cases[i].Name + ":" + p.Name, Value: p.Value})
			}
		}
		kept = append(kept, su)
	}
	s.Suites = kept
	s.Time = seconds(s.Time)
	s.Tests, s.Failures, s.Errors = 0, 0, 0
	for i := range s.Suites {
		su := &s.Suites[i]
		su.Tests, su.Failures, su.Errors, su.Skipped = 0, 0, 0, 0
		for _, tc := range su.Cases {
			su.Tests++
			switch {
			case tc.Error != nil:
				su.Errors++
			case tc.Failure != nil:
				su.Failures++
			case tc.Skipped != nil:
				su.Skipped++
			}
		}
		s.Tests += su.Tests
		s.Failures += su.Failures
		s.Errors += su.Errors
	}
	return s, nil
}

// normalizeCase fixes one testcase; it returns the properties it moved out
// of the testcase (into its system-out), if any.
func normalizeCase(tc *Case, suite string, builds map[string]string, opts Options) []Property {
	if tc.Classname == "" {
		tc.Classname = suite
	}
	tc.Time = seconds(tc.Time)
	if f := tc.Failure; f != nil && tc.Name == "TestMain" && isBuildFailure(f.Text) {
		text := f.Text
		if out := builds[buildKey(f.Text)]; out != "" {
			text = out + text
		}
		tc.Error = &Outcome{Message: "package " + suite + " failed to build", Type: "BuildFailed", Text: text}
		tc.Failure = nil
	}
	if f := tc.Failure; f != nil {
		if msg := failureMessage(f.Text); msg != "" && (f.Message == "" || f.Message == "Failed") {
			f.Message = msg
		}
		if opts.TailLines > 0 && !quotesConsole(f.Text) {
			if path, ok := tc.Prop(ConsoleLogProperty); ok && path != "" {
				f.Text += consoleTail(path, opts.TailLines)
			}
		}
	}
	if opts.RelativeBase != "" && opts.RelativeTo != "" && tc.Properties != nil {
		for i, p := range tc.Properties.Items {
			tc.Properties.Items[i].Value = relative(p.Value, opts.RelativeBase, opts.RelativeTo)
		}
	}
	if opts.CaseProperties == PropertiesSystemOut && tc.Properties != nil {
		var b strings.Builder
		for _, p := range tc.Properties.Items {
			fmt.Fprintf(&b, "[[PROPERTY|%s=%s]]\n", p.Name, p.Value)
		}
		if tc.SystemOut != nil {
			b.WriteString(tc.SystemOut.Text)
		}
		tc.SystemOut = &TextBlock{Text: b.String()}
		moved := tc.Properties.Items
		tc.Properties = nil
		return moved
	}
	return nil
}

// parsePropertyLine reads a "[[PROPERTY|name=value]]" line.
func parsePropertyLine(line string) (name, value string, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimSpace(line), "[[PROPERTY|")
	if !found {
		return "", "", false
	}
	rest, found = strings.CutSuffix(rest, "]]")
	if !found {
		return "", "", false
	}
	return strings.Cut(rest, "=")
}

func suiteNameFromCases(cases []Case) string {
	for _, c := range cases {
		if c.Classname != "" {
			return c.Classname
		}
	}
	return "(unknown package)"
}

// seconds rounds a time attribute to milliseconds, as junit-10.xsd's
// SUREFIRE_TIME allows at most three decimals. A value that is not a number
// is dropped (the attribute is optional).
func seconds(v string) string {
	if v == "" {
		return ""
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 {
		return ""
	}
	return strconv.FormatFloat(f, 'f', 3, 64)
}

var buildFailedRE = regexp.MustCompile(`(?m)^FAIL\s+(\S+) \[(build|setup) failed\]`)

func isBuildFailure(text string) bool { return buildFailedRE.MatchString(text) }

// buildKey returns the package path of a "FAIL pkg [build failed]" line.
func buildKey(text string) string {
	m := buildFailedRE.FindStringSubmatch(text)
	if m == nil {
		return ""
	}
	return m[1]
}

// buildOutputs reads a test2json stream and returns the compiler output of
// each package whose build failed, keyed by package path.
func buildOutputs(r io.Reader) (map[string]string, error) {
	type event struct {
		ImportPath  string
		Package     string
		Action      string
		Output      string
		FailedBuild string
	}
	byImport := map[string]*strings.Builder{}
	failed := map[string]string{} // package -> import path of its failed build
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("{")) {
			continue
		}
		var ev event
		if err := json.Unmarshal(line, &ev); err != nil {
			continue // not test2json: go test prints some lines as they are
		}
		switch {
		case ev.Action == "build-output":
			b := byImport[ev.ImportPath]
			if b == nil {
				b = &strings.Builder{}
				byImport[ev.ImportPath] = b
			}
			b.WriteString(ev.Output)
		case ev.Action == "fail" && ev.FailedBuild != "" && ev.Package != "":
			failed[ev.Package] = ev.FailedBuild
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read test2json stream: %w", err)
	}
	out := map[string]string{}
	for pkg, imp := range failed {
		if b := byImport[imp]; b != nil {
			out[pkg] = b.String()
		}
	}
	return out, nil
}

// locRE matches the line t.Log, t.Error and t.Fatal print: "    file.go:12: text".
var locRE = regexp.MustCompile(`^\s+([\w.-]+\.go):(\d+): ?(.*)$`)

// progressRE matches the harness's own progress lines (t.Logf), which look
// like its failures: both start with "jumpstarter: ".
var progressRE = regexp.MustCompile(`^jumpstarter: (flashing |flash .*: \d+%|.* reached the login prompt )`)

// failureMessage returns "file.go:line: message" for a failed test's output,
// or "" when it cannot tell which line failed the test. go test prints logs
// and failures alike, so it looks, in this order, for: a testify assertion
// (a location line followed by "Error Trace:"; its "Error:" and "Messages:"
// make the message); a harness failure (a "jumpstarter: " line that is not
// one of the harness's progress logs); the last line a _test.go file printed
// (a test's t.Fatal ends it; what follows is the harness's cleanup).
func failureMessage(text string) string {
	type loc struct {
		i          int
		file, line string
		msg        string
	}
	lines := strings.Split(text, "\n")
	var locs []loc
	for i, l := range lines {
		if m := locRE.FindStringSubmatch(l); m != nil {
			locs = append(locs, loc{i, m[1], m[2], strings.TrimSpace(m[3])})
		}
	}
	for _, l := range locs {
		if l.i+1 >= len(lines) || !strings.Contains(lines[l.i+1], "Error Trace:") {
			continue
		}
		var msg, extra string
		for _, next := range lines[l.i+1 : min(len(lines), l.i+40)] {
			if locRE.MatchString(next) {
				break
			}
			if _, after, ok := strings.Cut(next, "Error:"); ok && msg == "" {
				msg = strings.TrimSpace(after)
			}
			if _, after, ok := strings.Cut(next, "Messages:"); ok && extra == "" {
				extra = strings.TrimSpace(after)
			}
		}
		if extra != "" {
			msg = strings.TrimSpace(msg + " " + extra)
		}
		if msg != "" {
			return shorten(l.file + ":" + l.line + ": " + msg)
		}
	}
	for _, l := range locs {
		if strings.HasPrefix(l.msg, "jumpstarter: ") && !progressRE.MatchString(l.msg) {
			return shorten(l.file + ":" + l.line + ": " + l.msg)
		}
	}
	for i := len(locs) - 1; i >= 0; i-- {
		l := locs[i]
		if strings.HasSuffix(l.file, "_test.go") && l.msg != "" && !strings.HasPrefix(l.msg, "jumpstarter: ") {
			return shorten(l.file + ":" + l.line + ": " + l.msg)
		}
	}
	return ""
}

func shorten(msg string) string {
	const max = 300
	if len(msg) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "..."
	}
	return msg
}

func quotesConsole(text string) bool {
	for _, m := range tailMarkers {
		if strings.Contains(text, m) {
			return true
		}
	}
	return false
}

// consoleTail returns the last n lines of the console log at path, framed
// for a failure text, or a line saying why it could not be read.
func consoleTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Sprintf("\n--- DUT console: %s does not exist ---\n", path)
		}
		return fmt.Sprintf("\n--- DUT console: %v ---\n", err)
	}
	text := strings.TrimRight(string(data), "\n")
	if text == "" {
		return fmt.Sprintf("\n--- DUT console: %s is empty ---\n", path)
	}
	lines := strings.Split(text, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("\n--- DUT console, last %d lines of %s ---\n%s\n--- end of DUT console ---\n", len(lines), filepath.Base(path), strings.Join(lines, "\n"))
}

// relative returns v relative to dir when v is an absolute path under base,
// and v unchanged otherwise.
func relative(v, base, dir string) string {
	if !filepath.IsAbs(v) {
		return v
	}
	clean := filepath.Clean(v)
	b := filepath.Clean(base)
	if clean != b && !strings.HasPrefix(clean, b+string(filepath.Separator)) {
		return v
	}
	rel, err := filepath.Rel(dir, clean)
	if err != nil {
		return v
	}
	return rel
}
