package harness_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/step"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
)

// A tool traces a session's hardware steps with the tracer in Open's
// context: here to a Recorder (step.LogSink(log.Printf) logs them,
// step.NewJSONL(file) records them). The driver's steps nest inside.
func ExampleOpen_steps() {
	dir, err := os.MkdirTemp("", "jumpstarter-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	var rec step.Recorder
	ctx, cancel := context.WithTimeout(step.WithTracer(context.Background(), step.New(&rec)), time.Minute)
	defer cancel()
	cfg := harness.Config{
		Drivers: []driver.Driver{sim.New(sim.Options{Devices: 1, Dir: dir})},
		LockDir: filepath.Join(dir, "locks"),
	}
	s, err := harness.Open(ctx, cfg, harness.Holder{Test: "ExampleOpen_steps", PID: os.Getpid()}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := s.PowerCycle(ctx); err != nil {
		fmt.Println(err)
	}
	if err := s.Close(context.WithoutCancel(ctx)); err != nil {
		fmt.Println(err)
	}
	for _, r := range rec.Finished() {
		fmt.Printf("%*s%s %s\n", 2*r.Depth, "", r.Name, r.Outcome)
	}
	// Output:
	//   lock ok
	//   open ok
	//   power off ok
	//   storage off ok
	//   open console ok
	// acquire ok
	//   power off ok
	//     storage dut ok
	//   power on ok
	// power cycle ok
	// power off ok
	// storage off ok
}
