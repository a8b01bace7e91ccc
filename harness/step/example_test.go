package step_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/step"
)

// A test's steps, logged as they start and end. In a test, give t.Logf to
// LogSink; Now is set here only to make the durations reproducible.
func Example() {
	tr := step.New(step.LogSink(func(format string, args ...any) { fmt.Printf(format+"\n", args...) }))
	tr.Now = fakeClock()
	ctx := step.WithDevice(step.WithTracer(context.Background(), tr), "bench-1")

	ctx, flash := step.Start(ctx, "flash", "image", "os.img.zst")
	_ = step.Do(ctx, "storage host", func(ctx context.Context) error { return nil })
	err := step.Do(ctx, "write", func(ctx context.Context) error {
		return errors.New("short write")
	}, "target", "/dev/sdb")
	flash.End(err)
	// Output:
	// → bench-1: flash image=os.img.zst
	//   → storage host
	//   ← storage host (250ms) ok
	//   → write target=/dev/sdb
	//   ← write (250ms) error: short write
	// ← bench-1: flash (1.25s) error: short write
}

// A driver traces its own steps with the context it is given: they nest
// under the caller's, and go wherever the caller's tracer sends them.
func ExampleDo() {
	var rec step.Recorder
	ctx := step.WithTracer(context.Background(), step.New(&rec))
	powerOn := func(ctx context.Context) error { // a driver's method
		return step.Do(ctx, "relay", func(context.Context) error { return nil }, "channel", 2)
	}
	_ = step.Do(ctx, "power on", powerOn)
	for _, r := range rec.Finished() {
		fmt.Println(r.Depth, r.Name, r.Args, r.Outcome)
	}
	// Output:
	// 1 relay [{channel 2}] ok
	// 0 power on [] ok
}

// During a hang, the Recorder says which steps are running.
func ExampleRecorder_Running() {
	var rec step.Recorder
	ctx := step.WithTracer(context.Background(), step.New(&rec))
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	hung := make(chan struct{})
	go step.Do(ctx, "login", func(ctx context.Context) error {
		return step.Do(ctx, "wait for the login prompt", func(ctx context.Context) error {
			close(hung)
			<-ctx.Done() // the DUT never prints it
			return ctx.Err()
		})
	})
	<-hung
	for _, r := range rec.Running() {
		fmt.Println(r.Name)
	}
	// Output:
	// login
	// wait for the login prompt
}

// A JSONL sink writes one line per start and per end; ReadJSONL reads them.
func ExampleJSONL() {
	var buf bytes.Buffer
	ctx := step.WithTracer(context.Background(), step.New(step.NewJSONL(&buf)))
	_ = step.Do(ctx, "power off", func(context.Context) error { return nil }, "how", "graceful")
	events, err := step.ReadJSONL(&buf)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, e := range events {
		fmt.Printf("%s %q how=%s running=%v\n", e.Kind, e.Name, e.Arg("how"), e.Running())
	}
	// Output:
	// start "power off" how=graceful running=true
	// end "power off" how=graceful running=false
}

// fakeClock moves on by a quarter second at each reading.
func fakeClock() func() time.Time {
	t := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	return func() time.Time {
		t = t.Add(250 * time.Millisecond)
		return t
	}
}
