package console

import (
	"bytes"
	"slices"
)

// cleaner turns the raw byte stream of a console into the text that patterns
// are matched against. It is a streaming state machine: an escape sequence or
// a CR/LF pair split across two reads is handled exactly as if it had arrived
// in one.
//
// With stripANSI it removes ANSI/VT100 escape sequences (CSI "ESC [ ... final",
// control strings, charset designations "ESC ( B" and plain two-byte
// sequences), and NUL bytes. With newlines it turns every line break variant
// into a single "\n": "\r\n", "\r\r\n" (ptys with onlcr) and a lone "\r" (a
// progress bar redrawing its line) all become "\n". A "\r" at the end of a
// read is held back until the next byte shows which variant it starts.
//
// Control strings (OSC "ESC ]", DCS "ESC P", SOS "ESC X", PM "ESC ^", APC
// "ESC _") end where ECMA-48 terminals end them: at ST ("ESC \") or BEL. They
// are aborted, as a terminal aborts them, by CAN and SUB (both swallowed) and
// by an ESC that does not start ST (the ESC starts the next sequence). Unlike
// a terminal, the cleaner also aborts a control string at a line break (CR or
// LF), which then counts as text: no real payload contains one, and a stray
// "ESC ]" in a command's output ("printf 'x\e]'") must not swallow the lines
// after it, such as the end marker of [Console.Run]. A control string longer
// than maxStringSeq bytes ends there too. Inside any escape sequence a C0
// control byte other than ESC, CAN and SUB ends the sequence and counts as
// text, so an escape sequence never eats a line break.
type cleaner struct {
	stripANSI bool
	newlines  bool

	state     escState
	stringLen int // bytes inside the current string sequence
	pendingCR bool
}

type escState uint8

const (
	escNone    escState = iota
	escStart            // after ESC
	escCSI              // inside "ESC [": parameters until a final byte
	escString           // inside OSC/DCS/SOS/PM/APC: until BEL or "ESC \"
	escStrEsc           // ESC seen inside a string sequence
	escCharset          // after "ESC (" and friends: one more byte
)

// maxStringSeq bounds how long an unterminated control string without a line
// break may swallow output: a corrupt stream must not hide the rest of the
// console.
const maxStringSeq = 4096

const (
	can = 0x18 // cancels an escape sequence
	sub = 0x1a // cancels an escape sequence
	esc = 0x1b
)

// feed appends the cleaned form of p to dst and returns it.
func (c *cleaner) feed(dst, p []byte) []byte {
	if !c.stripANSI && !c.newlines {
		return append(dst, p...)
	}
	// Runs of plain text are copied whole: the next ESC and NUL are found
	// with bytes.IndexByte and remembered, and the CRs of the text before
	// them one line at a time, so each byte of the input is looked at a
	// constant number of times.
	nextESC, nextNUL := -1, -1
	for i := 0; i < len(p); {
		if c.state == escNone && !c.pendingCR && c.newlines {
			// The common case: lines of plain text ending in "\r\n",
			// copied line by line into dst's spare room.
			lim := len(p)
			if c.stripANSI {
				if nextESC < i {
					nextESC = indexFrom(p, i, esc)
				}
				if nextNUL < i {
					nextNUL = indexFrom(p, i, 0)
				}
				lim = min(nextESC, nextNUL)
			}
			dst = slices.Grow(dst, lim-i)
			out, n := dst[:cap(dst)], len(dst)
			for i < lim {
				j := bytes.IndexByte(p[i:lim], '\r')
				if j < 0 {
					n += copy(out[n:], p[i:lim])
					i = lim
					break
				}
				n += copy(out[n:], p[i:i+j])
				if i += j; i+1 < lim && p[i+1] == '\n' {
					out[n] = '\n'
					n++
					i += 2
					continue
				}
				break // a CR the state machine resolves
			}
			dst = out[:n]
			if i == len(p) {
				break
			}
		} else if c.state == escNone && !c.newlines {
			// stripANSI only: text up to the next ESC or NUL.
			if nextESC < i {
				nextESC = indexFrom(p, i, esc)
			}
			if nextNUL < i {
				nextNUL = indexFrom(p, i, 0)
			}
			stop := min(nextESC, nextNUL)
			dst = append(dst, p[i:stop]...)
			if i = stop; i == len(p) {
				break
			}
		}
		dst = c.step(dst, p[i])
		i++
	}
	return dst
}

// indexFrom returns the offset of the first b in p at or after i, or len(p).
func indexFrom(p []byte, i int, b byte) int {
	if j := bytes.IndexByte(p[i:], b); j >= 0 {
		return i + j
	}
	return len(p)
}

// step feeds one byte through the state machine.
func (c *cleaner) step(dst []byte, b byte) []byte {
	for {
		switch c.state {
		case escStart:
			switch {
			case b == esc:
				return dst // ESC ESC: the second one starts the sequence
			case b == '[':
				c.state = escCSI
			case b == ']' || b == 'P' || b == 'X' || b == '^' || b == '_':
				c.state, c.stringLen = escString, 0
			case b == ' ' || b == '(' || b == ')' || b == '*' || b == '+' || b == '-' || b == '.' || b == '/' || b == '#' || b == '%':
				c.state = escCharset
			case b == can || b == sub:
				c.state = escNone
			case b < 0x20 || b >= 0x7f:
				// A control byte (or non-ASCII) ends the sequence and is
				// text.
				c.state = escNone
				continue
			default:
				c.state = escNone // a two-byte sequence: ESC 7, ESC M, ...
			}
			return dst
		case escCSI:
			switch {
			case b >= 0x40 && b <= 0x7e:
				c.state = escNone
				return dst
			case b >= 0x20 && b <= 0x3f:
				return dst
			case b == can || b == sub:
				c.state = escNone
				return dst
			}
			// Any other byte (ESC included) ends the sequence and is
			// processed as if no sequence had been open.
			c.state = escNone
			continue
		case escString:
			c.stringLen++
			switch {
			case b == 0x07:
				c.state = escNone
			case b == esc:
				c.state = escStrEsc
			case b == can || b == sub:
				c.state = escNone
			case b == '\n' || b == '\r':
				c.state = escNone
				continue // the line break is text
			case c.stringLen > maxStringSeq:
				c.state = escNone
			}
			return dst
		case escStrEsc:
			if b == '\\' {
				c.state = escNone
				return dst
			}
			// The ESC aborts the string and starts a new sequence; b is its
			// first byte.
			c.state = escStart
			continue
		case escCharset:
			if b >= 0x20 && b <= 0x7e {
				c.state = escNone
				return dst
			}
			c.state = escNone
			if b == can || b == sub {
				return dst
			}
			continue
		}
		// Plain text. An escape sequence is invisible: a CR before one is
		// resolved by the first visible byte after it.
		if c.stripANSI && b == esc {
			c.state = escStart
			return dst
		}
		if c.newlines {
			if b == '\r' {
				c.pendingCR = true
				return dst
			}
			if c.pendingCR {
				c.pendingCR = false
				dst = append(dst, '\n')
				if b == '\n' {
					return dst
				}
			}
		}
		if c.stripANSI && b == 0 {
			return dst
		}
		return append(dst, b)
	}
}
