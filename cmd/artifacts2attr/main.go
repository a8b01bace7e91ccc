// Command artifacts2attr runs `go test -json` and rewrites its stream so that
// gotestsum v1.13 reads it correctly when tests use t.ArtifactDir.
//
// Go 1.26 reports a test's artifact directory with an action gotestsum v1.13
// does not know ("artifacts"); meeting it, gotestsum drops that test's
// properties and counts the test twice. This command turns each such line into
// an ordinary "attr" line with the key "artifacts" and the directory as its
// value, so the directory becomes one more JUnit property of the test:
//
//	gotestsum --junitfile out/junit.xml --raw-command -- \
//	    artifacts2attr -- go test -json -artifacts -outputdir out ./examples/...
//
// Every other line passes through unchanged; the command exits with the exit
// code of the command it ran.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"

	"github.com/jumpstarter-dev/jumpstarter-go/internal/testjson"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: artifacts2attr -- go test -json -artifacts -outputdir DIR PACKAGES...")
		os.Exit(2)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stderr = os.Stdin, os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "artifacts2attr:", err)
		os.Exit(2)
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "artifacts2attr:", err)
		os.Exit(2)
	}
	ferr := testjson.ArtifactsToAttrs(os.Stdout, out)
	werr := cmd.Wait()
	if ferr != nil {
		fmt.Fprintln(os.Stderr, "artifacts2attr:", ferr)
		os.Exit(2)
	}
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		os.Exit(ee.ExitCode())
	}
	if werr != nil {
		fmt.Fprintln(os.Stderr, "artifacts2attr:", werr)
		os.Exit(2)
	}
}
