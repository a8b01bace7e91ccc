package console

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors that callers tell apart with [errors.Is] or [errors.As].
var (
	// ErrTimeout is matched by every [TimeoutError].
	ErrTimeout = errors.New("console: timed out")
	// ErrClosed is returned when the console was closed or its port failed
	// or reached end of file before a pattern matched.
	ErrClosed = errors.New("console: closed")
	// ErrPort is wrapped by errors of the port itself: a write that failed.
	ErrPort = errors.New("console: port failed")
)

// Limits of the output quoted in error messages: a console flood must not
// make a failure message of a thousand lines. The fields of the errors keep
// up to tailMax bytes; the whole output is in the console's log.
const (
	tailMax      = 2 << 10 // bytes of unmatched output kept in an error's Tail
	msgMaxLines  = 20      // lines of output quoted in an error message
	msgMaxBytes  = 2 << 10 // bytes of output quoted in an error message
	contextBytes = 1024    // bytes around a watcher's hit kept in WatchError.Context
)

// TimeoutError is returned by [Console.Expect] when the deadline passes
// before any pattern matches. It wraps the context's error.
//
// A caller that knows which setting bounded the wait (a test's command
// timeout, say) wraps the error with that advice; the fields stay available
// through [errors.As].
type TimeoutError struct {
	Console  string        // the console's name
	Patterns []string      // what was awaited, in words ([Pattern.String])
	Sources  []string      // the patterns as written ([Pattern.Source]), for debugging
	Waited   time.Duration // how long
	Tail     string        // the end of the unmatched text after the cursor, at most 2 KiB
	// Unmatched is how many bytes of cleaned text had arrived after the
	// cursor (Tail is their end).
	Unmatched int
	Err       error // context.DeadlineExceeded or context.Canceled
}

func (e *TimeoutError) Error() string {
	what := "timed out"
	if errors.Is(e.Err, context.Canceled) {
		what = "cancelled"
	}
	return fmt.Sprintf("console %s: %s after %s waiting for %s; %s", e.Console, what, e.Waited.Round(time.Millisecond), strings.Join(e.Patterns, " or "), describeTail(e.Tail, e.Unmatched))
}

// Unwrap returns the context's error.
func (e *TimeoutError) Unwrap() error { return e.Err }

// Is reports whether target is [ErrTimeout].
func (e *TimeoutError) Is(target error) bool { return target == ErrTimeout }

// WatchError is returned by [Console.Expect] when a watcher's pattern appeared
// after the cursor before any awaited pattern did.
type WatchError struct {
	Console string
	Watch   string // the watcher's name
	Text    string // the text the watcher matched
	Context string // the transcript around it (up to 1 KiB either side)
	Offset  int    // where in the cleaned transcript it matched
}

func (e *WatchError) Error() string {
	at := min(max(e.Offset, 0), contextBytes, len(e.Context)) // where the hit starts in Context
	return fmt.Sprintf("console %s: watcher %q fired on %q at offset %d; output around it:\n%s", e.Console, e.Watch, clip(e.Text, 200), e.Offset, quoteAround(e.Context, at))
}

// ClosedError is returned when the console ends before a pattern matches.
type ClosedError struct {
	Console string
	Err     error  // the port's error, or io.EOF
	Tail    string // the end of the unmatched text after the cursor, at most 2 KiB
	// Unmatched is how many bytes of cleaned text had arrived after the
	// cursor.
	Unmatched int
}

func (e *ClosedError) Error() string {
	return fmt.Sprintf("console %s: port closed (%v) while waiting; %s", e.Console, e.Err, describeTail(e.Tail, e.Unmatched))
}

// Unwrap returns the port's error and [ErrClosed].
func (e *ClosedError) Unwrap() []error { return []error{ErrClosed, e.Err} }

// describeTail describes the unmatched output: tail is its end, total its
// whole length (0: unknown, taken as len(tail)).
func describeTail(tail string, total int) string {
	if tail == "" && total == 0 {
		return "nothing arrived after the cursor"
	}
	return "unmatched output after the cursor:\n" + quoteOutput(tail, total)
}

// quoteOutput indents the end of some output for an error message: at most
// msgMaxLines lines and msgMaxBytes bytes of tail, the end of total bytes,
// saying how much was left out.
func quoteOutput(tail string, total int) string {
	total = max(total, len(tail))
	s := strings.TrimRight(tail, "\n")
	trimmed := len(tail) - len(s) // trailing newlines, not worth quoting
	if len(s) > msgMaxBytes {
		s = s[len(s)-msgMaxBytes:]
		if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
			s = s[i+1:] // whole lines only, when there are any
		}
	}
	if lines := strings.Split(s, "\n"); len(lines) > msgMaxLines {
		s = strings.Join(lines[len(lines)-msgMaxLines:], "\n")
	}
	out := "\t| " + strings.ReplaceAll(s, "\n", "\n\t| ")
	if left := total - len(s) - trimmed; left > 0 {
		out = fmt.Sprintf("\t(%d earlier bytes left out; the console log has the whole output)\n", left) + out
	}
	return out
}

// quoteAround indents the lines around offset at of s for an error message:
// at most half of msgMaxLines lines and msgMaxBytes bytes on either side.
func quoteAround(s string, at int) string {
	before, after := s[:at], s[at:]
	if i := strings.LastIndexByte(before, '\n'); i >= 0 {
		before, after = before[:i+1], before[i+1:]+after // the hit's line goes after
	} else {
		before, after = "", before+after
	}
	if len(before) > msgMaxBytes/2 {
		before = before[len(before)-msgMaxBytes/2:]
	}
	bl := strings.Split(strings.TrimSuffix(before, "\n"), "\n")
	if before == "" {
		bl = nil
	}
	if len(bl) > msgMaxLines/2 {
		bl = bl[len(bl)-msgMaxLines/2:]
	}
	if len(after) > msgMaxBytes/2 {
		after = after[:msgMaxBytes/2]
	}
	al := strings.Split(strings.TrimRight(after, "\n"), "\n")
	if len(al) > msgMaxLines/2 {
		al = al[:msgMaxLines/2]
	}
	return "\t| " + strings.Join(append(bl, al...), "\n\t| ") + "\n\t(the console log has the whole output)"
}

// clip shortens s for a message to at most n bytes.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("... (%d bytes)", len(s))
}
