// Command mutants checks that the tests of the DUTlink driver still catch
// each firmware defect that was fixed (issue 12): for every mutant it
// copies the working tree (the files git knows), puts one fix back to the old behaviour, runs
// the test that guards it, and expects that test to fail. It prints one
// line per mutant and exits 1 when a mutant survives (its test passed) or
// no longer applies (the code it edits changed: update the mutant).
//
//	go run ./cmd/mutants [-run NAME]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// mutant reverts one fix.
type mutant struct {
	name     string
	file     string // relative to the repository root
	old, new string // the code of the fix, and what it was before
	test     string // go test -run pattern, in ./dutlink/
	// runs is how many runs of the test the mutant must pass to survive
	// (0 means 1): a defect that shows as a race is caught only by some
	// runs, the fewer the busier the machine.
	runs int
}

var mutants = []mutant{
	{
		name: "a filter for every board identifies a root-port board's disk",
		file: "dutlink/device.go",
		old:  `l.filter, l.from = d.opts.StorageFilter, EnvStorageFilter`,
		new:  `l.filter, l.own, l.from = d.opts.StorageFilter, true, EnvStorageFilter`,
		test: "TestRootPortBoardNeverTakesAStrangersDisk|TestTwoRootPortBoardsFlashedAtOnce",
	},
	{
		name: "a root-port board's filter is not checked against the disks there before the switch",
		file: "dutlink/device.go",
		old:  `if err := d.filterNamesNoStranger(ctx, l); err != nil {`,
		new:  `if err := error(nil); err != nil {`,
		test: "TestRootPortFilterThatNamesAStrangerIsRefused",
	},
	{
		name: "any hub the board hangs off counts as its own",
		file: "dutlink/storage.go",
		old:  `if !strings.HasSuffix(filepath.Base(l.board.SysPath), "."+controllerHubPort) {`,
		new:  `if false {`,
		test: "TestTopologyCountsOnlyOnTheBoardsOwnHub",
	},
	{
		name: "the command follows the escape without waiting for its answer",
		file: "dutlink/tty.go",
		old:  `if _, err := s.await(ctx, escapeReplyTimeout, escapeTaken); err != nil && !errors.Is(err, context.DeadlineExceeded) {`,
		new:  `if err := error(nil); err != nil {`,
		test: "TestShellExchangesFromConsoleModeNeverReachTheDUT",
	},
	{
		name: "commands end with CR LF",
		file: "dutlink/tty.go",
		old:  `func lineEnd(string) string { return "\r" }`,
		new:  `func lineEnd(string) string { return "\r\n" }`,
		test: "TestShellExchangesFromConsoleModeNeverReachTheDUT",
	},
	{
		name: "a failed exchange leaves the board at its shell",
		file: "dutlink/tty.go",
		old:  "\terr = s.enter(ctx)\n",
		new:  "\tif err = s.enter(ctx); err != nil {\n\t\treturn err\n\t}\n",
		test: "TestFailedExchangeReturnsToConsoleMode",
	},
	{
		name: "opening the console leaves the firmware's mode as it found it",
		file: "dutlink/device.go",
		old:  `if err := d.st.mux.shell(ctx, nil); err != nil {`,
		new:  `if err := error(nil); err != nil {`,
		test: "TestConsoleOpensInConsoleMode",
	},
	{
		name: "no Refresh before a USB power request",
		file: "dutlink/usb.go",
		old:  `seq, err := u.sequence(ctx, c, a)`,
		new:  `seq, err := powerSequence(a, nil), error(nil)`,
		test: "TestUSBPowerRunsTheSequenceInFlash",
	},
	{
		name: "a USB power request returns before its sequence has run",
		file: "dutlink/usb.go",
		old:  `if err := u.out(wctx, c, reqRefresh, 0, nil); err != nil {`,
		new:  `_ = wctx; if err := error(nil); err != nil {`,
		test: "TestCycleCountsFromTheRealPowerCut|TestUSBPowerRunsTheSequenceInFlash",
	},
	{
		name: "only the process that switched the storage to the host flushes it",
		file: "dutlink/device.go",
		old:  "\tif held != nil {\n\t\treturn l.release(*held)\n\t}\n",
		new:  "\tif held != nil {\n\t\treturn l.release(*held)\n\t}\n\tif true {\n\t\treturn nil\n\t}\n",
		test: "TestStorageLeftAtTheHostByAnotherProcessIsEjected",
	},
	{
		name: "nothing marks the end of get-config's reply",
		file: "dutlink/shell.go",
		old:  `[]byte("get-config"+lineEnd("get-config")+"version"+lineEnd("version"))`,
		new:  `[]byte("get-config"+lineEnd("get-config"))`,
		test: "TestConfigThatOverflowsTheShellReply",
	},
	{
		name: "the config budget ignores json over USB",
		file: "dutlink/device.go",
		old:  `cur["json"], cut = js["json"], jcut`,
		new:  `_, _ = js, jcut`,
		test: "TestConfigThatOverflowsTheShellReply",
	},
	{
		name: "the tty is read through go.bug.st/serial",
		file: "dutlink/port_linux_test.go",
		old:  `p, err := openTTY(slave)`,
		new:  `p, err := serial.Open(slave, &serial.Mode{BaudRate: 115200})`,
		test: "TestPortCloseEndsAPendingReadWhileAnotherProcessReads",
		runs: 5,
	},
	{
		name: "an exchange whose context ended sends \"console\" behind an unanswered escape",
		file: "dutlink/tty.go",
		old:  `if s.escaped && !s.answered {`,
		new:  `if false {`,
		test: "TestShortDeadlineLeavesTheBoardInConsoleMode",
	},
}

func main() {
	run := flag.String("run", "", "only the mutants whose name matches this regexp")
	flag.Parse()
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mutants: run me inside the repository:", err)
		os.Exit(2)
	}
	sel := regexp.MustCompile(*run)
	failed := false
	for _, m := range mutants {
		if !sel.MatchString(m.name) {
			continue
		}
		verdict, took := check(strings.TrimSpace(string(root)), m)
		fmt.Printf("%-9s %6s  %s (%s)\n", verdict, took.Round(time.Second), m.name, m.test)
		failed = failed || verdict != "caught"
	}
	if failed {
		os.Exit(1)
	}
}

// check applies m to a copy of the committed tree and runs its test.
func check(root string, m mutant) (string, time.Duration) {
	dir, err := os.MkdirTemp("", "mutant-")
	if err != nil {
		return "error: " + err.Error(), 0
	}
	defer os.RemoveAll(dir)
	if err := copyTree(root, dir); err != nil {
		return "error: " + err.Error(), 0
	}
	p := filepath.Join(dir, m.file)
	src, err := os.ReadFile(p)
	if err != nil {
		return "error: " + err.Error(), 0
	}
	if strings.Count(string(src), m.old) != 1 {
		return "stale", 0 // the fix's code changed: update the mutant
	}
	mutated := strings.Replace(string(src), m.old, m.new, 1)
	if strings.Contains(m.new, "serial.") && !strings.Contains(mutated, `"go.bug.st/serial"`) {
		mutated = strings.Replace(mutated, "import (\n", "import (\n\t\"go.bug.st/serial\"\n", 1)
	}
	if err := os.WriteFile(p, []byte(mutated), 0o644); err != nil {
		return "error: " + err.Error(), 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	args := []string{"test", fmt.Sprintf("-count=%d", max(m.runs, 1)), "-run", "^(" + m.test + ")$", "./dutlink/"}
	if os.Getenv("MUTANTS_VERBOSE") != "" {
		args = append(args, "-v")
	}
	test := exec.CommandContext(ctx, "go", args...)
	test.Dir = dir
	out, err := test.CombinedOutput()
	took := time.Since(start)
	switch {
	case ctx.Err() != nil:
		return "caught", took // hung until the deadline: that fails too
	case err == nil:
		if os.Getenv("MUTANTS_VERBOSE") != "" {
			fmt.Printf("%s\n", out)
		}
		return "SURVIVED", took
	case strings.Contains(string(out), "[build failed]") || strings.Contains(string(out), "[setup failed]"):
		return "nobuild", took
	}
	return "caught", took
}

// copyTree copies the files git knows in root (tracked, and untracked but
// not ignored: the working tree as it is) into dir.
func copyTree(root, dir string) error {
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		return fmt.Errorf("git ls-files: %w", err)
	}
	for _, name := range strings.Split(string(out), "\x00") {
		if name == "" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the working tree
		}
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
