package console

import (
	"bytes"
	"testing"
)

// FuzzCleanerMatchesStateMachine checks feed's fast paths (plain text and
// "\r\n" copied whole) against the state machine fed one byte at a time,
// for every mode and any chunking.
func FuzzCleanerMatchesStateMachine(f *testing.F) {
	f.Add([]byte("a\x1b[1mb\x1b[0m\r\r\nc\r\nd\re\x00f\x1b]0;t\x07g\r"), []byte{3, 1, 7})
	f.Add(bytes.Repeat([]byte("line of text\r\n"), 20), []byte{64, 200, 1})
	f.Fuzz(func(t *testing.T, in, cuts []byte) {
		for mode := range 4 {
			ref := cleaner{newlines: mode&1 != 0, stripANSI: mode&2 != 0}
			var want []byte
			if mode == 0 {
				want = append(want, in...)
			} else {
				for _, b := range in {
					want = ref.step(want, b)
				}
			}
			c := cleaner{newlines: mode&1 != 0, stripANSI: mode&2 != 0}
			var got []byte
			rest := in
			for k := 0; len(rest) > 0; k++ {
				n := len(rest)
				if len(cuts) > 0 {
					n = min(n, 1+int(cuts[k%len(cuts)]))
				}
				got = c.feed(got, rest[:n])
				rest = rest[n:]
			}
			if !bytes.Equal(want, got) || c.pendingCR != ref.pendingCR || c.state != ref.state {
				t.Fatalf("mode %d: feed gives %q (pending CR %v, state %d), the state machine %q (%v, %d)", mode, got, c.pendingCR, c.state, want, ref.pendingCR, ref.state)
			}
		}
	})
}
