// Package step traces hardware steps: acquire, power, storage, flash, boot,
// login, each console command. Every step is one [Record] with its start,
// end, duration, arguments and outcome, nested where steps nest, and each
// start and each end is an [Event] handed to the [Tracer]'s sinks as it
// happens, so that a step that hangs shows in the log as the one running.
//
// The tracer travels in a [context.Context]: [WithTracer] puts it there,
// [Start] (or [Do]) begins a step under the context's current step and
// returns the context its children run under, [Step.End] ends it. A driver
// needs nothing but the context it is given: its steps nest under the
// caller's.
//
//	ctx = step.WithTracer(ctx, step.New(step.LogSink(t.Logf)))
//	ctx, st := step.Start(ctx, "flash", "image", path)
//	err := write(ctx) // its own steps nest under "flash"
//	st.End(err)
//
// Without a tracer in the context, Start returns the context unchanged and
// a nil *Step, whose methods do nothing: steps cost a context lookup.
//
// Sinks: [LogSink] writes one line per event ("→ name args" at the start,
// "← name (1.2s) ok" at the end, indented by depth) to a printf-style
// function such as t.Logf; [JSONL] writes one JSON object per event to a
// writer (a steps.jsonl artifact); [Recorder] keeps the events in memory
// and says which steps are running.
//
// This package imports only the standard library and the driver package
// (for [driver.Code]), so that drivers can trace their own steps.
package step

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

// Outcome is how a step ended.
type Outcome string

// The outcomes of a step; a running step has none.
const (
	OK    Outcome = "ok"
	Error Outcome = "error"
)

// Record is one step. A record handed out while its step runs has a zero
// End, Duration and Outcome.
type Record struct {
	// ID identifies the step; it is unique within the process, across
	// tracers. Parent is the ID of the enclosing step, 0 for a top-level
	// one; Depth is how many steps enclose it.
	ID     uint64
	Parent uint64
	Depth  int
	// Name says what the step does ("power on", "flash", "run").
	Name string
	// Device is the device the step works on, from [WithDevice] (or the
	// enclosing step's), or "".
	Device string
	// Args are the step's arguments, in the order given to [Start];
	// Result what it found out on the way ([Step.Set]).
	Args   []Arg
	Result []Arg
	Start  time.Time
	End    time.Time
	// Duration is End - Start.
	Duration time.Duration
	Outcome  Outcome
	// Error is the error text of a failed step; Code its shared
	// sentinel's code ([driver.Code]), or "".
	Error string
	Code  string
}

// Running reports whether the step has not ended.
func (r Record) Running() bool { return r.Outcome == "" }

// Arg returns the value of the argument or result named key, or "".
func (r Record) Arg(key string) string {
	for _, list := range [][]Arg{r.Args, r.Result} {
		for _, a := range list {
			if a.Key == key {
				return a.Value
			}
		}
	}
	return ""
}

// Arg is one argument of a step: a key and its value, formatted when the
// step recorded it.
type Arg struct {
	Key   string
	Value string
}

// Kind says which event of a step an [Event] is.
type Kind string

// The two events of every step.
const (
	Started Kind = "start"
	Ended   Kind = "end"
)

// Event is a step starting or ending, with the step's record as it is at
// that moment.
type Event struct {
	Kind Kind
	Record
	// showDevice: the step's device differs from its parent's (or it has
	// no parent), so the log names it.
	showDevice bool
}

// Sink receives every event of a tracer, one at a time, in the order they
// happen. A sink must not start steps itself, and should not block: the
// step waits for it.
type Sink interface {
	Emit(Event)
}

// SinkFunc adapts a function to [Sink].
type SinkFunc func(Event)

// Emit calls f.
func (f SinkFunc) Emit(e Event) { f(e) }

// Tracer hands the events of the steps started under it to its sinks. It is
// safe for concurrent use.
type Tracer struct {
	// Now gives the time of starts and ends; nil means time.Now. Set it
	// before the first step (for reproducible examples and tests).
	Now func() time.Time

	mu    sync.Mutex // orders events and guards every Step's record
	sinks []Sink
}

// New returns a tracer with the given sinks.
func New(sinks ...Sink) *Tracer { return &Tracer{sinks: sinks} }

// Add adds a sink; it receives the events from now on.
func (t *Tracer) Add(s Sink) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sinks = append(t.sinks, s)
}

func (t *Tracer) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// emit hands e to every sink; t.mu is held.
func (t *Tracer) emit(e Event) {
	for _, s := range t.sinks {
		s.Emit(e)
	}
}

// ids numbers steps across every tracer of the process.
var ids atomic.Uint64

// Step is one running step; [Step.End] ends it. The methods of a nil *Step
// (what [Start] returns without a tracer) do nothing.
type Step struct {
	tr         *Tracer
	rec        Record // guarded by tr.mu
	showDevice bool
}

// scope is what a context carries: the tracer, the innermost running step
// and the device steps are about.
type scope struct {
	tr     *Tracer
	parent *Step
	device string
}

type ctxKey struct{}

func scopeOf(ctx context.Context) scope {
	sc, _ := ctx.Value(ctxKey{}).(scope)
	return sc
}

// WithTracer returns ctx with tr as its tracer: steps started under it go
// to tr's sinks, as top-level steps (a step of another tracer that encloses
// ctx is not their parent). A nil tr takes the tracer away.
func WithTracer(ctx context.Context, tr *Tracer) context.Context {
	sc := scopeOf(ctx)
	return context.WithValue(ctx, ctxKey{}, scope{tr: tr, device: sc.device})
}

// TracerFrom returns ctx's tracer, or nil.
func TracerFrom(ctx context.Context) *Tracer { return scopeOf(ctx).tr }

// WithDevice returns ctx with name as the device of the steps started
// under it.
func WithDevice(ctx context.Context, name string) context.Context {
	sc := scopeOf(ctx)
	if sc.device == name {
		return ctx
	}
	sc.device = name
	return context.WithValue(ctx, ctxKey{}, sc)
}

// Current returns the innermost step running in ctx, or nil.
func Current(ctx context.Context) *Step { return scopeOf(ctx).parent }

// Start begins the step name under ctx's current step, with args given as
// alternating keys and values ("image", path, "bytes", n) or as [Arg]
// values, and returns the context its children run under. Without a tracer
// in ctx it returns ctx itself and a nil *Step.
func Start(ctx context.Context, name string, args ...any) (context.Context, *Step) {
	sc := scopeOf(ctx)
	if sc.tr == nil {
		return ctx, nil
	}
	st := &Step{tr: sc.tr}
	st.rec = Record{ID: ids.Add(1), Name: name, Device: sc.device, Args: makeArgs(args)}
	st.showDevice = sc.parent == nil || sc.parent.rec.Device != sc.device
	if p := sc.parent; p != nil {
		st.rec.Parent, st.rec.Depth = p.rec.ID, p.rec.Depth+1
	}
	sc.tr.mu.Lock()
	st.rec.Start = sc.tr.now()
	sc.tr.emit(Event{Kind: Started, Record: st.rec, showDevice: st.showDevice})
	sc.tr.mu.Unlock()
	return context.WithValue(ctx, ctxKey{}, scope{tr: sc.tr, parent: st, device: sc.device}), st
}

// Do runs fn as the step name (see [Start]) and returns its error.
func Do(ctx context.Context, name string, fn func(context.Context) error, args ...any) error {
	ctx, st := Start(ctx, name, args...)
	return st.End(fn(ctx))
}

// Set adds results to the step: what it found out on the way (a block
// device, bytes written), as alternating keys and values or [Arg] values.
// They are part of its end event. Set after End does nothing.
func (s *Step) Set(args ...any) {
	if s == nil {
		return
	}
	s.tr.mu.Lock()
	defer s.tr.mu.Unlock()
	if s.rec.Outcome == "" {
		s.rec.Result = append(s.rec.Result, makeArgs(args)...)
	}
}

// End ends the step, failed when err is not nil, and returns err. Only
// the first End counts.
func (s *Step) End(err error) error {
	if s == nil {
		return err
	}
	s.tr.mu.Lock()
	defer s.tr.mu.Unlock()
	if s.rec.Outcome != "" {
		return err
	}
	s.rec.End = s.tr.now()
	s.rec.Duration = s.rec.End.Sub(s.rec.Start)
	s.rec.Outcome = OK
	if err != nil {
		s.rec.Outcome, s.rec.Error, s.rec.Code = Error, err.Error(), driver.Code(err)
	}
	s.tr.emit(Event{Kind: Ended, Record: s.rec, showDevice: s.showDevice})
	return err
}

// Record returns the step's record as it is now.
func (s *Step) Record() Record {
	if s == nil {
		return Record{}
	}
	s.tr.mu.Lock()
	defer s.tr.mu.Unlock()
	r := s.rec
	r.Args, r.Result = append([]Arg(nil), r.Args...), append([]Arg(nil), r.Result...)
	return r
}

// makeArgs reads alternating keys and values, and Arg values; a value
// without a key gets the key "arg".
func makeArgs(args []any) []Arg {
	if len(args) == 0 {
		return nil
	}
	out := make([]Arg, 0, (len(args)+1)/2)
	for i := 0; i < len(args); i++ {
		switch a := args[i].(type) {
		case Arg:
			out = append(out, a)
		case string:
			if i+1 < len(args) {
				out = append(out, Arg{Key: a, Value: format(args[i+1])})
				i++
				continue
			}
			out = append(out, Arg{Key: "arg", Value: a})
		default:
			out = append(out, Arg{Key: "arg", Value: format(a)})
		}
	}
	return out
}

// format renders an argument value.
func format(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case error:
		return v.Error()
	}
	return fmt.Sprint(v)
}
