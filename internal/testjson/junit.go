package testjson

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// JUnit is the part of a gotestsum JUnit XML file the checks read.
type JUnit struct {
	Tests    int     `xml:"tests,attr"`
	Failures int     `xml:"failures,attr"`
	Suites   []Suite `xml:"testsuite"`
}

// Suite is one package's testsuite.
type Suite struct {
	Name     string `xml:"name,attr"`
	Tests    int    `xml:"tests,attr"`
	Failures int    `xml:"failures,attr"`
	Skipped  int    `xml:"skipped,attr"`
	Cases    []Case `xml:"testcase"`
}

// Case is one testcase.
type Case struct {
	Class      string     `xml:"classname,attr"`
	Name       string     `xml:"name,attr"`
	Properties []Property `xml:"properties>property"`
	Failure    *struct {
		Message string `xml:"message,attr"`
		Text    string `xml:",chardata"`
	} `xml:"failure"`
	Skipped *struct {
		Message string `xml:"message,attr"`
	} `xml:"skipped"`
}

// Property is one testcase property.
type Property struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

// Prop returns the value of the property named name.
func (c Case) Prop(name string) (string, bool) {
	for _, p := range c.Properties {
		if p.Name == name {
			return p.Value, true
		}
	}
	return "", false
}

// ParseJUnit reads a JUnit XML file.
func ParseJUnit(r io.Reader) (JUnit, error) {
	var j JUnit
	if err := xml.NewDecoder(r).Decode(&j); err != nil {
		return j, fmt.Errorf("parse JUnit XML: %w", err)
	}
	return j, nil
}

// Requirements say what a report must hold.
type Requirements struct {
	MinPassed  int      // at least this many passing testcases
	Properties []string // every passing testcase (of those PropsFor selects) carries these properties
	// PropsFor, when set, limits Properties and ArtifactFiles to the
	// testcases whose name it matches.
	PropsFor *regexp.Regexp
	// ArtifactFiles must exist in the directory named by every passing
	// testcase's "artifacts" property.
	ArtifactFiles []string
}

// Check verifies that the counts of every suite agree with its testcases and
// that the report meets req. It returns every problem found, joined.
func (j JUnit) Check(req Requirements) error {
	var errs []error
	passed, total, failed := 0, 0, 0
	for _, s := range j.Suites {
		var f, sk int
		for _, c := range s.Cases {
			switch {
			case c.Failure != nil:
				f++
			case c.Skipped != nil:
				sk++
			default:
				passed++
				if req.PropsFor == nil || req.PropsFor.MatchString(c.Name) {
					errs = append(errs, checkCase(s, c, req)...)
				}
			}
		}
		total += len(s.Cases)
		failed += f
		if s.Tests != len(s.Cases) || s.Failures != f || s.Skipped != sk {
			errs = append(errs, fmt.Errorf("suite %q says tests=%d failures=%d skipped=%d but holds %d testcases, %d failed, %d skipped", s.Name, s.Tests, s.Failures, s.Skipped, len(s.Cases), f, sk))
		}
		seen := map[string]bool{}
		for _, c := range s.Cases {
			if seen[c.Name] {
				errs = append(errs, fmt.Errorf("suite %q lists testcase %q twice", s.Name, c.Name))
			}
			seen[c.Name] = true
		}
	}
	if j.Tests != total || j.Failures != failed {
		errs = append(errs, fmt.Errorf("testsuites says tests=%d failures=%d but holds %d testcases, %d failed", j.Tests, j.Failures, total, failed))
	}
	if failed > 0 {
		errs = append(errs, fmt.Errorf("%d testcase(s) failed", failed))
	}
	if passed < req.MinPassed {
		errs = append(errs, fmt.Errorf("%d testcase(s) passed, want at least %d", passed, req.MinPassed))
	}
	return errors.Join(errs...)
}

func checkCase(s Suite, c Case, req Requirements) []error {
	var errs []error
	id := s.Name + "." + c.Name
	var missing []string
	for _, p := range req.Properties {
		if v, ok := c.Prop(p); !ok || v == "" {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		have := make([]string, 0, len(c.Properties))
		for _, p := range c.Properties {
			have = append(have, p.Name)
		}
		slices.Sort(have)
		errs = append(errs, fmt.Errorf("testcase %s lacks properties %s (has %s)", id, strings.Join(missing, ", "), strings.Join(have, ", ")))
	}
	if len(req.ArtifactFiles) > 0 {
		dir, ok := c.Prop(ArtifactsKey)
		if !ok {
			errs = append(errs, fmt.Errorf("testcase %s has no %q property", id, ArtifactsKey))
			return errs
		}
		for _, f := range req.ArtifactFiles {
			st, err := os.Stat(filepath.Join(dir, f))
			if err != nil {
				errs = append(errs, fmt.Errorf("testcase %s: artifact %s: %w", id, f, err))
			} else if st.Size() == 0 {
				errs = append(errs, fmt.Errorf("testcase %s: artifact %s is empty", id, filepath.Join(dir, f)))
			}
		}
	}
	return errs
}
