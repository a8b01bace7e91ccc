// Package testjson rewrites and checks the output of `go test -json` and the
// JUnit XML that gotestsum makes of it, so that the project's report path is
// tested like any other code.
package testjson

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// ArtifactsKey is the property key an "artifacts" action becomes.
const ArtifactsKey = "artifacts"

// event is the subset of test2json's event that the rewrite touches.
type event struct {
	Time    json.RawMessage `json:"Time,omitempty"`
	Action  string          `json:"Action"`
	Package string          `json:"Package,omitempty"`
	Test    string          `json:"Test,omitempty"`
	Key     string          `json:"Key,omitempty"`
	Value   string          `json:"Value,omitempty"`
	Path    string          `json:"Path,omitempty"`
}

// ArtifactsToAttrs copies a `go test -json` stream from r to w, turning each
// {"Action":"artifacts","Path":P} event into {"Action":"attr","Key":"artifacts","Value":P}
// for the same test. Other lines, including lines that are not JSON (build
// errors), pass through byte for byte.
func ArtifactsToAttrs(w io.Writer, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	bw := bufio.NewWriter(w)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if bytes.Contains(line, []byte(`"Action":"artifacts"`)) {
				line = rewrite(line)
			}
			if _, werr := bw.Write(line); werr != nil {
				return fmt.Errorf("write: %w", werr)
			}
			// Flush per line: gotestsum shows progress as events arrive.
			if werr := bw.Flush(); werr != nil {
				return fmt.Errorf("write: %w", werr)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
	}
}

func rewrite(line []byte) []byte {
	var ev event
	if err := json.Unmarshal(line, &ev); err != nil || ev.Action != "artifacts" {
		return line
	}
	ev.Action, ev.Key, ev.Value, ev.Path = "attr", ArtifactsKey, ev.Path, ""
	out, err := json.Marshal(ev)
	if err != nil {
		return line
	}
	return append(out, '\n')
}
