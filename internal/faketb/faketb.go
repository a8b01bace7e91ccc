// Package faketb provides a testing.TB whose Fatal, Skip and Error are
// recorded instead of ending the real test, so that tests can check that test
// helpers fail or skip when they should (vmtest's approach).
package faketb

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// TB is a testing.TB whose Fatal, Skip and Error are recorded instead of
// ending the real test. Run the code under test with [TB.Run].
type TB struct {
	testing.TB // the real test, for Context, TempDir, Logf and unexported methods

	// Dir is what ArtifactDir returns: a temporary directory of the real test.
	Dir string
	// Until is what Deadline reports; zero means no deadline.
	Until time.Time

	name     string
	mu       sync.Mutex
	failed   bool
	skipped  bool
	messages []string
	logs     strings.Builder
	attrs    map[string]string
	counts   map[string]int
	cleanups []func()
}

// New returns a fake TB inside the real test t.
func New(t *testing.T) *TB {
	return &TB{TB: t, name: t.Name() + "/fake", Dir: t.TempDir(), attrs: map[string]string{}, counts: map[string]int{}}
}

func (f *TB) record(failed, skipped bool, msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = f.failed || failed
	f.skipped = f.skipped || skipped
	f.messages = append(f.messages, msg)
	f.TB.Logf("fake TB recorded: %s", msg)
}

func (f *TB) Name() string                   { return f.name }
func (f *TB) Helper()                        {}
func (f *TB) ArtifactDir() string            { return f.Dir }
func (f *TB) Errorf(format string, a ...any) { f.record(true, false, fmt.Sprintf(format, a...)) }
func (f *TB) Error(a ...any)                 { f.record(true, false, fmt.Sprint(a...)) }
func (f *TB) Fail()                          { f.record(true, false, "Fail") }
func (f *TB) FailNow()                       { f.record(true, false, "FailNow"); runtime.Goexit() }
func (f *TB) Fatal(a ...any)                 { f.record(true, false, fmt.Sprint(a...)); runtime.Goexit() }
func (f *TB) Fatalf(format string, a ...any) { f.Fatal(fmt.Sprintf(format, a...)) }
func (f *TB) Skip(a ...any)                  { f.record(false, true, fmt.Sprint(a...)); runtime.Goexit() }
func (f *TB) Skipf(format string, a ...any)  { f.Skip(fmt.Sprintf(format, a...)) }
func (f *TB) SkipNow()                       { f.Skip("SkipNow") }
func (f *TB) Context() context.Context       { return f.TB.Context() }
func (f *TB) Deadline() (time.Time, bool)    { return f.Until, !f.Until.IsZero() }
func (f *TB) Logf(format string, a ...any) {
	f.mu.Lock()
	fmt.Fprintf(&f.logs, format+"\n", a...)
	f.mu.Unlock()
	f.TB.Logf("fake: "+format, a...)
}
func (f *TB) Log(a ...any) {
	f.mu.Lock()
	fmt.Fprintln(&f.logs, a...)
	f.mu.Unlock()
	f.TB.Log(append([]any{"fake:"}, a...)...)
}

// Output returns a writer into the fake test's log (see [TB.Logs]), which
// also goes to the real test's output.
func (f *TB) Output() io.Writer { return logWriter{f} }

type logWriter struct{ f *TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.f.mu.Lock()
	w.f.logs.Write(p)
	w.f.mu.Unlock()
	return w.f.TB.Output().Write(p)
}

// Logs returns everything logged through Logf, Log and Output.
func (f *TB) Logs() string { f.mu.Lock(); defer f.mu.Unlock(); return f.logs.String() }

// Failed reports whether the fake test failed.
func (f *TB) Failed() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.failed }

// Skipped reports whether the fake test skipped.
func (f *TB) Skipped() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.skipped }

// Cleanup registers fn to run after the body given to Run.
func (f *TB) Cleanup(fn func()) { f.mu.Lock(); f.cleanups = append(f.cleanups, fn); f.mu.Unlock() }

// Attr records a property.
func (f *TB) Attr(key, value string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attrs[key] = value
	f.counts[key]++
}

// AttrCount returns how many times a property was recorded.
func (f *TB) AttrCount(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[key]
}

// Message returns every recorded failure and skip message, one per line.
func (f *TB) Message() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.messages, "\n")
}

// AttrValue returns a recorded property.
func (f *TB) AttrValue(key string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.attrs[key]
	return v, ok
}

// Run runs body as a test would: in its own goroutine, which Fatal and Skip
// end, then the cleanups in reverse order, as the testing package does.
func (f *TB) Run(body func(tb testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		body(f)
	}()
	<-done
	f.mu.Lock()
	cs := f.cleanups
	f.cleanups = nil
	f.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		done := make(chan struct{})
		go func() { defer close(done); cs[i]() }()
		<-done
	}
}
