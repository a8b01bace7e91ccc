package console

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Result is what a command run with [Console.Run] produced.
type Result struct {
	Output   string        // exactly what the command printed, line breaks as "\n"
	ExitCode int           // its exit status ($?)
	Duration time.Duration // from sending the command to its end marker
}

// ErrCommandTooLong is returned by [Console.Run] for a command whose framed
// line is longer than the device's shell accepts ([Options.MaxLine]).
var ErrCommandTooLong = errors.New("console: command too long for one terminal line")

// Run runs cmd in the POSIX shell at the other end of the console and returns
// its exact output and exit code. The console must be at a shell prompt (see
// [Console.Login]).
//
// The command is framed by random markers, printed with printf so that the
// terminal's echo of the command line never contains them:
//
//	printf '%s%s\n' M1 M2; CMD; printf '\n%s%s:%d\n' M1 M2 $?
//
// The output is the text between the start marker's line and the newline
// before the end marker, so output without a trailing newline, blank lines and
// prompts full of escape codes all come back exactly. A non-zero exit code
// is not an error; a timeout, watcher or closed console is. cmd must be one
// line, must not read the terminal, and must not end in a comment or "&".
//
// The framed line must fit the shell's line buffer: a longer one is refused
// at once, before anything is sent, with an error wrapping
// [ErrCommandTooLong] that names its length and [Options.MaxLine]. The
// markers are found by a streaming literal search, so Run's cost is linear
// in the output however the port chunks it.
func (c *Console) Run(ctx context.Context, cmd string) (Result, error) {
	if strings.ContainsAny(cmd, "\r\n") {
		return Result{}, fmt.Errorf("console %s: command %s spans several lines: join them with ';' or use sh -c", c.opts.Name, quoteCmd(cmd))
	}
	if strings.TrimSpace(cmd) == "" {
		return Result{}, fmt.Errorf("console %s: empty command", c.opts.Name)
	}
	m1, m2 := newMarker()
	line := fmt.Sprintf("printf '%%s%%s\\n' %s %s; %s; printf '\\n%%s%%s:%%d\\n' %s %s $?", m1, m2, cmd, m1, m2)
	if n := len(line) + len(c.opts.LineEnding); c.opts.MaxLine > 0 && n > c.opts.MaxLine {
		return Result{}, fmt.Errorf("console %s: run %s: %w: the framed line is %d bytes (the command's %d, the markers' %d), over the shell's limit of %d bytes (Options.MaxLine); put the command in a script on the device, or raise the limit if the shell takes longer lines",
			c.opts.Name, quoteCmd(cmd), ErrCommandTooLong, n, len(cmd), n-len(cmd), c.opts.MaxLine)
	}
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	start := time.Now()
	if err := c.SendLine(ctx, line); err != nil {
		return Result{}, fmt.Errorf("run %s: %w", quoteCmd(cmd), err)
	}
	// The start marker, then the rest of its line (CRs with Options.KeepCR).
	if _, err := c.Expect(ctx, String(m1+m2).Describe("the shell's start marker for command "+quoteCmd(cmd))); err != nil {
		return Result{}, fmt.Errorf("run %s: the shell did not start the command: %w", quoteCmd(cmd), err)
	}
	started, err := c.Expect(ctx, String("\n").Describe("the end of the start marker's line for command "+quoteCmd(cmd)))
	if err != nil {
		return Result{}, fmt.Errorf("run %s: the shell did not start the command: %w", quoteCmd(cmd), err)
	}
	// The end marker follows the newline that ends the output.
	end, err := c.Expect(ctx, String("\n"+m1+m2+":").Describe("the end of command "+quoteCmd(cmd)))
	if err != nil {
		return Result{}, fmt.Errorf("run %s: the command did not finish: %w", quoteCmd(cmd), err)
	}
	output := end.Before
	if end.BeforeCut > 0 {
		// Longer than Options.MaxBefore: the output is never cut.
		output = c.Text(Mark{Clean: started.End}, Mark{Clean: end.Start})
	}
	output = strings.TrimRight(output, "\r")
	status, err := c.Expect(ctx, String("\n").Describe("the exit code of command "+quoteCmd(cmd)))
	if err != nil {
		return Result{}, fmt.Errorf("run %s: the command finished but its exit code did not arrive: %w", quoteCmd(cmd), err)
	}
	code, err := strconv.Atoi(strings.TrimRight(status.Before, "\r"))
	if err != nil {
		return Result{}, fmt.Errorf("run %s: bad exit code %q: %w", quoteCmd(cmd), status.Before, err)
	}
	return Result{Output: output, ExitCode: code, Duration: time.Since(start)}, nil
}

// quoteCmd quotes a command for messages, shortened when long.
func quoteCmd(cmd string) string {
	const max = 80
	if len(cmd) <= max {
		return strconv.Quote(cmd)
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(cmd[:max]), len(cmd))
}

// newMarker returns the two halves of a random marker. Each half alone is
// printed in the command's echo; only the shell's output joins them.
func newMarker() (string, string) {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	h := hex.EncodeToString(b[:])
	return "JS" + h[:8], h[8:] + "JE"
}

// LoginOptions tune [Console.Login]. The zero value logs in as root without
// a password.
type LoginOptions struct {
	User     string // default "root"
	Password string // sent when a password prompt appears
	// LoginPrompt matches the getty's prompt. Default: "login: " anywhere in
	// the output, so that kernel messages printed after it cannot hide it.
	LoginPrompt Pattern
	// PasswordPrompt default: "Password: " (any case) anywhere in the output.
	PasswordPrompt Pattern
	// ShellPrompt matches the shell's prompt after login. Default: "# ",
	// "$ ", "% " or "> " at the end of the output (the space keeps progress
	// bars of '#' out); a marker command then proves that a shell answers.
	ShellPrompt Pattern
	// Attempts is how many times a rejected login is retried. Default 3.
	Attempts int
	// Nudge is how long the console must stay silent before Login sends a
	// newline to make the device print a fresh prompt. Default 5 s. Login
	// never sends anything while the device prints (a bootloader counting
	// down would take the keypress as "stop autoboot").
	Nudge time.Duration
	// Prompted, when set, is called once, with the time it arrived, when
	// the first login prompt (or, on a console without login, the first
	// shell prompt) is seen: the boot is over and the login begins.
	Prompted func(at time.Time)
}

var (
	defaultLoginPrompt    = RE(`(?i)login: ?`)
	defaultPasswordPrompt = RE(`(?i)password: ?`)
	defaultShellPrompt    = MustPrompt(`[#$%>] `)
	loginIncorrect        = RE(`(?i)login incorrect|authentication failure|permission denied`)
)

// LoginResult tells how [Console.Login] went.
type LoginResult struct {
	// PromptAt is when the first login prompt arrived: the end of the boot.
	PromptAt time.Time
	// Attempts is how many user names were sent.
	Attempts int
}

// ErrLoginFailed is wrapped by the error of [Console.Login] when the device
// rejected the credentials on every attempt.
var ErrLoginFailed = errors.New("console: login failed")

// Login waits through boot output for the login prompt, logs in and returns
// once a marker command proves that a shell answers.
//
// It copes with kernel messages printed over the prompt (the prompt is
// matched wherever it is, and typing into a getty works whatever was printed
// after its prompt), with consoles that need no password or no login at all
// (already at a shell), with a prompt printed before anybody waited for it
// (after LoginOptions.Nudge of silence it sends a newline for a fresh one),
// and with rejected attempts, which it retries up to LoginOptions.Attempts
// times before failing with [ErrLoginFailed].
func (c *Console) Login(ctx context.Context, o LoginOptions) (LoginResult, error) {
	if o.User == "" {
		o.User = "root"
	}
	if o.LoginPrompt.src == "" {
		o.LoginPrompt = defaultLoginPrompt
	}
	if o.PasswordPrompt.src == "" {
		o.PasswordPrompt = defaultPasswordPrompt
	}
	if o.ShellPrompt.src == "" {
		o.ShellPrompt = defaultShellPrompt
	}
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	if o.Nudge <= 0 {
		o.Nudge = 5 * time.Second
	}
	ctx, cancel := c.withDeadline(ctx)
	defer cancel()
	began := time.Now()

	const (
		login = iota
		password
		shell
		rejected
	)
	patterns := []Pattern{o.LoginPrompt, o.PasswordPrompt, o.ShellPrompt, loginIncorrect}
	var res LoginResult
	sentUser := false // nothing typed yet: never nudge a booting device
	for {
		step, stepCancel := context.WithTimeout(ctx, o.Nudge)
		m, err := c.Expect(step, patterns...)
		stepCancel()
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, ErrTimeout) {
				if !sentUser && time.Since(c.lastActivity()) < o.Nudge {
					continue // still booting: never type into a bootloader
				}
				// Nothing new: ask for a fresh prompt. A send cut short by
				// the deadline ends in the timeout error of the next expect.
				if err := c.SendLine(ctx, ""); err != nil && ctx.Err() == nil {
					return res, fmt.Errorf("login: %w", err)
				}
				continue
			}
			var te *TimeoutError
			if errors.As(err, &te) {
				te.Patterns = []string{"a login prompt followed by a working shell"}
				te.Waited = time.Since(began)
			}
			return res, fmt.Errorf("login as %s: %w", o.User, err)
		}
		switch m.Index {
		case login:
			if lastLogin(m) {
				continue // "Last login: ..." of a successful login, not a prompt
			}
			res.prompted(m.At, o.Prompted)
			if res.Attempts >= o.Attempts {
				return res, fmt.Errorf("login as %s: %w after %d attempts (check the user name and password)", o.User, ErrLoginFailed, res.Attempts)
			}
			res.Attempts++
			if err := c.SendLine(ctx, o.User); err != nil {
				return res, fmt.Errorf("login: %w", err)
			}
			sentUser = true
		case password:
			if err := c.SendLine(ctx, o.Password); err != nil {
				return res, fmt.Errorf("login: %w", err)
			}
		case rejected:
			if res.Attempts >= o.Attempts {
				return res, fmt.Errorf("login as %s: %w after %d attempts: the device said %q", o.User, ErrLoginFailed, res.Attempts, m.Text)
			}
		case shell:
			probe, probeCancel := context.WithTimeout(ctx, o.Nudge)
			r, err := c.Run(probe, "true")
			probeCancel()
			if err == nil && r.ExitCode == 0 {
				res.prompted(m.At, o.Prompted)
				return res, nil
			}
			if ctx.Err() != nil {
				return res, fmt.Errorf("login as %s: a prompt appeared but no shell answered: %w", o.User, err)
			}
			// Whatever looked like a prompt was not a shell; keep waiting.
		}
	}
}

// prompted records the first prompt's time, telling notify once.
func (r *LoginResult) prompted(at time.Time, notify func(time.Time)) {
	if !r.PromptAt.IsZero() {
		return
	}
	r.PromptAt = at
	if notify != nil {
		notify(at)
	}
}

// lastLogin reports whether a "login:" match is the "Last login: <date>"
// line a successful login prints.
func lastLogin(m *Match) bool {
	line := m.Before
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	return strings.HasSuffix(strings.ToLower(line), "last ")
}
