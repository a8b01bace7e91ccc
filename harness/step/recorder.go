package step

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// Recorder is a sink that keeps every event in memory, for tests and tools
// that ask what ran and what is running. It is safe for concurrent use.
// The zero Recorder is ready to use.
type Recorder struct {
	mu      sync.Mutex
	events  []Event
	changed chan struct{} // closed and replaced at each event
}

// Emit records e.
func (r *Recorder) Emit(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
}

// Events returns every event so far, in order.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// Finished returns the records of the steps that ended, in the order they
// ended.
func (r *Recorder) Finished() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Record
	for _, e := range r.events {
		if e.Kind == Ended {
			out = append(out, e.Record)
		}
	}
	return out
}

// Running returns the records of the steps that started and have not
// ended, in the order they started: during a hang, the last is the
// innermost step that hangs.
func (r *Recorder) Running() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	ended := map[uint64]bool{}
	for _, e := range r.events {
		if e.Kind == Ended {
			ended[e.ID] = true
		}
	}
	var out []Record
	for _, e := range r.events {
		if e.Kind == Started && !ended[e.ID] {
			out = append(out, e.Record)
		}
	}
	return out
}

// Wait returns the first event, recorded already or to come, that match
// accepts; it fails when ctx ends first. match runs with the recorder
// locked: it must not call the recorder.
func (r *Recorder) Wait(ctx context.Context, match func(Event) bool) (Event, error) {
	seen := 0
	for {
		r.mu.Lock()
		for ; seen < len(r.events); seen++ {
			if e := r.events[seen]; match(e) {
				r.mu.Unlock()
				return e, nil
			}
		}
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return Event{}, fmt.Errorf("step: waiting for an event: %w", context.Cause(ctx))
		}
	}
}

// WaitStarted waits, as [Recorder.Wait] does, for the start of a step
// named name and returns its record.
func (r *Recorder) WaitStarted(ctx context.Context, name string) (Record, error) {
	e, err := r.Wait(ctx, func(e Event) bool { return e.Kind == Started && e.Name == name })
	if err != nil {
		return Record{}, fmt.Errorf("step %q did not start: %w", name, err)
	}
	return e.Record, nil
}
