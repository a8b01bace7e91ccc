package harness_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeTB is a testing.TB whose Fatal, Skip and Error are recorded instead of
// ending the real test, so that tests can check that the harness fails or
// skips when it should (vmtest's approach). Run the code under test with run.
type fakeTB struct {
	testing.TB // the real test, for Context, TempDir, Logf and unexported methods

	name     string
	deadline time.Time
	dir      string

	mu       sync.Mutex
	failed   bool
	skipped  bool
	messages []string
	attrs    map[string]string
	cleanups []func()
}

func newFakeTB(t *testing.T) *fakeTB {
	return &fakeTB{TB: t, name: t.Name() + "/fake", dir: t.TempDir(), attrs: map[string]string{}}
}

func (f *fakeTB) record(failed, skipped bool, msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = f.failed || failed
	f.skipped = f.skipped || skipped
	f.messages = append(f.messages, msg)
	f.TB.Logf("fake TB recorded: %s", msg)
}

func (f *fakeTB) Name() string                   { return f.name }
func (f *fakeTB) Helper()                        {}
func (f *fakeTB) ArtifactDir() string            { return f.dir }
func (f *fakeTB) Errorf(format string, a ...any) { f.record(true, false, fmt.Sprintf(format, a...)) }
func (f *fakeTB) Error(a ...any)                 { f.record(true, false, fmt.Sprint(a...)) }
func (f *fakeTB) Fail()                          { f.record(true, false, "Fail") }
func (f *fakeTB) FailNow()                       { f.record(true, false, "FailNow"); runtime.Goexit() }
func (f *fakeTB) Fatal(a ...any)                 { f.record(true, false, fmt.Sprint(a...)); runtime.Goexit() }
func (f *fakeTB) Fatalf(format string, a ...any) { f.Fatal(fmt.Sprintf(format, a...)) }
func (f *fakeTB) Skip(a ...any)                  { f.record(false, true, fmt.Sprint(a...)); runtime.Goexit() }
func (f *fakeTB) Skipf(format string, a ...any)  { f.Skip(fmt.Sprintf(format, a...)) }
func (f *fakeTB) SkipNow()                       { f.Skip("SkipNow") }
func (f *fakeTB) Failed() bool                   { f.mu.Lock(); defer f.mu.Unlock(); return f.failed }
func (f *fakeTB) Skipped() bool                  { f.mu.Lock(); defer f.mu.Unlock(); return f.skipped }
func (f *fakeTB) Cleanup(fn func())              { f.mu.Lock(); f.cleanups = append(f.cleanups, fn); f.mu.Unlock() }
func (f *fakeTB) Context() context.Context       { return f.TB.Context() }
func (f *fakeTB) Attr(key, value string)         { f.mu.Lock(); f.attrs[key] = value; f.mu.Unlock() }
func (f *fakeTB) Deadline() (time.Time, bool)    { return f.deadline, !f.deadline.IsZero() }
func (f *fakeTB) Logf(format string, a ...any)   { f.TB.Logf("fake: "+format, a...) }
func (f *fakeTB) Log(a ...any)                   { f.TB.Log(append([]any{"fake:"}, a...)...) }
func (f *fakeTB) message() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.messages, "\n")
}
func (f *fakeTB) attr(key string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.attrs[key]
	return v, ok
}
func (f *fakeTB) Setenv(key, value string) { f.TB.Setenv(key, value) }
func (f *fakeTB) TempDir() string          { return f.TB.TempDir() }

// run runs body as a test would: in its own goroutine, which Fatal and Skip
// end, then the cleanups in reverse order, as the testing package does.
func (f *fakeTB) run(body func(tb testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		body(f)
	}()
	<-done
	f.runCleanups()
}

func (f *fakeTB) runCleanups() {
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
