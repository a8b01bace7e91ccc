package console

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// coloredPrompt is a Debian bash prompt, escape codes and all.
const coloredPrompt = "\x1b]0;root@dut: ~\x07\x1b[01;32mroot@dut\x1b[00m:\x1b[01;34m~\x1b[00m# "

var framedCommand = regexp.MustCompile(`^printf '%s%s\\n' (\S+) (\S+); (.*); printf '\\n%s%s:%d\\n' (\S+) (\S+) \$\?$`)

// fakeShell plays a tty running a shell: it echoes each line with CRLF and
// answers framed commands with the output and exit code that run gives.
func fakeShell(p *fakePort, run func(cmd string) (string, int)) {
	var line []byte
	for b := range p.Sent {
		for _, ch := range b {
			if ch != '\n' {
				line = append(line, ch)
				continue
			}
			p.EmitString(string(line) + "\r\n")
			if m := framedCommand.FindStringSubmatch(string(line)); m != nil {
				out, code := run(m[3])
				out = strings.ReplaceAll(out, "\n", "\r\n")
				p.EmitString(m[1] + m[2] + "\r\n")
				p.EmitString(out)
				p.EmitString("\r\n" + m[4] + m[5] + ":" + itoa(code) + "\r\n")
			}
			p.EmitString(coloredPrompt)
			line = line[:0]
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestRunReturnsExactOutputAndExitCode(t *testing.T) {
	outputs := map[string]struct {
		out  string
		code int
	}{
		"cat /etc/os-release":     {"NAME=\"Debian\"\nVERSION_ID=\"12\"\n", 0},
		"printf abc":              {"abc", 0},
		"printf 'a\\n\\nb\\n\\n'": {"a\n\nb\n\n", 0},
		"false":                   {"", 1},
		"ls /nope":                {"ls: cannot access '/nope': No such file or directory\n", 2},
		"exit 130":                {"", 130},
		"echo '$ # >'":            {"$ # >\n", 0},
	}
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{})
		go fakeShell(p, func(cmd string) (string, int) {
			o := outputs[cmd]
			return o.out, o.code
		})
		p.EmitString(coloredPrompt)
		for cmd, want := range outputs {
			res, err := c.Run(t.Context(), cmd)
			require.NoError(t, err, cmd)
			assert.Equal(t, want.out, res.Output, cmd)
			assert.Equal(t, want.code, res.ExitCode, cmd)
		}
	})
}

func TestRunRejectsBadCommands(t *testing.T) {
	c, _ := newTestConsole(t, Options{})
	_, err := c.Run(t.Context(), "echo a\necho b")
	assert.ErrorContains(t, err, "several lines")
	_, err = c.Run(t.Context(), "  ")
	assert.ErrorContains(t, err, "empty command")
	_, err = c.Run(t.Context(), strings.Repeat("x", 5000))
	assert.ErrorIs(t, err, ErrCommandTooLong)
}

func TestRunTimesOutWhenTheCommandHangs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{})
		go func() {
			for b := range p.Sent {
				// Echo only: the command never finishes.
				p.Emit(bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")))
			}
		}()
		ctx := ctxFor(t, 3*time.Second)
		start := time.Now()
		_, err := c.Run(ctx, "sleep 1000")
		require.ErrorIs(t, err, ErrTimeout)
		assert.Equal(t, 3*time.Second, time.Since(start))
		assert.Contains(t, err.Error(), "did not start")
	})
}

// fakeGetty plays a console that prints boot noise around its login prompt,
// asks for a password, and rejects wrong ones.
func fakeGetty(p *fakePort, password string) {
	p.EmitString("[    1.000] Run /init as init process\r\n\r\nDebian GNU/Linux 12 dut ttyS0\r\n\r\ndut login: ")
	// Kernel noise lands right after the prompt, as it does on real boards.
	p.EmitString("[    2.500] random: crng init done\r\n[    2.600] EXT4-fs (vda2): mounted\r\n")
	state := "login"
	var line []byte
	for b := range p.Sent {
		for _, ch := range b {
			if ch != '\n' {
				line = append(line, ch)
				continue
			}
			text := string(line)
			line = line[:0]
			switch state {
			case "login":
				p.EmitString(text + "\r\n")
				if text == "" {
					p.EmitString("dut login: ")
					continue
				}
				p.EmitString("Password: ")
				state = "password"
			case "password":
				p.EmitString("\r\n")
				if text != password {
					p.EmitString("\r\nLogin incorrect\r\ndut login: ")
					state = "login"
					continue
				}
				p.EmitString("Linux dut 6.1.0\r\n" + coloredPrompt)
				state = "shell"
			case "shell":
				p.EmitString(text + "\r\n")
				if m := framedCommand.FindStringSubmatch(text); m != nil {
					p.EmitString(m[1] + m[2] + "\r\n\r\n" + m[4] + m[5] + ":0\r\n")
				}
				p.EmitString(coloredPrompt)
			}
		}
	}
}

func TestLoginThroughBootNoise(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{})
		go fakeGetty(p, "s3cret")
		res, err := c.Login(t.Context(), LoginOptions{User: "root", Password: "s3cret", Nudge: time.Second})
		require.NoError(t, err)
		assert.False(t, res.PromptAt.IsZero())
		assert.Equal(t, 1, res.Attempts)
		r, err := c.Run(t.Context(), "true")
		require.NoError(t, err)
		assert.Equal(t, 0, r.ExitCode)
	})
}

// TestLoginTellsOnceWhenTheBootEnded: Prompted is called once, with the
// first prompt's time, although a rejected attempt brings a second one.
func TestLoginTellsOnceWhenTheBootEnded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{})
		go fakeGetty(p, "s3cret")
		var calls []time.Time
		res, err := c.Login(t.Context(), LoginOptions{User: "root", Password: "wrong", Attempts: 2, Nudge: time.Second,
			Prompted: func(at time.Time) { calls = append(calls, at) }})
		require.ErrorIs(t, err, ErrLoginFailed)
		require.Len(t, calls, 1)
		assert.Equal(t, res.PromptAt, calls[0])
	})
}

func TestLoginFailsWithWrongPassword(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{})
		go fakeGetty(p, "s3cret")
		_, err := c.Login(t.Context(), LoginOptions{Password: "wrong", Attempts: 2, Nudge: time.Second})
		require.ErrorIs(t, err, ErrLoginFailed)
		assert.Contains(t, err.Error(), "2 attempts")
	})
}

func TestLoginTimesOutWithTheTail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{})
		go func() {
			for range p.Sent {
			}
		}()
		p.EmitString("No bootable device.\r\n")
		ctx := ctxFor(t, 20*time.Second)
		_, err := c.Login(ctx, LoginOptions{Nudge: 5 * time.Second})
		require.ErrorIs(t, err, ErrTimeout)
		assert.Contains(t, err.Error(), "No bootable device.")
		assert.Contains(t, err.Error(), "login prompt")
	})
}

func TestLoginFindsAPromptBuriedInTheSameRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{})
		go fakeShell(p, func(string) (string, int) { return "", 0 })
		// The prompt and the noise after it arrive in one read.
		p.EmitString("dut login: [    2.5] random: crng init done\r\n")
		start := time.Now()
		res, err := c.Login(t.Context(), LoginOptions{})
		require.NoError(t, err)
		assert.Equal(t, 1, res.Attempts)
		assert.Zero(t, time.Since(start), "no waiting for a nudge: the buried prompt is found at once")
	})
}

func TestLoginNeverTypesIntoABootloaderCountdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{})
		booted := make(chan struct{})
		go func() {
			for i := 8; i > 0; i-- {
				p.EmitString(fmt.Sprintf("\rHit any key to stop autoboot: %2d ", i))
				select {
				case b := <-p.Sent:
					p.EmitString(fmt.Sprintf("\r\nautoboot stopped by %q\r\n=> ", b))
					return
				case <-time.After(time.Second):
				}
			}
			close(booted)
			fakeGetty(p, "")
		}()
		_, err := c.Login(t.Context(), LoginOptions{Nudge: 2 * time.Second})
		require.NoError(t, err)
		select {
		case <-booted:
		default:
			t.Fatal("the login interrupted the bootloader")
		}
	})
}

func TestRunWithKeepCR(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{KeepCR: true})
		go fakeShell(p, func(string) (string, int) { return "a\nb", 4 })
		p.EmitString(coloredPrompt)
		res, err := c.Run(t.Context(), "two-lines")
		require.NoError(t, err)
		assert.Equal(t, "a\r\nb", res.Output, "with KeepCR the output keeps the tty's CRs")
		assert.Equal(t, 4, res.ExitCode)
	})
}

func TestLoginIgnoresThePreviousBootAfterDiscard(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, p := newTestConsole(t, Options{})
		// The previous boot left a login prompt and a shell prompt behind.
		p.EmitString("old login: \r\nroot@dut:~# ")
		synctest.Wait()
		c.Discard() // what harness.Session.PowerOn does
		go fakeGetty(p, "")
		start := time.Now()
		res, err := c.Login(t.Context(), LoginOptions{Nudge: 2 * time.Second})
		require.NoError(t, err)
		assert.Equal(t, 1, res.Attempts)
		assert.Less(t, time.Since(start), 2*time.Second, "no nudge needed")
	})
}

func TestLoginSkipsLastLoginLine(t *testing.T) {
	m := &Match{Before: "Welcome\nLast ", Text: "login: "}
	assert.True(t, lastLogin(m))
	assert.False(t, lastLogin(&Match{Before: "\ndut ", Text: "login: "}))
}
