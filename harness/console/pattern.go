package console

import (
	"bytes"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strconv"
	"unicode/utf8"
)

// Pattern is something [Console.Expect] waits for: a literal string
// ([String]), a regular expression ([Regexp], [RE]) or a prompt ([Prompt]).
//
// Patterns are matched against the cleaned transcript (see [Options]) and
// never against text before the cursor. Matching costs time linear in the
// bytes read, whatever the size of the transcript:
//
//   - A string is searched only in new text plus len(s)-1 bytes of overlap.
//   - A regexp is matched in multi-line mode: `^` and `$` match at line
//     boundaries (and `^` also at the cursor), whatever the chunks the port
//     delivered. A regexp with `$` is searched in complete lines only, each
//     line once, so its captures never come from a line still arriving.
//     Other regexps are searched eagerly in the line the new text continues,
//     looking back at most [Options.Window] bytes, so they match prompts and
//     text without a newline at once; one that can match a newline (`a\nb`,
//     `(?s).`, `\s`) sees at most Window bytes before the new text.
//   - `\z` means the end of what has arrived: such a regexp, like [Prompt],
//     matches only at the end of the received text.
type Pattern struct {
	src  string
	lit  []byte
	re   *regexp.Regexp
	kind patternKind

	lines  bool // anchored at a line end: search complete lines only
	nl     bool // can match a newline: look back a window, not a line
	begin  bool // anchored at a line start or word boundary: the region must start where the text does
	maxLen int  // longest possible match in bytes, or -1 when unbounded
}

type patternKind uint8

const (
	kindString patternKind = iota
	kindRegexp
	kindPrompt
)

// String returns a pattern matching s literally. s must not be empty.
func String(s string) Pattern {
	return Pattern{src: strconv.Quote(s), lit: []byte(s), kind: kindString, nl: bytes.IndexByte([]byte(s), '\n') >= 0}
}

// Regexp returns a pattern matching re in multi-line mode (see [Pattern]).
// [Match.Groups] carries its capture groups.
func Regexp(re *regexp.Regexp) Pattern {
	p := Pattern{src: "/" + re.String() + "/", kind: kindRegexp}
	// Multi-line mode makes ^ and $ line anchors, so that a match never
	// depends on where the port split its output.
	ml, err := regexp.Compile(`(?m:` + re.String() + `)`)
	if err != nil {
		ml = re
	}
	p.re = ml
	var tail bool
	p.lines, p.nl, tail = analyse(ml.String())
	p.begin, p.maxLen = bounds(ml.String())
	if tail {
		p.kind, p.lines = kindPrompt, false
	}
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
	_, nl, _ := analyse(expr)
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

// analyse reports whether a regular expression is anchored at a line end,
// whether it can match a newline, and whether it is anchored at the end of
// the text (\z).
func analyse(expr string) (lines, nl, tail bool) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return false, true, false // cannot happen for a compiled regexp; be conservative
	}
	var walk func(*syntax.Regexp)
	walk = func(r *syntax.Regexp) {
		switch r.Op {
		case syntax.OpEndLine:
			lines = true
		case syntax.OpEndText:
			tail = true
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
	return lines, nl, tail
}

// bounds reports whether a regular expression has a start anchor (^, \A,
// \b, \B) and the longest match it can make in bytes (-1: unbounded). An
// unanchored, bounded regexp searched again after new text arrives needs to
// look back only that far.
func bounds(expr string) (begin bool, maxLen int) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return true, -1
	}
	var walk func(*syntax.Regexp) int
	walk = func(r *syntax.Regexp) int {
		switch r.Op {
		case syntax.OpBeginLine, syntax.OpBeginText, syntax.OpWordBoundary, syntax.OpNoWordBoundary:
			begin = true
			return 0
		case syntax.OpEmptyMatch, syntax.OpEndLine, syntax.OpEndText:
			return 0
		case syntax.OpLiteral:
			return utf8.UTFMax * len(r.Rune)
		case syntax.OpCharClass, syntax.OpAnyChar, syntax.OpAnyCharNotNL:
			return utf8.UTFMax
		case syntax.OpCapture, syntax.OpQuest:
			return walk(r.Sub[0])
		case syntax.OpStar, syntax.OpPlus:
			walk(r.Sub[0])
			return -1
		case syntax.OpRepeat:
			n := walk(r.Sub[0])
			if r.Max < 0 || n < 0 {
				return -1
			}
			return n * r.Max
		case syntax.OpConcat, syntax.OpAlternate:
			total := 0
			for _, sub := range r.Sub {
				n := walk(sub)
				if total < 0 || n < 0 {
					total = -1
					continue
				}
				if r.Op == syntax.OpConcat {
					total += n
				} else {
					total = max(total, n)
				}
			}
			return total
		}
		return -1
	}
	maxLen = walk(re)
	return begin, maxLen
}

// scan is one pattern's search state during one Expect call.
type scan struct {
	p    Pattern
	from int // where the previous search ended (absolute clean offset)
	seen int // for line-anchored patterns: text up to here has no newline after from
}

// find searches text[cursor:end] incrementally. It returns the match's
// absolute submatch indexes (pairs; [0],[1] the whole match), or nil.
func (s *scan) find(text []byte, cursor, end, window int) []int {
	from := max(s.from, cursor)
	switch {
	case s.p.kind == kindString:
		start := max(cursor, from-len(s.p.lit)+1)
		s.from = end
		i := bytes.Index(text[start:end], s.p.lit)
		if i < 0 {
			return nil
		}
		return []int{start + i, start + i + len(s.p.lit)}
	case s.p.kind == kindPrompt:
		s.from = end
		start := max(cursor, lineStart(text, end, window))
		if s.p.nl {
			start = max(cursor, end-window)
		}
		return offset(s.p.re.FindSubmatchIndex(text[start:end]), start)
	case s.p.lines:
		// Complete lines only, each searched once: from the end of the
		// last searched line to the last newline, included.
		// Look for a newline only in text not looked at before: a long line
		// arriving byte by byte costs nothing until it ends.
		look := max(from, s.seen)
		nlAt := bytes.LastIndexByte(text[look:end], '\n')
		s.seen = end
		if nlAt < 0 {
			return nil
		}
		stop := look + nlAt + 1
		start := from
		if s.p.nl {
			start = max(cursor, lineStart(text, max(cursor, from-window), window))
		} else if start > cursor && text[start-1] != '\n' {
			start = max(cursor, lineStart(text, start, window))
		}
		s.from = stop
		loc := s.p.re.FindSubmatchIndex(text[start:stop])
		if loc == nil || start+loc[0] == stop {
			return nil // an empty match after the last newline is no line
		}
		return offset(loc, start)
	}
	// A regexp without an end anchor is searched eagerly, so that it
	// matches text still without a newline. A match not found before must
	// end in the new text, which bounds how far back to look.
	s.from = end
	start := s.eagerStart(text, cursor, from, end, window)
	if start < 0 {
		return nil
	}
	return offset(s.p.re.FindSubmatchIndex(text[start:end]), start)
}

// eagerStart returns where to search an eager regexp whose last search ended
// at from, or -1 when no new match is possible.
func (s *scan) eagerStart(text []byte, cursor, from, end, window int) int {
	// floor: a line start (or the cursor), at most a window back: the
	// earliest any new match can start.
	var floor int
	if s.p.nl {
		floor = max(cursor, lineStart(text, max(cursor, from-window), window))
	} else {
		floor = max(cursor, lineStart(text, from, window))
	}
	if s.p.maxLen < 0 {
		return floor
	}
	start := max(floor, from-s.p.maxLen)
	if !s.p.begin || start == floor {
		return start
	}
	// Anchored at a line start: the region must begin at a true line start
	// (or the cursor). Within reach of the old text there is none, so only
	// lines that begin in the new text can match.
	if i := bytes.IndexByte(text[from:end], '\n'); i >= 0 {
		return from + i + 1
	}
	return -1
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
