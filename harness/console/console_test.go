package console

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newTestConsole(t *testing.T, opts Options) (*Console, *fakePort) {
	t.Helper()
	p := newFakePort()
	c := New(p, opts)
	t.Cleanup(func() { _ = c.Close() })
	return c, p
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestCleanerIsIndependentOfChunking(t *testing.T) {
	in := "a\x1b[01;32mgreen\x1b[0m\r\r\nb\r\nc\rd\x1b]0;title\x07e\x1b]2;t\x1b\\f\x1b(Bg\x00h\x1b[?2004hi\r\nj\r\x1b[0m\nk\x1b\x1b[31ml\r\n"
	want := "agreen\nb\nc\ndefghi\nj\nkl\n"
	whole := (&cleaner{stripANSI: true, newlines: true}).feed(nil, []byte(in))
	require.Equal(t, want, string(whole))
	for i := 0; i <= len(in); i++ {
		for j := i; j <= len(in); j++ {
			c := &cleaner{stripANSI: true, newlines: true}
			var out []byte
			out = c.feed(out, []byte(in[:i]))
			out = c.feed(out, []byte(in[i:j]))
			out = c.feed(out, []byte(in[j:]))
			require.Equal(t, want, string(out), "split at %d,%d", i, j)
		}
	}
	keep := (&cleaner{}).feed(nil, []byte(in))
	assert.Equal(t, in, string(keep), "with cleaning off the text is the raw bytes")
}

func TestExpectMovesCursorOnlyOnMatch(t *testing.T) {
	c, p := newTestConsole(t, Options{Name: "t"})
	p.EmitString("U-Boot 2024.01\r\nloading kernel\r\nbooting\r\n")
	m, err := c.Expect(ctxFor(t, 5*time.Second), String("kernel"))
	require.NoError(t, err)
	assert.Equal(t, "U-Boot 2024.01\nloading ", m.Before)
	assert.Equal(t, "kernel", m.Text)
	assert.Equal(t, m.End, c.Cursor())

	before := c.Cursor()
	_, err = c.Expect(ctxFor(t, 50*time.Millisecond), String("login:"))
	var te *TimeoutError
	require.ErrorAs(t, err, &te)
	assert.ErrorIs(t, err, ErrTimeout)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, before, c.Cursor(), "a timeout moves nothing")
	assert.Equal(t, "\nbooting\n", te.Tail)
	assert.Contains(t, err.Error(), `"login:"`)
	assert.Contains(t, err.Error(), "| booting")

	// The text the timed-out expect saw is still there for the next one.
	m, err = c.Expect(ctxFor(t, 5*time.Second), RE(`boot(ing)`))
	require.NoError(t, err)
	assert.Equal(t, []string{"booting", "ing"}, m.Groups)
}

func TestExpectAnyOfPicksEarliestMatch(t *testing.T) {
	c, p := newTestConsole(t, Options{})
	p.EmitString("one two three\n")
	m, err := c.Expect(ctxFor(t, 5*time.Second), String("three"), RE(`t(w)o`), String("one two"))
	require.NoError(t, err)
	assert.Equal(t, 2, m.Index, "the match starting first wins")
	m, err = c.Expect(ctxFor(t, 5*time.Second), String("three"), RE(`t\w+`))
	require.NoError(t, err)
	assert.Equal(t, 0, m.Index, "on equal starts the first pattern wins")
}

func TestChattyConsoleStillTimesOut(t *testing.T) {
	c, p := newTestConsole(t, Options{})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		line := []byte("[ 1.0] some driver keeps logging the same line\r\n")
		for {
			select {
			case <-stop:
				return
			default:
				p.Emit(line)
			}
		}
	}()
	start := time.Now()
	_, err := c.Expect(ctxFor(t, 300*time.Millisecond), String("never printed"), RE(`(?m)^nor this$`))
	elapsed := time.Since(start)
	require.ErrorIs(t, err, ErrTimeout)
	// A deadline, not an inactivity timeout: it fires although output never stops.
	assert.Less(t, elapsed, 5*time.Second)
	assert.Greater(t, c.Mark().Raw, 1000, "the console really was chatty")
}

func TestAnchoredCaptureWaitsForTheWholeLine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{})
		type result struct {
			m   *Match
			err error
		}
		done := make(chan result, 1)
		go func() {
			m, err := c.Expect(t.Context(), RE(`(?m)^VERSION_ID=(\S+)$`), RE(`BUILD=(\d+)$`))
			done <- result{m, err}
		}()
		p.EmitString("NAME=x\r\nVERSION_ID=1.")
		synctest.Wait()
		p.EmitString("2")
		synctest.Wait()
		select {
		case r := <-done:
			t.Fatalf("matched a half-received line: %+v %v", r.m, r.err)
		default:
		}
		p.EmitString("3.4\r\nBUILD=77\r\n")
		r := <-done
		require.NoError(t, r.err)
		assert.Equal(t, "1.23.4", r.m.Groups[1])
		m, err := c.Expect(t.Context(), RE(`BUILD=(\d+)$`))
		require.NoError(t, err)
		assert.Equal(t, "77", m.Groups[1])
	})
}

func TestPromptMatchesOnlyAtTheEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{})
		p.EmitString("echo $ foo\r\n\x1b[01;32mroot@dut\x1b[00m:~# ")
		m, err := c.Expect(t.Context(), MustPrompt(`[#$] `))
		require.NoError(t, err)
		assert.Equal(t, "# ", m.Text)
		assert.Equal(t, "echo $ foo\nroot@dut:~", m.Before)
	})
}

func TestWatcherFailsPendingExpectAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{})
		c.Watch("kernel panic", String("Kernel panic"))
		p.EmitString("Booting\r\nlogin ok\r\n")
		// A match before the panic is fine.
		_, err := c.Expect(t.Context(), String("Booting"))
		require.NoError(t, err)

		done := make(chan error, 1)
		start := time.Now()
		go func() {
			_, err := c.Expect(t.Context(), String("never"))
			done <- err
		}()
		synctest.Wait()
		p.EmitString("[ 1.2] Kernel panic - not syncing: VFS\r\n")
		err = <-done
		var we *WatchError
		require.ErrorAs(t, err, &we)
		assert.Equal(t, "kernel panic", we.Watch)
		assert.Contains(t, we.Context, "not syncing")
		assert.Zero(t, time.Since(start), "no time passes: the watcher fires on arrival")

		// Still reported to later expects until the cursor passes it.
		_, err = c.Expect(t.Context(), String("VFS"))
		require.ErrorAs(t, err, &we)
		c.Discard()
		p.EmitString("after\r\n")
		_, err = c.Expect(t.Context(), String("after"))
		require.NoError(t, err)
	})
}

func TestClosedPortFailsExpect(t *testing.T) {
	c, p := newTestConsole(t, Options{Name: "dut1"})
	p.EmitString("last words")
	p.Hangup()
	_, err := c.Expect(ctxFor(t, 5*time.Second), String("login:"))
	var ce *ClosedError
	require.ErrorAs(t, err, &ce)
	assert.ErrorIs(t, err, ErrClosed)
	assert.Contains(t, err.Error(), "last words")
	<-c.Done()
}

func TestContextWithoutDeadlineGetsDefaultTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := newTestConsole(t, Options{DefaultTimeout: 7 * time.Second})
		start := time.Now()
		_, err := c.Expect(context.Background(), String("x"))
		require.ErrorIs(t, err, ErrTimeout)
		assert.Equal(t, 7*time.Second, time.Since(start))
	})
}

func TestSendPacing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{CharDelay: 10 * time.Millisecond})
		start := time.Now()
		require.NoError(t, c.SendLine(t.Context(), "abc"))
		assert.Equal(t, 40*time.Millisecond, time.Since(start))
		var got []string
		for range 4 {
			got = append(got, string(<-p.Sent))
		}
		assert.Equal(t, []string{"a", "b", "c", "\n"}, got)
	})
}

func TestWriteLogTimestampsLines(t *testing.T) {
	now := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	var logBuf bytes.Buffer
	synctest.Test(t, func(t *testing.T) {
		clock := func() time.Time { return now.Add(time.Since(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC))) }
		base := clock()
		c, p := newTestConsole(t, Options{Now: func() time.Time { return now.Add(clock().Sub(base)) }, Log: &logBuf})
		from := c.Mark()
		p.EmitString("first\r\nsec")
		synctest.Wait()
		time.Sleep(1500 * time.Millisecond)
		p.EmitString("ond\r\n\x1b[1mthird")
		_, err := c.Expect(t.Context(), String("third"))
		require.NoError(t, err)
		var b bytes.Buffer
		require.NoError(t, c.WriteLog(&b, from, Mark{}))
		assert.Equal(t, "08:00:00.000000 | first\n08:00:00.000000 | second\n08:00:01.500000 | third\n", b.String())
		var raw bytes.Buffer
		require.NoError(t, c.WriteRaw(&raw, from, Mark{}))
		assert.Equal(t, "first\r\nsecond\r\n\x1b[1mthird", raw.String())
	})
	// The live log got the complete lines only, before Close flushed the rest.
	assert.True(t, strings.HasPrefix(logBuf.String(), "08:00:00.000000 | first\n08:00:00.000000 | second\n"), logBuf.String())
}

// TestNoByteLostBetweenExpects checks the cursor contract: successive
// expects, however the port chunks its output, see every byte exactly once.
func TestNoByteLostBetweenExpects(t *testing.T) {
	for seed := range uint64(50) {
		checkNoByteLost(t, seed, 3000)
	}
}

func FuzzNoByteLostBetweenExpects(f *testing.F) {
	f.Add(uint64(1), uint16(500))
	f.Add(uint64(7), uint16(4000))
	f.Fuzz(func(t *testing.T, seed uint64, n uint16) {
		checkNoByteLost(t, seed, int(n))
	})
}

func checkNoByteLost(t *testing.T, seed uint64, n int) {
	r := rand.New(rand.NewPCG(seed, 99))
	// A stream of noise with numbered tokens; the expects walk the tokens in
	// order and their Before+Text must rebuild the cleaned stream.
	var stream strings.Builder
	var tokens []string
	for i := 0; stream.Len() < n; i++ {
		switch r.IntN(4) {
		case 0:
			stream.WriteString("noise \x1b[1mbold\x1b[0m\r\n")
		case 1:
			stream.WriteString("\r\r\n")
		case 2:
			tok := fmt.Sprintf("<tok%d>", i)
			tokens = append(tokens, tok)
			stream.WriteString(tok)
			if i%3 == 0 {
				// A token alone on its line, for the anchored patterns.
				stream.WriteString("\r\n")
			}
		default:
			stream.WriteString(strings.Repeat("x", r.IntN(40)))
		}
	}
	tokens = append(tokens, "<end>")
	stream.WriteString("<end>")
	raw := []byte(stream.String())
	want := string((&cleaner{stripANSI: true, newlines: true}).feed(nil, raw))

	// Small blocks of transcript make searches and Before cross block
	// boundaries often.
	c, p := newTestConsole(t, Options{blockSize: []int{0, 1, 64, 1000, 4096}[seed%5]})
	go func() {
		for rest := raw; len(rest) > 0; {
			k := min(len(rest), 1+r.IntN(64))
			p.Emit(rest[:k])
			rest = rest[k:]
		}
	}()
	var got strings.Builder
	ctx := ctxFor(t, 10*time.Second)
	for i, tok := range tokens {
		var m *Match
		var err error
		q := regexp.QuoteMeta(tok)
		switch {
		case strings.Contains(want, "\n"+tok+"\n"):
			// Anchored at both ends, with an alternative that never matches.
			m, err = c.Expect(ctx, RE(`^`+q+`$`), RE(`^never$`))
		case i%2 == 0:
			m, err = c.Expect(ctx, String(tok))
		default:
			m, err = c.Expect(ctx, Regexp(regexp.MustCompile(q)), String("<never>"))
		}
		require.NoError(t, err, "seed %d token %s", seed, tok)
		got.WriteString(m.Before)
		got.WriteString(m.Text)
	}
	require.Equal(t, want, got.String(), "seed %d", seed)
}

func TestEmptyPatternIsRefused(t *testing.T) {
	c, p := newTestConsole(t, Options{})
	p.EmitString("anything")
	_, err := c.Expect(ctxFor(t, time.Second), String(""))
	assert.ErrorContains(t, err, "pattern 1 is empty")
	_, err = c.Expect(ctxFor(t, time.Second), String("x"), Pattern{})
	assert.ErrorContains(t, err, "pattern 2 is empty")
	// The console still works.
	_, err = c.Expect(ctxFor(t, time.Second), String("anything"))
	assert.NoError(t, err)
}

// TestAnchorsDoNotDependOnChunking feeds the same bytes whole, line by line
// and byte by byte: anchored regexps must match the same text each time.
func TestAnchorsDoNotDependOnChunking(t *testing.T) {
	stream := "hello\r\nstatus=ok\r\nworld\r\nREADY\r\nprompt# "
	patterns := []struct {
		p    Pattern
		want string
	}{
		{RE(`^world`), "world"},
		{RE(`status=(\w+)$`), "status=ok"},
		{RE(`^status=(\w+)$`), "status=ok"},
		{RE(`(?m)^READY$\n`), "READY\n"},
		{RE(`^hel+o$`), "hello"},
		{RE(`^$`), ""}, // no blank line: must not match
	}
	chunkings := map[string]func(string) []string{
		"whole": func(s string) []string { return []string{s} },
		"lines": func(s string) []string { return strings.SplitAfter(s, "\n") },
		"bytes": func(s string) []string { return strings.Split(s, "") },
		"pairs": func(s string) []string {
			var out []string
			for len(s) > 2 {
				out = append(out, s[:2])
				s = s[2:]
			}
			return append(out, s)
		},
	}
	for name, chunk := range chunkings {
		for _, pc := range patterns {
			t.Run(name+"/"+pc.p.String(), func(t *testing.T) {
				c, p := newTestConsole(t, Options{})
				for _, part := range chunk(stream) {
					p.EmitString(part)
				}
				m, err := c.Expect(ctxFor(t, 300*time.Millisecond), pc.p)
				if pc.want == "" {
					require.ErrorIs(t, err, ErrTimeout, "matched %q", m)
					return
				}
				require.NoError(t, err)
				assert.Equal(t, pc.want, m.Text)
			})
		}
	}
}
