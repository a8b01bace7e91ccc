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
//     `(?s).`, `\s`) sees at most Window bytes before the new text. When
//     every match contains a literal followed by a bounded rest (`panic\s+at`
//     contains "at", `login: ?` contains "login:"), the regexp runs only
//     when new text brings that literal; until then the text costs a
//     streaming literal search. An eager regexp without such a literal and
//     without a bounded length (`\d+`) is searched over up to a line (at
//     most Window bytes) per read: prefer a literal, or `$`.
//   - `\z` means the end of what has arrived: such a regexp, like [Prompt],
//     matches only at the end of the received text.
type Pattern struct {
	src  string
	desc string // what the pattern means, for messages; "" means src
	lit  []byte
	re   *regexp.Regexp
	kind patternKind

	lines  bool // anchored at a line end: search complete lines only
	nl     bool // can match a newline: look back a window, not a line
	begin  bool // anchored at a line start or word boundary: the region must start where the text does
	maxLen int  // longest possible match in bytes, or -1 when unbounded

	// need is a literal every match contains, followed by at most needTail
	// bytes: a regexp runs only when new text brings a new occurrence of it,
	// so text without one costs a streaming literal search, not a regexp
	// run over the window.
	need     []byte
	needTail int
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
	p.need, p.needTail = required(ml.String())
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
	p := Pattern{src: "prompt /" + expr + "/", re: re, kind: kindPrompt, nl: nl}
	p.begin, p.maxLen = bounds(re.String())
	p.need, p.needTail = required(re.String())
	return p, nil
}

// MustPrompt is like [Prompt] but panics on a malformed expression.
func MustPrompt(expr string) Pattern {
	p, err := Prompt(expr)
	if err != nil {
		panic(err)
	}
	return p
}

// String describes the pattern for messages: its description when
// [Pattern.Describe] gave it one, else its source.
func (p Pattern) String() string {
	if p.desc != "" {
		return p.desc
	}
	return p.src
}

// Source returns the pattern as written: a quoted string, "/regexp/" or
// "prompt /regexp/".
func (p Pattern) Source() string { return p.src }

// Describe returns a copy of p that messages (such as a [TimeoutError]'s)
// call what, e.g. "the end of command \"ls\"" instead of the regexp that
// finds it. The source stays available in [TimeoutError.Sources].
func (p Pattern) Describe(what string) Pattern {
	p.desc = what
	return p
}

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

// required returns the longest literal that every match of a regular
// expression contains as one of its top-level pieces and that is followed by
// a bounded rest, with that rest's longest length in bytes; nil when there is
// none. A match that ends in new text then has an occurrence of the literal
// ending at most tail bytes before the new text.
func required(expr string) (lit []byte, tail int) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil, 0
	}
	pieces := []*syntax.Regexp{re}
	if re.Op == syntax.OpConcat {
		pieces = re.Sub
	}
	rest := 0 // longest length of pieces[i+1:]
	for i := len(pieces) - 1; i >= 0 && rest >= 0; i-- {
		r := pieces[i]
		for r.Op == syntax.OpCapture {
			r = r.Sub[0]
		}
		if r.Op == syntax.OpLiteral && r.Flags&syntax.FoldCase == 0 {
			b := []byte(string(r.Rune))
			if len(b) > len(lit) {
				lit, tail = b, rest
			}
		}
		_, n := bounds(pieces[i].String())
		if n < 0 {
			break
		}
		rest += n
	}
	return lit, tail
}
