// Package junitxsd finds the JUnit schema the tekton checks validate
// against: Jenkins xunit's junit-10.xsd, the one a Jenkins consumer applies.
// The project does not carry a copy; the checks use the one named by
// $JUNIT_XSD or found as shared/reference/junit-schemas/jenkins-xunit-junit-10.xsd
// in a folder above the working directory (where CI has it), and skip the
// schema check with a message when there is none.
package junitxsd

import (
	"os"
	"path/filepath"
	"testing"
)

// Env names the schema file explicitly.
const Env = "JUNIT_XSD"

const rel = "shared/reference/junit-schemas/jenkins-xunit-junit-10.xsd"

// Path returns the schema's path, or skips t when there is none.
func Path(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(Env); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v", Env, p, err)
		}
		return p
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p
		}
		if filepath.Dir(dir) == dir {
			break
		}
	}
	t.Skipf("no JUnit schema to validate against: set %s to Jenkins xunit's junit-10.xsd", Env)
	return ""
}
