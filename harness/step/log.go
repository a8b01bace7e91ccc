package step

import (
	"strconv"
	"strings"
	"time"
	"unicode"
)

// maxLogError is how much of a failed step's error its end line shows; the
// JSON records keep all of it.
const maxLogError = 300

// LogSink returns a sink that writes each event as one line to logf (such
// as t.Logf), indented two spaces per depth:
//
//	→ sim-0: flash image=/tmp/a.img
//	  → storage host
//	  ← storage host (2ms) ok
//	← sim-0: flash (1.204s) ok bytes=1048576
//
// A line names the device where it differs from the enclosing step's. An
// end line says "ok" and the step's results, or "error: " and the first
// line of its error.
func LogSink(logf func(format string, args ...any)) Sink {
	return SinkFunc(func(e Event) { logf("%s", LogLine(e)) })
}

// LogLine renders e as [LogSink] does.
func LogLine(e Event) string {
	var b strings.Builder
	b.WriteString(strings.Repeat("  ", e.Depth))
	if e.Kind == Started {
		b.WriteString("→ ")
	} else {
		b.WriteString("← ")
	}
	if (e.showDevice || e.Depth == 0) && e.Device != "" {
		b.WriteString(e.Device)
		b.WriteString(": ")
	}
	b.WriteString(e.Name)
	if e.Kind == Started {
		writeArgs(&b, e.Args)
		return b.String()
	}
	b.WriteString(" (")
	b.WriteString(roundDuration(e.Duration).String())
	b.WriteString(") ")
	if e.Outcome == OK {
		b.WriteString("ok")
		writeArgs(&b, e.Result)
		return b.String()
	}
	b.WriteString("error: ")
	b.WriteString(firstLine(e.Error, maxLogError))
	return b.String()
}

func writeArgs(b *strings.Builder, args []Arg) {
	for _, a := range args {
		b.WriteByte(' ')
		b.WriteString(a.Key)
		b.WriteByte('=')
		b.WriteString(quoteValue(a.Value))
	}
}

// quoteValue quotes a value that would not read back as one word.
func quoteValue(v string) string {
	if v == "" || strings.ContainsFunc(v, func(r rune) bool {
		return unicode.IsSpace(r) || r == '"' || r == '=' || !unicode.IsPrint(r)
	}) {
		return strconv.Quote(v)
	}
	return v
}

// roundDuration rounds d for people: to the millisecond, to the tenth of a
// second past a minute, to the microsecond below a millisecond.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= time.Minute:
		return d.Round(100 * time.Millisecond)
	case d < time.Millisecond:
		return d.Round(time.Microsecond)
	}
	return d.Round(time.Millisecond)
}

// firstLine is s up to its first newline and at most limit bytes, marked
// when cut.
func firstLine(s string, limit int) string {
	cut := false
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s, cut = s[:i], true
	}
	if len(s) > limit {
		s, cut = strings.ToValidUTF8(s[:limit], ""), true
	}
	if cut {
		s += " …"
	}
	return s
}
