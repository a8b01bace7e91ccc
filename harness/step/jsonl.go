package step

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// JSONL is a sink that writes one JSON object per event, a line each: a
// step's start event when it starts and its end event when it ends, so
// that the file of a test that hangs ends with the start of the step that
// hangs. Each line is written with a single Write, so that nothing is
// buffered in the process.
//
// A line holds the event ("start" or "end") and the record as it is then:
//
//	{"event":"end","id":7,"parent":3,"depth":1,"name":"storage host","device":"sim-0",
//	 "start":"2026-01-02T15:04:05.123456789Z","end":"2026-01-02T15:04:05.125Z",
//	 "seconds":0.002,"outcome":"ok","duration_ns":2000000}
//
// with "args" and "result" as JSON objects whose keys keep their order,
// and, for a failed step, "error" and "code". [ReadJSONL] reads them back.
type JSONL struct {
	mu  sync.Mutex
	w   io.Writer
	err error
}

// NewJSONL returns a JSONL sink writing to w.
func NewJSONL(w io.Writer) *JSONL { return &JSONL{w: w} }

// Emit writes e as one line. After the first failed write it writes
// nothing more; [JSONL.Err] returns that failure.
func (j *JSONL) Emit(e Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		return
	}
	b, err := json.Marshal(e)
	if err == nil {
		_, err = j.w.Write(append(b, '\n'))
	}
	if err != nil {
		j.err = fmt.Errorf("step: writing a JSON record: %w", err)
	}
}

// Err returns the first write failure, or nil.
func (j *JSONL) Err() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.err
}

// ReadJSONL reads the events a [JSONL] sink wrote, in order.
func ReadJSONL(r io.Reader) ([]Event, error) {
	var out []Event
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			return out, fmt.Errorf("step: line %d: %w", n, err)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// eventJSON is the JSON form of an Event.
type eventJSON struct {
	Event    Kind      `json:"event"`
	ID       uint64    `json:"id"`
	Parent   uint64    `json:"parent,omitempty"`
	Depth    int       `json:"depth"`
	Name     string    `json:"name"`
	Device   string    `json:"device,omitempty"`
	Args     argsJSON  `json:"args,omitempty"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end,omitzero"`
	Seconds  *float64  `json:"seconds,omitempty"`
	Outcome  Outcome   `json:"outcome,omitempty"`
	Error    string    `json:"error,omitempty"`
	Code     string    `json:"code,omitempty"`
	Result   argsJSON  `json:"result,omitempty"`
	Duration int64     `json:"duration_ns,omitempty"`
}

// MarshalJSON renders the event as [JSONL] writes it.
func (e Event) MarshalJSON() ([]byte, error) {
	j := eventJSON{
		Event: e.Kind, ID: e.ID, Parent: e.Parent, Depth: e.Depth, Name: e.Name, Device: e.Device,
		Args: e.Args, Start: e.Start, End: e.End, Outcome: e.Outcome, Error: e.Error, Code: e.Code, Result: e.Result,
	}
	if !e.Running() {
		secs := e.Duration.Seconds()
		j.Seconds, j.Duration = &secs, int64(e.Duration)
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads an event [JSONL] wrote.
func (e *Event) UnmarshalJSON(b []byte) error {
	var j eventJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	if j.Event != Started && j.Event != Ended {
		return fmt.Errorf("unknown event %q", j.Event)
	}
	*e = Event{Kind: j.Event, Record: Record{
		ID: j.ID, Parent: j.Parent, Depth: j.Depth, Name: j.Name, Device: j.Device, Args: j.Args,
		Start: j.Start, End: j.End, Duration: time.Duration(j.Duration), Outcome: j.Outcome,
		Error: j.Error, Code: j.Code, Result: j.Result,
	}}
	return nil
}

// argsJSON is a list of arguments as a JSON object whose keys keep their
// order.
type argsJSON []Arg

func (a argsJSON) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, arg := range a {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(arg.Key)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(arg.Value)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func (a *argsJSON) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errors.New("arguments are not a JSON object")
	}
	var out argsJSON
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		var value string
		if err := dec.Decode(&value); err != nil {
			return fmt.Errorf("argument %q: %w", key, err)
		}
		out = append(out, Arg{Key: key, Value: value})
	}
	*a = out
	return nil
}
