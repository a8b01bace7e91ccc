package harness

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/step"
)

// StepsFile is the artifact file with the test's hardware steps, one JSON
// object per line at each step's start and end (see [step.JSONL]); a DUT
// with a role (AcquireAll) writes "<role>-steps.jsonl".
const StepsFile = "steps.jsonl"

// withLogTracer returns ctx with a tracer that logs to logf, unless ctx
// has a tracer already or logf is nil.
func withLogTracer(ctx context.Context, logf func(string, ...any)) context.Context {
	if logf == nil || step.TracerFrom(ctx) != nil {
		return ctx
	}
	return step.WithTracer(ctx, step.New(step.LogSink(logf)))
}

// acquireArgs are the arguments of the acquire step: what selects the DUT.
func acquireArgs(cfg Config) []any {
	var args []any
	add := func(key, value string) {
		if value != "" {
			args = append(args, key, value)
		}
	}
	add("driver", cfg.Driver)
	add("name", cfg.Name)
	add("tags", strings.Join(cfg.Tags, ","))
	return args
}

// startTrace gives d its tracer: the test's log, and the steps file in
// the test's artifact folder. The file is closed by a cleanup registered
// now, so that it runs after d's own (cleanups run last-in first-out) and
// records cleanup's steps too.
func (d *DUT) startTrace() {
	d.tracer = step.New(step.LogSink(d.log.logf))
	path := filepath.Join(d.t.ArtifactDir(), d.file(StepsFile))
	f, err := os.Create(path)
	if err != nil {
		d.log.logf("jumpstarter: the steps of this test are not recorded: %v", err)
		return
	}
	d.steps = step.NewJSONL(f)
	d.tracer.Add(d.steps)
	t := d.t
	t.Cleanup(func() {
		if err := errors.Join(d.steps.Err(), f.Close()); err != nil {
			t.Errorf("jumpstarter: writing %s: %v", path, err)
		}
	})
}

// traced returns ctx with d's tracer.
func (d *DUT) traced(ctx context.Context) context.Context {
	if d.tracer == nil {
		return ctx
	}
	return step.WithTracer(ctx, d.tracer)
}

// acquireAllTracer traces what several DUTs do together (taking their
// leases): to the test's log once, and to every DUT's steps file.
func acquireAllTracer(duts []*DUT) *step.Tracer {
	tr := step.New(step.LogSink(duts[0].log.logf))
	for _, d := range duts {
		if d.steps != nil {
			tr.Add(d.steps)
		}
	}
	return tr
}
