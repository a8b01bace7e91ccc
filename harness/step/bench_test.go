package step_test

import (
	"context"
	"io"
	"testing"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/step"
)

func benchStep(b *testing.B, ctx context.Context) {
	b.ReportAllocs()
	for b.Loop() {
		cctx, st := step.Start(ctx, "power on", "over", "usb")
		_ = cctx
		st.End(nil)
	}
}

// BenchmarkStepWithoutTracer: what a step costs a driver called without
// a tracer.
func BenchmarkStepWithoutTracer(b *testing.B) { benchStep(b, context.Background()) }

// BenchmarkStepLogSink: one step logged at its start and end (the
// formatting; the log function itself discards).
func BenchmarkStepLogSink(b *testing.B) {
	benchStep(b, step.WithTracer(context.Background(), step.New(step.LogSink(func(string, ...any) {}))))
}

// BenchmarkStepJSONL: one step as two JSON lines.
func BenchmarkStepJSONL(b *testing.B) {
	benchStep(b, step.WithTracer(context.Background(), step.New(step.NewJSONL(io.Discard))))
}
