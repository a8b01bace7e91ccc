package harness

import (
	"flag"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// testLogger writes the harness's log lines into a test's output with the
// location of the test's own code that led to them (the line that called
// dut.PowerOn, say), not the harness line that printed them: t.Helper marks
// only the function that calls it, and the steps run several calls deep in
// the error-returning core. Lines logged where no test code is on the stack
// (cleanup, a background goroutine) carry no location.
type testLogger struct{ t testing.TB }

// harnessPath is the import path of this package, from a function's name.
func harnessPath() string {
	pc, _, _, _ := runtime.Caller(0)
	name := runtime.FuncForPC(pc).Name() // .../harness.harnessPath
	return strings.TrimSuffix(name, ".harnessPath")
}

var harnessPkg = harnessPath()

// modulePkg is the import path of this module: its drivers' frames are
// skipped too (a step a driver traces for the harness).
var modulePkg = strings.TrimSuffix(harnessPkg, "/harness")

func (l testLogger) logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if loc := testLocation(); loc != "" {
		msg = loc + ": " + msg
	}
	fmt.Fprintln(l.t.Output(), msg)
}

// testLocation returns "file.go:line" of the innermost caller outside the
// harness's packages (and this module's other non-test code, such as the
// drivers), the testing package and the runtime, or "" when there is none.
func testLocation() string {
	pcs := make([]uintptr, 64)
	n := runtime.Callers(3, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		if !skippedFrame(f.Function, f.File) {
			file := f.File
			if !fullPath() {
				file = filepath.Base(file)
			}
			return fmt.Sprintf("%s:%d", file, f.Line)
		}
		if !more {
			return ""
		}
	}
}

func skippedFrame(fn, file string) bool {
	if fn == "" {
		return true
	}
	if strings.HasPrefix(fn, modulePkg+"/") && !strings.HasSuffix(file, "_test.go") {
		return true
	}
	for _, p := range []string{harnessPkg + ".", harnessPkg + "/", "testing.", "runtime."} {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	return false
}

// fullPath reports whether go test runs with -fullpath, as the testing
// package's own locations do.
func fullPath() bool {
	f := flag.Lookup("test.fullpath")
	return f != nil && f.Value.String() == "true"
}
