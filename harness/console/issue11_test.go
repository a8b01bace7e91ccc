package console

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cleanAllChunkings cleans in whole, byte by byte and in pairs, and requires
// the same text each way.
func cleanAllChunkings(t *testing.T, in string) string {
	t.Helper()
	whole := string((&cleaner{stripANSI: true, newlines: true}).feed(nil, []byte(in)))
	for _, size := range []int{1, 2, 3} {
		c := &cleaner{stripANSI: true, newlines: true}
		var out []byte
		for rest := []byte(in); len(rest) > 0; {
			k := min(size, len(rest))
			out = c.feed(out, rest[:k])
			rest = rest[k:]
		}
		require.Equal(t, whole, string(out), "chunks of %d of %q", size, in)
	}
	return whole
}

func TestControlStringsEndWhereTerminalsEndThem(t *testing.T) {
	cases := []struct{ in, want string }{
		// Terminated properly: BEL or ST.
		{"a\x1b]0;title\x07b", "ab"},
		{"a\x1b]0;title\x1b\\b", "ab"},
		{"a\x1bPq#0;2;0;0;0\x1b\\b", "ab"},
		// Aborted by CAN and SUB, which are swallowed.
		{"a\x1b]0;title\x18b", "ab"},
		{"a\x1b_app\x1ab", "ab"},
		// Aborted by an ESC that is no ST: it starts the next sequence.
		{"a\x1b]0;title\x1b[1mb", "ab"},
		{"a\x1b^pm\x1bMb", "ab"},
		// Aborted at a line break, which stays: the lines after it show.
		{"x\x1b]\r\nJS1JE:0\r\n", "x\nJS1JE:0\n"},
		{"x\x1bP\nnext\n", "x\nnext\n"},
		{"x\x1bXsos\r\r\nnext", "x\nnext"},
		{"x\x1b^\rredraw", "x\nredraw"},
		{"x\x1b_apc\nnext", "x\nnext"},
		// No escape sequence eats a line break or swallows the next one.
		{"a\x1b\r\nb", "a\nb"},
		{"a\x1b[12\r\nb", "a\nb"},
		{"a\x1b(\nb", "a\nb"},
		{"a\x1b[1;2\x18b", "ab"},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, cleanAllChunkings(t, tc.in), "%q", tc.in)
	}
	// A control string without line break still ends after maxStringSeq
	// bytes.
	long := "a\x1b]" + strings.Repeat("y", maxStringSeq+10) + "b"
	assert.Equal(t, strings.Repeat("y", 9)+"b", strings.TrimPrefix(cleanAllChunkings(t, long), "a"))
}

func TestExpectSeesTheLineAfterAnUnterminatedControlString(t *testing.T) {
	for _, intro := range []string{"]", "P", "X", "^", "_"} {
		t.Run(intro, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, p := newTestConsole(t, Options{})
				p.EmitString("garbage \x1b" + intro + "\r\nroot@dut:~# ")
				start := time.Now()
				m, err := c.Expect(t.Context(), MustPrompt(`# `))
				require.NoError(t, err)
				assert.Equal(t, "garbage \nroot@dut:~", m.Before)
				assert.Zero(t, time.Since(start), "matched on arrival, not after a timeout")
			})
		})
	}
}

func TestRunSurvivesAnUnterminatedControlString(t *testing.T) {
	for _, intro := range []string{"]", "P", "X", "^", "_"} {
		t.Run(intro, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c, p := newTestConsole(t, Options{})
				go fakeShell(p, func(cmd string) (string, int) {
					if cmd == `printf 'x\e`+intro+`'` {
						return "x\x1b" + intro, 0
					}
					return "ok\n", 0
				})
				p.EmitString(coloredPrompt)
				start := time.Now()
				res, err := c.Run(t.Context(), `printf 'x\e`+intro+`'`)
				require.NoError(t, err)
				assert.Equal(t, "x", res.Output)
				assert.Zero(t, time.Since(start), "the end marker was seen at once")
				res, err = c.Run(t.Context(), "echo ok")
				require.NoError(t, err)
				assert.Equal(t, "ok\n", res.Output)
			})
		})
	}
}

// lineBufferShell plays busybox ash with a line editor of limit bytes: a
// longer line is cut at the limit and the rest is lost, so a framed
// command never prints its end marker.
func lineBufferShell(p *fakePort, limit int) {
	var line []byte
	for b := range p.Sent {
		for _, ch := range b {
			if ch != '\n' {
				if len(line) < limit-1 {
					line = append(line, ch)
				}
				continue
			}
			p.EmitString(string(line) + "\r\n")
			if m := framedCommand.FindStringSubmatch(string(line)); m != nil {
				p.EmitString(m[1] + m[2] + "\r\n" + strings.TrimPrefix(m[3], "echo ") + "\r\n\r\n" + m[4] + m[5] + ":0\r\n")
			}
			p.EmitString("# ")
			line = line[:0]
		}
	}
}

func TestRunRefusesALineLongerThanTheShellTakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{Name: "dut"})
		go lineBufferShell(p, 1024)
		long := "echo " + strings.Repeat("x", 1000)
		start := time.Now()
		_, err := c.Run(t.Context(), long)
		require.ErrorIs(t, err, ErrCommandTooLong)
		assert.Zero(t, time.Since(start), "refused at once, not after a timeout")
		msg := err.Error()
		assert.Contains(t, msg, "1024 bytes")
		assert.Contains(t, msg, "Options.MaxLine")
		assert.Contains(t, msg, fmt.Sprintf("the command's %d", len(long)))
		assert.Regexp(t, `the framed line is \d+ bytes`, msg)
		assert.Less(t, len(msg), 600, "the command is shortened in the message")
		synctest.Wait()
		select {
		case b := <-p.Sent:
			t.Fatalf("sent %q although the line was refused", b)
		default:
		}
		// The console is still in step with the shell.
		res, err := c.Run(t.Context(), "echo next")
		require.NoError(t, err)
		assert.Equal(t, "next\n", res.Output)
		// A line that fits exactly is sent.
		fits := "echo " + strings.Repeat("y", 1024-len(framedLen(t, c, ""))-len("echo ")-1)
		res, err = c.Run(t.Context(), fits)
		require.NoError(t, err)
		assert.Equal(t, fits[len("echo "):]+"\n", res.Output)
	})
}

// framedLen returns the line Run sends for cmd (markers are random, their
// length is not).
func framedLen(t *testing.T, c *Console, cmd string) string {
	t.Helper()
	m1, m2 := newMarker()
	return fmt.Sprintf("printf '%%s%%s\\n' %s %s; %s; printf '\\n%%s%%s:%%d\\n' %s %s $?", m1, m2, cmd, m1, m2)
}

func TestMaxLineIsAnOption(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{MaxLine: 4096})
		go lineBufferShell(p, 4096)
		long := "echo " + strings.Repeat("x", 3000)
		res, err := c.Run(t.Context(), long)
		require.NoError(t, err)
		assert.Equal(t, strings.Repeat("x", 3000)+"\n", res.Output)
		_, err = c.Run(t.Context(), "echo "+strings.Repeat("x", 4100))
		require.ErrorIs(t, err, ErrCommandTooLong)
		assert.Contains(t, err.Error(), "4096 bytes")
	})
	c, _ := newTestConsole(t, Options{MaxLine: -1})
	ctx := ctxFor(t, 50*time.Millisecond)
	_, err := c.Run(ctx, "echo "+strings.Repeat("x", 10000))
	assert.NotErrorIs(t, err, ErrCommandTooLong, "a negative MaxLine means no limit")
}

func TestRunTimeoutSaysWhatItWaitedFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{Name: "dut"})
		go func() {
			for b := range p.Sent {
				// Echo only: the shell never starts the command.
				p.EmitString(strings.ReplaceAll(string(b), "\n", "\r\n"))
			}
		}()
		_, err := c.Run(ctxFor(t, time.Second), "ls /")
		var te *TimeoutError
		require.ErrorAs(t, err, &te)
		assert.Equal(t, []string{`the shell's start marker for command "ls /"`}, te.Patterns)
		require.Len(t, te.Sources, 1)
		assert.Regexp(t, `^"JS[0-9a-f]{8}[0-9a-f]{8}JE"$`, te.Sources[0], "the pattern's source is kept")
		assert.Contains(t, err.Error(), `waiting for the shell's start marker for command "ls /"`)
		assert.NotContains(t, err.Error(), `\r*`)
	})
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{Name: "dut"})
		go func() {
			var line []byte
			for b := range p.Sent {
				line = append(line, b...)
				if m := framedCommand.FindStringSubmatch(strings.TrimSuffix(string(line), "\n")); m != nil {
					p.EmitString(m[1] + m[2] + "\r\nstill running\r\n") // never ends
				}
			}
		}()
		_, err := c.Run(ctxFor(t, time.Second), "sleep 1000")
		var te *TimeoutError
		require.ErrorAs(t, err, &te)
		assert.Equal(t, []string{`the end of command "sleep 1000"`}, te.Patterns)
		assert.Contains(t, err.Error(), "the command did not finish")
		assert.Contains(t, err.Error(), "| still running")
		assert.NotContains(t, err.Error(), `(\d+)`)
	})
}

func TestErrorMessagesCapTheOutput(t *testing.T) {
	var flood strings.Builder
	for i := range 1049 {
		fmt.Fprintf(&flood, "[%8d] noisy driver line\r\n", i)
	}
	check := func(t *testing.T, err error) {
		t.Helper()
		msg := err.Error()
		lines := strings.Count(msg, "\n") + 1
		assert.LessOrEqual(t, lines, 25, "message of %d lines:\n%s", lines, msg)
		assert.LessOrEqual(t, len(msg), 3<<10)
		assert.Contains(t, msg, "earlier bytes left out")
		assert.Contains(t, msg, "console log")
		assert.Contains(t, msg, "[    1048] noisy driver line", "the end of the output is quoted")
	}
	t.Run("timeout", func(t *testing.T) {
		c, p := newTestConsole(t, Options{})
		p.EmitString(flood.String())
		_, err := c.Expect(ctxFor(t, 200*time.Millisecond), String("login:"))
		var te *TimeoutError
		require.ErrorAs(t, err, &te)
		check(t, err)
		assert.Equal(t, len(flood.String())-1049, te.Unmatched, "CRs are cleaned away")
		assert.Len(t, te.Tail, tailMax, "the field keeps 2 KiB")
	})
	t.Run("closed", func(t *testing.T) {
		c, p := newTestConsole(t, Options{})
		p.EmitString(flood.String())
		p.Hangup()
		_, err := c.Expect(ctxFor(t, 5*time.Second), String("login:"))
		require.ErrorIs(t, err, ErrClosed)
		check(t, err)
	})
	t.Run("watch", func(t *testing.T) {
		c, p := newTestConsole(t, Options{})
		c.Watch("panic", String("Kernel panic"))
		p.EmitString(flood.String() + "Kernel panic - not syncing\r\n" + flood.String())
		_, err := c.Expect(ctxFor(t, 5*time.Second), String("login:"))
		var we *WatchError
		require.ErrorAs(t, err, &we)
		msg := err.Error()
		assert.LessOrEqual(t, strings.Count(msg, "\n")+1, 25, msg)
		assert.Contains(t, msg, "| Kernel panic - not syncing")
		assert.Contains(t, msg, "| [    1048] noisy driver line\n\t| Kernel panic", "the lines before it")
		assert.Contains(t, msg, "syncing\n\t| [       0] noisy driver line", "and after it")
		assert.Contains(t, msg, "console log")
	})
}

func TestRequiredLiteral(t *testing.T) {
	cases := []struct {
		expr string
		lit  string
		tail int
	}{
		{`panic\s+at`, "at", 0},
		{`login: ?`, "login:", 4},
		{`\r*\nJS12:(\d+)\r*\n`, "\n", 0},
		{`(?i)password`, "", 0},
		{`\d+`, "", 0},
		{`Kernel panic - (not) syncing`, "Kernel panic - ", 4*3 + 4*len(" syncing")},
	}
	for _, tc := range cases {
		lit, tail := required(tc.expr)
		assert.Equal(t, tc.lit, string(lit), tc.expr)
		if tc.lit != "" {
			assert.Equal(t, tc.tail, tail, tc.expr)
		}
	}
}

func TestEagerRegexpWithRequiredLiteralStillMatchesAcrossChunks(t *testing.T) {
	stream := "boot ok\r\npanic   \r\n  at 0x1234\r\nlogin: root\r\n"
	for _, size := range []int{1, 2, 5, len(stream)} {
		c, p := newTestConsole(t, Options{})
		for rest := stream; len(rest) > 0; {
			k := min(size, len(rest))
			p.EmitString(rest[:k])
			rest = rest[k:]
		}
		m, err := c.Expect(ctxFor(t, 5*time.Second), RE(`panic\s+at`))
		require.NoError(t, err, "chunks of %d", size)
		assert.Equal(t, "panic   \n  at", m.Text)
		m, err = c.Expect(ctxFor(t, 5*time.Second), RE(`login: ?(\w+)`))
		require.NoError(t, err, "chunks of %d", size)
		assert.Contains(t, []string{"login: r", "login: root"}, m.Text, "eager: matches as soon as it can")
	}
}

func TestMaxBeforeKeepsTheEndButRunOutputIsWhole(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{MaxBefore: 100})
		p.EmitString(strings.Repeat("x", 900) + strings.Repeat("y", 100) + "END")
		m, err := c.Expect(t.Context(), String("END"))
		require.NoError(t, err)
		assert.Equal(t, strings.Repeat("y", 100), m.Before)
		assert.Equal(t, 900, m.BeforeCut)
		assert.Equal(t, 0, m.Start-len(m.Before)-m.BeforeCut)

		big := strings.Repeat("0123456789\n", 500)
		go fakeShell(p, func(string) (string, int) { return big, 3 })
		p.EmitString(coloredPrompt)
		res, err := c.Run(t.Context(), "cat big")
		require.NoError(t, err)
		assert.Equal(t, big, res.Output)
		assert.Equal(t, 3, res.ExitCode)
	})
}
