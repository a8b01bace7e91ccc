package console

// cleaner turns the raw byte stream of a console into the text that patterns
// are matched against. It is a streaming state machine: an escape sequence or
// a CR/LF pair split across two reads is handled exactly as if it had arrived
// in one.
//
// With stripANSI it removes ANSI/VT100 escape sequences (CSI "ESC [ ... final",
// OSC and other string sequences terminated by BEL or "ESC \", charset
// designations "ESC ( B" and plain two-byte sequences), and NUL bytes.
// With newlines it turns every line break variant into a single "\n": "\r\n",
// "\r\r\n" (ptys with onlcr) and a lone "\r" (a progress bar redrawing its
// line) all become "\n". A "\r" at the end of a read is held back until the
// next byte shows which variant it starts.
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
	escString           // inside OSC/DCS/PM/APC: until BEL or "ESC \"
	escStrEsc           // ESC seen inside a string sequence
	escCharset          // after "ESC (" and friends: one more byte
)

// maxStringSeq bounds how long an unterminated OSC/DCS string may swallow
// output: a corrupt stream must not hide the rest of the console.
const maxStringSeq = 4096

// feed appends the cleaned form of p to dst and returns it.
func (c *cleaner) feed(dst, p []byte) []byte {
	if !c.stripANSI && !c.newlines {
		return append(dst, p...)
	}
	for i := 0; i < len(p); i++ {
		b := p[i]
		switch c.state {
		case escStart:
			switch b {
			case 0x1b:
				continue // ESC ESC: the second one starts the sequence
			case '[':
				c.state = escCSI
			case ']', 'P', 'X', '^', '_':
				c.state, c.stringLen = escString, 0
			case '(', ')', '*', '+', '-', '.', '/', '#', '%':
				c.state = escCharset
			default:
				c.state = escNone
			}
			continue
		case escCSI:
			switch {
			case b >= 0x40 && b <= 0x7e:
				c.state = escNone
				continue
			case b >= 0x20 && b <= 0x3f:
				continue
			}
			// A control byte inside CSI ends the sequence and counts as text.
			c.state = escNone
		case escString:
			c.stringLen++
			switch {
			case b == 0x07:
				c.state = escNone
			case b == 0x1b:
				c.state = escStrEsc
			case c.stringLen > maxStringSeq:
				c.state = escNone
			}
			continue
		case escStrEsc:
			if b == '\\' {
				c.state = escNone
				continue
			}
			// The ESC starts a new sequence; b is its first byte.
			c.state = escStart
			i--
			continue
		case escCharset:
			c.state = escNone
			continue
		}
		// Plain text. An escape sequence is invisible: a CR before one is
		// resolved by the first visible byte after it.
		if c.stripANSI && b == 0x1b {
			c.state = escStart
			continue
		}
		if c.newlines {
			if b == '\r' {
				c.pendingCR = true
				continue
			}
			if c.pendingCR {
				c.pendingCR = false
				dst = append(dst, '\n')
				if b == '\n' {
					continue
				}
			}
		}
		if c.stripANSI && b == 0 {
			continue
		}
		dst = append(dst, b)
	}
	return dst
}
