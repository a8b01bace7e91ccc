package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// usageError marks an error as the user's request being wrong (exit code
// 2); cmdLine says the command line itself is malformed, so the command's
// usage line is printed after the message.
type usageError struct {
	err     error
	cmdLine bool
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef returns a usageError with a formatted message: a request the
// device or the environment refuses (a value, a variable).
func usagef(format string, args ...any) error {
	return usageError{err: fmt.Errorf(format, args...)}
}

// cmdLinef returns a usageError about the command line itself (a missing,
// extra, misplaced or unknown argument or flag value), after which the
// command's usage line is printed.
func cmdLinef(format string, args ...any) error {
	return usageError{err: fmt.Errorf(format, args...), cmdLine: true}
}

// argHelp explains the positional arguments' names in "missing" messages.
var argHelp = map[string]string{
	"DEV":    "a device's name or serial, as dut list shows them",
	"ACTION": "on, off, force-on, force-off, rescue or cycle",
	"PIN":    "a control pin such as reset, a or b",
	"LEVEL":  "low, high or z",
	"MODE":   "off, host or dut",
	"KEY":    "a config key; dut config DEV get lists them",
	"VALUE":  "the new value",
	"IMAGE":  "an OS image file, or set DUT_IMAGE",
}

// positional checks the positional arguments against their names: the
// required ones first, then up to len(optional) more. A missing argument
// is named and explained; an extra one is quoted.
func positional(required []string, optional ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		return checkPositional(cmd, args, required, optional...)
	}
}

func checkPositional(cmd *cobra.Command, args, required []string, optional ...string) error {
	if len(args) < len(required) {
		missing := required[len(args):]
		what := missing[0]
		if h := argHelp[what]; h != "" {
			what += " (" + h + ")"
		}
		if len(missing) > 1 {
			what += " and " + strings.Join(missing[1:], " ")
		}
		return cmdLinef("%s: missing %s", cmd.CommandPath(), what)
	}
	if hi := len(required) + len(optional); len(args) > hi {
		extra := args[hi:]
		after := "it takes no arguments"
		if hi > 0 {
			after = "it takes only " + strings.Join(append(append([]string{}, required...), optional...), " ")
		}
		return cmdLinef("%s: unexpected argument %s: %s", cmd.CommandPath(), quoteAll(extra), after)
	}
	return nil
}

// quoteAll renders args as "a" "b".
func quoteAll(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = fmt.Sprintf("%q", a)
	}
	return strings.Join(q, " ")
}

// didYouMean is "; did you mean X?" for the names of words near typed, or "".
func didYouMean(typed string, words []string) string {
	var near []string
	for _, w := range words {
		if d := levenshtein(strings.ToLower(typed), w); d <= 2 || strings.HasPrefix(w, strings.ToLower(typed)) && typed != "" {
			near = append(near, w)
		}
	}
	if len(near) == 0 {
		return ""
	}
	return "; did you mean " + strings.Join(near, " or ") + "?"
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// printUsage writes the usage line of cmd and where its help is, after a
// command-line error.
func printUsage(w io.Writer, cmd *cobra.Command) {
	if cmd == nil || !cmd.HasParent() {
		fmt.Fprintf(w, "Run 'dut --help' for the commands, 'dut COMMAND --help' for a command's usage and examples.\n")
		return
	}
	fmt.Fprintf(w, "usage: %s\n", cmd.UseLine())
	fmt.Fprintf(w, "Run '%s --help' for more, with examples.\n", cmd.CommandPath())
}
