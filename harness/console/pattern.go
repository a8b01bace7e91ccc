package console

import (
	"bytes"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strconv"
)

// Pattern is something [Console.Expect] waits for: a literal string
// ([String]), a regular expression ([Regexp], [RE]) or a prompt ([Prompt]).
//
// Patterns are matched against the cleaned transcript (see [Options]) and
// never against more than the text that has arrived since the cursor.
// Matching costs time linear in the bytes read, whatever the size of the
// transcript:
//
//   - A string is searched only in new text plus len(s)-1 bytes of overlap.
//   - A regexp that cannot match a newline is searched from the start of the
//     line the new text continues; one that can (e.g. `a\nb`, `(?s).`, `\s`)
//     looks back at most [Options.Window] bytes, so its matches must be
//     shorter than that.
//   - A regexp anchored at a line end (`$`, `\z`, `(?m)$`) is searched only
//     in complete lines, i.e. up to the last newline received: its captures
//     never come from a line still arriving. Use [Prompt] for text that
//     ends without a newline.
//   - `^` matches at the cursor and, with (?m), after every newline.
type Pattern struct {
	src  string
	lit  []byte
	re   *regexp.Regexp
	kind patternKind

	lines bool // anchored at a line end: search complete lines only
	nl    bool // can match a newline: look back a window, not a line
}

type patternKind uint8

const (
	kindString patternKind = iota
	kindRegexp
	kindPrompt
)

// String returns a pattern matching s literally.
func String(s string) Pattern {
	return Pattern{src: strconv.Quote(s), lit: []byte(s), kind: kindString, nl: bytes.IndexByte([]byte(s), '\n') >= 0}
}

// Regexp returns a pattern matching re. [Match.Groups] carries its capture
// groups.
func Regexp(re *regexp.Regexp) Pattern {
	p := Pattern{src: "/" + re.String() + "/", re: re, kind: kindRegexp}
	p.lines, p.nl = analyse(re.String())
	return p
}

// RE compiles expr with [regexp.MustCompile] and returns its pattern. It
// panics on a malformed expression, so use it for constants; compile
// expressions built at run time with [regexp.Compile] and pass them to
// [Regexp].
func RE(expr string) Pattern { return Regexp(regexp.MustCompile(expr)) }

// Prompt returns a pattern matching expr only at the end of the text received
// so far: a shell or login prompt, which ends without a newline and after
// which the device waits for input. A prompt that was followed by more output
// before anybody waited for it does not match; helpers that wait for prompts
// recover by sending a newline.
func Prompt(expr string) (Pattern, error) {
	re, err := regexp.Compile(`(?:` + expr + `)\z`)
	if err != nil {
		return Pattern{}, fmt.Errorf("console: bad prompt pattern %q: %w", expr, err)
	}
	_, nl := analyse(expr)
	return Pattern{src: "prompt /" + expr + "/", re: re, kind: kindPrompt, nl: nl}, nil
}

// MustPrompt is like [Prompt] but panics on a malformed expression.
func MustPrompt(expr string) Pattern {
	p, err := Prompt(expr)
	if err != nil {
		panic(err)
	}
	return p
}

// String describes the pattern for messages.
func (p Pattern) String() string { return p.src }

// analyse reports whether a regular expression is anchored at a line end and
// whether it can match a newline.
func analyse(expr string) (lines, nl bool) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return false, true // cannot happen for a compiled regexp; be conservative
	}
	var walk func(*syntax.Regexp)
	walk = func(r *syntax.Regexp) {
		switch r.Op {
		case syntax.OpEndLine, syntax.OpEndText:
			lines = true
		case syntax.OpAnyChar:
			nl = true
		case syntax.OpLiteral:
			for _, c := range r.Rune {
				if c == '\n' {
					nl = true
				}
			}
		case syntax.OpCharClass:
			for i := 0; i+1 < len(r.Rune); i += 2 {
				if r.Rune[i] <= '\n' && '\n' <= r.Rune[i+1] {
					nl = true
				}
			}
		}
		for _, s := range r.Sub {
			walk(s)
		}
	}
	walk(re)
	return lines, nl
}

// scan is one pattern's search state during one Expect call.
type scan struct {
	p    Pattern
	from int // where the previous search ended (absolute clean offset)
}

// find searches text[cursor:end] incrementally. It returns the match's
// absolute submatch indexes (pairs; [0],[1] the whole match), or nil.
func (s *scan) find(text []byte, cursor, end, window int) []int {
	from := max(s.from, cursor)
	switch s.p.kind {
	case kindString:
		start := max(cursor, from-len(s.p.lit)+1)
		s.from = end
		i := bytes.Index(text[start:end], s.p.lit)
		if i < 0 {
			return nil
		}
		return []int{start + i, start + i + len(s.p.lit)}
	case kindPrompt:
		s.from = end
		start := max(cursor, lineStart(text, end, window))
		if s.p.nl {
			start = max(cursor, end-window)
		}
		return offset(s.p.re.FindSubmatchIndex(text[start:end]), start)
	}
	stop := end
	if s.p.lines {
		nlAt := bytes.LastIndexByte(text[from:end], '\n')
		if nlAt < 0 {
			return nil // no new complete line yet
		}
		stop = from + nlAt
	}
	s.from = stop
	var start int
	if s.p.nl {
		start = lineStart(text, max(cursor, from-window), window)
	} else {
		start = lineStart(text, from, window)
	}
	start = max(start, cursor)
	return offset(s.p.re.FindSubmatchIndex(text[start:stop]), start)
}

// lineStart returns the offset just after the last newline before pos,
// looking back at most window bytes.
func lineStart(text []byte, pos, window int) int {
	lo := max(0, pos-window)
	if i := bytes.LastIndexByte(text[lo:pos], '\n'); i >= 0 {
		return lo + i + 1
	}
	return lo
}

func offset(loc []int, by int) []int {
	for i := range loc {
		if loc[i] >= 0 {
			loc[i] += by
		}
	}
	return loc
}
