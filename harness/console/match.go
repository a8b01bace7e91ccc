package console

import "bytes"

// scan is one pattern's search state during one Expect call (or one
// watcher's for its lifetime).
type scan struct {
	p    Pattern
	from int // where the previous search ended (absolute clean offset)
	seen int // for line-anchored patterns: text up to here has no newline after from
}

// find searches the cleaned transcript after the cursor incrementally, up to
// end. text holds the transcript's bytes [base, end): the caller gives at
// least the window the pattern may look back (see viewFor); nothing before
// base is looked at. final says that end is the end of what has arrived
// (prompts match only there). find returns the match's absolute submatch
// indexes (pairs; [0],[1] the whole match), or nil.
//
// Each byte is searched a bounded number of times whatever the port's
// chunking: a string in new text plus len(s)-1 bytes of overlap, a
// line-anchored regexp once per complete line, and an eager regexp only when
// its required literal (see required) turns up in new text, or in at most
// a window per search when it has none.
func (s *scan) find(text []byte, base, cursor, end, window int, final bool) []int {
	lo := max(cursor, base) // nothing before this exists for the search
	from := max(s.from, lo)
	at := func(i int) []byte { return text[i-base:] } // text from absolute offset i
	switch {
	case s.p.kind == kindString:
		start := max(lo, from-len(s.p.lit)+1)
		s.from = end
		i := bytes.Index(text[start-base:end-base], s.p.lit)
		if i < 0 {
			return nil
		}
		return []int{start + i, start + i + len(s.p.lit)}
	case s.p.kind == kindPrompt:
		if !final {
			return nil // a prompt is what the text ends with
		}
		s.from = end
		if !s.needAt(text, base, max(lo, end-s.p.needTail-len(s.p.need)), end) {
			return nil
		}
		start := max(lo, lineStart(text, base, end, window))
		if s.p.nl {
			start = max(lo, end-window)
		}
		if !s.p.begin && s.p.maxLen >= 0 {
			start = max(start, end-s.p.maxLen)
		}
		return offset(s.p.re.FindSubmatchIndex(text[start-base:end-base]), start)
	case s.p.lines:
		// Complete lines only, each searched once: from the end of the
		// last searched line to the last newline, included.
		// Look for a newline only in text not looked at before: a long line
		// arriving byte by byte costs nothing until it ends.
		look := max(from, s.seen)
		nlAt := bytes.LastIndexByte(text[look-base:end-base], '\n')
		s.seen = end
		if nlAt < 0 {
			return nil
		}
		stop := look + nlAt + 1
		start := from
		if s.p.nl {
			start = max(lo, lineStart(text, base, max(lo, from-window), window))
		} else if start > lo && at(start - 1)[0] != '\n' {
			start = max(lo, lineStart(text, base, start, window))
		}
		s.from = stop
		loc := s.p.re.FindSubmatchIndex(text[start-base : stop-base])
		if loc == nil || start+loc[0] == stop {
			return nil // an empty match after the last newline is no line
		}
		return offset(loc, start)
	}
	// A regexp without an end anchor is searched eagerly, so that it
	// matches text still without a newline. A match not found before must
	// end in the new text, which bounds how far back to look.
	s.from = end
	if !s.needAt(text, base, max(lo, from-s.p.needTail-len(s.p.need)+1), end) {
		return nil
	}
	start := s.eagerStart(text, base, lo, from, end, window)
	if start < 0 {
		return nil
	}
	return offset(s.p.re.FindSubmatchIndex(text[start-base:end-base]), start)
}

// needAt reports whether the pattern's required literal occurs in [lo, end),
// or the pattern has none.
func (s *scan) needAt(text []byte, base, lo, end int) bool {
	if len(s.p.need) == 0 {
		return true
	}
	lo = max(lo, base)
	return lo < end && bytes.Contains(text[lo-base:end-base], s.p.need)
}

// eagerStart returns where to search an eager regexp whose last search ended
// at from, or -1 when no new match is possible.
func (s *scan) eagerStart(text []byte, base, lo, from, end, window int) int {
	// floor: a line start (or the cursor), at most a window back: the
	// earliest any new match can start.
	var floor int
	if s.p.nl {
		floor = max(lo, lineStart(text, base, max(lo, from-window), window))
	} else {
		floor = max(lo, lineStart(text, base, from, window))
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
	if i := bytes.IndexByte(text[from-base:end-base], '\n'); i >= 0 {
		return from + i + 1
	}
	return -1
}

// lookBack is how far before the text it has not searched yet a pattern may
// look: lineStart looks a window back from a point up to a window back.
func lookBack(p *Pattern, window int) int {
	if p.kind == kindString {
		return len(p.lit) // the overlap with the text searched before
	}
	return 2*window + len(p.lit) + len(p.need) + max(p.needTail, 0)
}

// lineStart returns the offset just after the last newline before pos,
// looking back at most window bytes (and not before base).
func lineStart(text []byte, base, pos, window int) int {
	lo := max(base, pos-window)
	if lo >= pos {
		return lo
	}
	if i := bytes.LastIndexByte(text[lo-base:pos-base], '\n'); i >= 0 {
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
