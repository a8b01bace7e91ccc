package harness

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/console"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/step"
)

// Shell runs commands on a logged-in console shell.
type Shell struct{ d *DUT }

// Shell returns the shell of a DUT that is logged in (see [DUT.Login]),
// bound to this DUT's test: in a subtest, use dut.Sub(t).Shell() so that a
// failing command fails the subtest, not its parent. It fails the test at
// once when the DUT has not been logged in since it was last powered on:
// there is no shell to talk to, and a command would only wait out
// DUT_COMMAND_TIMEOUT.
func (d *DUT) Shell() *Shell {
	d.t.Helper()
	if err := d.s.needShell(); err != nil {
		d.fail(err, nil)
	}
	return &Shell{d: d}
}

// Run runs cmd and returns its exact output; a non-zero exit code fails the
// test with the output. It waits at most DUT_COMMAND_TIMEOUT.
func (sh *Shell) Run(cmd string) string {
	sh.d.t.Helper()
	out, code := sh.RunCode(cmd)
	if code != 0 {
		sh.d.t.Fatalf("jumpstarter: %s: command %q exited with code %d; output:\n%s", sh.d.Name(), cmd, code, excerpt(out))
	}
	return out
}

// RunCode runs cmd and returns its exact output and exit code; only a
// failure to run it (timeout, console gone) fails the test.
func (sh *Shell) RunCode(cmd string) (string, int) {
	sh.d.t.Helper()
	ctx, cancel := sh.d.Context()
	defer cancel()
	res, err := sh.d.s.Run(ctx, cmd)
	if err != nil {
		sh.d.fail(err, ctx)
	}
	return res.Output, res.ExitCode
}

// Console is the test-facing console: expects that fail the test with the
// unmatched output, and sends.
type Console struct {
	d      *DUT
	c      *console.Console
	within time.Duration // zero: DUT_COMMAND_TIMEOUT
}

// Console returns the test-facing console of the DUT.
func (d *DUT) Console() *Console {
	d.t.Helper()
	con, err := d.s.Console()
	if err != nil {
		d.fail(err, nil)
	}
	return &Console{d: d, c: con}
}

// Engine returns the underlying expect engine, whose methods return errors.
func (c *Console) Engine() *console.Console { return c.c }

// Within returns the console with its expects bounded by d instead of
// DUT_COMMAND_TIMEOUT (the test's deadline still bounds them):
//
//	dut.Console().Within(10 * time.Second).ExpectString("link is up")
func (c *Console) Within(d time.Duration) *Console {
	cc := *c
	cc.within = d
	return &cc
}

// errWithin is the cause of an expect that ran out of its Within time.
var errWithin = errors.New("the expect's own timeout (Console.Within) passed")

// Expect waits for one of patterns (see [console.Console.Expect]) within
// DUT_COMMAND_TIMEOUT, or the time given to [Console.Within], and the
// test's deadline, and fails the test when none appears. When the harness
// has powered the DUT off, nothing new can arrive: Expect then waits at most
// a second for output still in flight. The wait is the step "expect".
func (c *Console) Expect(patterns ...console.Pattern) *console.Match {
	c.d.t.Helper()
	ctx, cancel := c.d.Context()
	defer cancel()
	bound, cause := c.d.s.cfg.CommandTimeout, errCommandTimeout
	if c.within > 0 {
		bound, cause = c.within, errWithin
	}
	off := c.d.s.poweredOff()
	if off && bound > poweredOffGrace {
		bound, cause = poweredOffGrace, errPoweredOffWait
	}
	ectx, cancel2 := context.WithTimeoutCause(ctx, bound, cause)
	defer cancel2()
	ectx, st := step.Start(c.d.s.traced(ectx), "expect", "for", describePatterns(patterns), "within", bound)
	m, err := c.c.Expect(ectx, patterns...)
	st.End(err)
	if err != nil {
		c.d.fail(c.d.s.classify("expect", explainTimeout(ectx, err, c.d.s.cfg)), ctx)
	}
	return m
}

// describePatterns names patterns for the expect step: "a" | "b".
func describePatterns(patterns []console.Pattern) string {
	names := make([]string, len(patterns))
	for i, p := range patterns {
		names[i] = p.String()
	}
	return strings.Join(names, " | ")
}

// ExpectString waits for s; see [Console.Expect].
func (c *Console) ExpectString(s string) *console.Match {
	c.d.t.Helper()
	return c.Expect(console.String(s))
}

// Send writes s to the console.
func (c *Console) Send(s string) {
	c.d.t.Helper()
	ctx, cancel := c.d.Context()
	defer cancel()
	if err := c.c.Send(ctx, s); err != nil {
		c.d.fail(c.d.s.classify("send", err), ctx)
	}
}

// SendLine writes s and a line ending to the console.
func (c *Console) SendLine(s string) {
	c.d.t.Helper()
	c.Send(s + "\n")
}

// poweredOffGrace bounds an expect on a DUT the harness powered off: output
// already on its way may still arrive, nothing after it.
const poweredOffGrace = time.Second

// Causes of the deadlines the harness puts on console waits, so that a
// timeout names the setting that bounded it.
var (
	errCommandTimeout = errors.New("DUT_COMMAND_TIMEOUT passed")
	errBootTimeout    = errors.New("DUT_BOOT_TIMEOUT passed")
	errPoweredOffWait = errors.New("the DUT is powered off")
)

// explainTimeout adds to a console timeout which setting bounded it and what
// to do; other errors pass unchanged.
func explainTimeout(ctx context.Context, err error, cfg Config) error {
	if !errors.Is(err, console.ErrTimeout) {
		return err
	}
	switch context.Cause(ctx) {
	case errCommandTimeout:
		return fmt.Errorf("%w\n(%s=%s bounds one command or expect: raise it for slow ones, or give one expect its own time with dut.Console().Within)", err, Env.CommandTimeout, cfg.CommandTimeout)
	case errBootTimeout:
		return fmt.Errorf("%w\n(%s=%s bounds power-on to a logged-in shell: raise it for slow boots)", err, Env.BootTimeout, cfg.BootTimeout)
	case errWithin:
		return fmt.Errorf("%w\n(the time given to Console.Within bounded it)", err)
	case errPoweredOffWait:
		return fmt.Errorf("%w\n(the DUT is powered off, so no new output can come: power it on first with dut.PowerOn)", err)
	}
	return err
}
