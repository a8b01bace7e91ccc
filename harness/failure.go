package harness

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
)

// Values of the dut.failure property ([AttrFailure]): whose failure failed
// the test, when it was not the product's.
const (
	// FailureInfrastructure: the lab failed (lock, power, storage, flash
	// target, a console that died).
	FailureInfrastructure = "infrastructure"
	// FailureConfiguration: the test's own settings or input were wrong (a
	// DUT_* or driver variable, a name or tags that match no device, a
	// missing or corrupt image).
	FailureConfiguration = "configuration"
)

// ConfigError is a configuration mistake found in one harness step: the
// user's, not the lab's. It matches [ErrBadConfig].
type ConfigError struct {
	Step   string // "acquire", "select", "flash", ...
	Device string // the DUT, when one was selected
	Err    error
}

func (e *ConfigError) Error() string {
	if e.Device == "" {
		return fmt.Sprintf("configuration error: %s: %v", e.Step, e.Err)
	}
	return fmt.Sprintf("configuration error: %s on DUT %s: %v", e.Step, e.Device, e.Err)
}

// Unwrap returns the cause.
func (e *ConfigError) Unwrap() error { return e.Err }

// Is reports whether target is [ErrBadConfig].
func (e *ConfigError) Is(target error) bool { return target == ErrBadConfig }

// IsConfiguration reports whether err is a configuration mistake: the
// harness's or a driver's bad configuration, or a bad image.
func IsConfiguration(err error) bool {
	return errors.Is(err, ErrBadConfig) || errors.Is(err, driver.ErrBadConfig) ||
		errors.Is(err, flash.ErrImage) || errors.Is(err, flash.ErrBmap)
}

// classifyFailure tells whose failure err is and in which step.
func classifyFailure(err error) (kind, step string) {
	var ce *ConfigError
	if errors.As(err, &ce) {
		return FailureConfiguration, ce.Step
	}
	var ie *InfraError
	if errors.As(err, &ie) {
		return FailureInfrastructure, ie.Step
	}
	if IsConfiguration(err) {
		return FailureConfiguration, "acquire"
	}
	return "", ""
}

// fail fails the test with err, marking infrastructure and configuration
// failures as such.
func (d *DUT) fail(err error, ctx context.Context) {
	d.t.Helper()
	hint := ""
	if ctx != nil && errors.Is(context.Cause(ctx), errTestDeadline) {
		hint = "\n(" + d.deadlineHint() + ")"
	}
	kind, step := classifyFailure(err)
	if kind != "" {
		d.attr(AttrFailure, kind)
		d.attr(AttrFailureStep, oneLine(step))
		if d.s == nil {
			d.flushAttrs() // Acquire failed: no cleanup of ours will run
		}
	}
	msg := excerpt(err.Error())
	switch kind {
	case FailureInfrastructure:
		d.t.Fatalf("jumpstarter: %s%s\nThis is an infrastructure failure (the lab, not the product under test).", msg, hint)
	case FailureConfiguration:
		d.t.Fatalf("jumpstarter: %s%s\nThis is a configuration mistake (the test's settings or input), not a failure of the lab or of the product.", msg, hint)
	}
	d.t.Fatalf("jumpstarter: %s%s", msg, hint)
}

// deadlineHint says what to change when a step ran into the test's deadline.
func (d *DUT) deadlineHint() string {
	r := d.rootDUT().reserve
	if d.s != nil && d.s.cfg.CleanupReserve > 0 {
		return fmt.Sprintf("%v: raise go test -timeout, or lower %s (%s, set by you)", errTestDeadline, Env.CleanupReserve, r)
	}
	return fmt.Sprintf("%v: raise go test -timeout (of it, the harness keeps %s for cleanup: %s sets that)", errTestDeadline, r, Env.CleanupReserve)
}

// Limits of the text a failure message shows: a console flood must not
// make a message of thousands of lines; the whole text is in the console
// log.
const (
	excerptHead  = 10
	excerptTail  = 30
	excerptBytes = 8 << 10
)

// excerpt shortens s to its first and last lines when it is long, saying
// how much was left out and where the rest is.
func excerpt(s string) string {
	const where = "; the whole output is in the test's console log"
	if lines := strings.Split(s, "\n"); len(lines) > excerptHead+excerptTail {
		s = strings.Join(lines[:excerptHead], "\n") +
			fmt.Sprintf("\n[... %d lines left out%s ...]\n", len(lines)-excerptHead-excerptTail, where) +
			strings.Join(lines[len(lines)-excerptTail:], "\n")
	}
	if len(s) > excerptBytes {
		half := excerptBytes / 2
		s = s[:half] + fmt.Sprintf("\n[... %d bytes left out%s ...]\n", len(s)-2*half, where) + s[len(s)-half:]
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
