// Command mksimimage writes OS images for the simulated DUT (the "sim"
// driver in testfixtures/sim), in the format of package testfixtures/simimage.
//
// Usage:
//
//	mksimimage -version VERSION -o PATH [-panic] [-hang] [-corrupt] [-file PATH=CONTENT]...
//	mksimimage -blank SIZE -o PATH
//
// For example:
//
//	go run ./testfixtures/cmd/mksimimage -version 1.2.0 -o out/images/sim-1.2.0.img
//
// The flags are:
//
//	-version VERSION   version of the image (shown in the boot banner and /etc/dut-release)
//	-o PATH            file to write; missing parent directories are created
//	-panic             the image's kernel panics during boot
//	-hang              the image's boot hangs before the login prompt
//	-corrupt           flip a payload byte, so that the board reports a corrupt image
//	-file PATH=CONTENT add a file to the image (repeatable), e.g. -file etc/motd=hello
//	-blank SIZE        write SIZE zero bytes (e.g. 64MiB) instead of an image
//
// The file is written atomically. mksimimage exits with status 2 on bad
// usage and 1 when writing fails.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/jumpstarter-dev/jumpstarter-go/internal/bytesize"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/simimage"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is an error in the command line.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef returns a usageError formatted as fmt.Errorf does.
func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// fileFlags collects repeated -file PATH=CONTENT flags.
type fileFlags map[string]string

func (f fileFlags) String() string { return fmt.Sprint(map[string]string(f)) }

func (f fileFlags) Set(v string) error {
	p, content, ok := strings.Cut(v, "=")
	if !ok || p == "" {
		return fmt.Errorf("want PATH=CONTENT, like etc/motd=hello, got %q", v)
	}
	if _, dup := f[p]; dup {
		return fmt.Errorf("file %q given twice", p)
	}
	f[p] = content
	return nil
}

// run runs the command with args and returns its exit status.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mksimimage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		version = fs.String("version", "", "`VERSION` of the image, e.g. 1.2.0")
		out     = fs.String("o", "", "`PATH` of the file to write")
		panics  = fs.Bool("panic", false, "the image's kernel panics during boot")
		hangs   = fs.Bool("hang", false, "the image's boot hangs before the login prompt")
		corrupt = fs.Bool("corrupt", false, "flip a payload byte so that the image fails its checksum")
		blank   = fs.String("blank", "", "write `SIZE` zero bytes (e.g. 64MiB) instead of an image")
		files   = fileFlags{}
	)
	fs.Var(files, "file", "add a file to the image, as `PATH=CONTENT` (repeatable)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: mksimimage -version VERSION -o PATH [-panic] [-hang] [-corrupt] [-file PATH=CONTENT]...
       mksimimage -blank SIZE -o PATH

Writes an OS image for the simulated DUT (driver "sim").

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2 // the flag package has printed the error and the usage
	}

	msg, err := write(fs.Args(), *version, *out, *blank, *panics, *hangs, *corrupt, files)
	var usage usageError
	switch {
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "mksimimage: %v\nRun mksimimage -h for usage.\n", err)
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "mksimimage: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, msg)
	return 0
}

func write(rest []string, version, out, blank string, panics, hangs, corrupt bool, files fileFlags) (string, error) {
	if len(rest) > 0 {
		return "", usagef("unexpected argument %q; all options are flags", rest[0])
	}
	if out == "" {
		return "", usagef("-o PATH is required")
	}
	if blank != "" {
		if version != "" || panics || hangs || corrupt || len(files) > 0 {
			return "", usagef("-blank writes zeros and cannot be combined with -version, -panic, -hang, -corrupt or -file")
		}
		size, err := bytesize.Parse(blank)
		if err != nil {
			return "", usagef("-blank: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return "", err
		}
		if err := simimage.WriteBlank(out, size); err != nil {
			return "", err
		}
		return fmt.Sprintf("wrote %s: blank, %d bytes", out, size), nil
	}
	if version == "" {
		return "", usagef("-version VERSION is required (or -blank SIZE for a blank disk)")
	}
	spec := simimage.Spec{Version: version, Files: files, Panic: panics, Hang: hangs}
	if _, err := simimage.Encode(spec); err != nil {
		return "", usagef("%w", err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	writeFile := simimage.WriteFile
	if corrupt {
		writeFile = simimage.WriteCorrupt
	}
	if err := writeFile(out, spec); err != nil {
		return "", err
	}
	var notes []string
	for _, n := range []struct {
		on   bool
		what string
	}{{panics, "kernel panics"}, {hangs, "boot hangs"}, {corrupt, "corrupt"}} {
		if n.on {
			notes = append(notes, n.what)
		}
	}
	note := ""
	if len(notes) > 0 {
		note = " (" + strings.Join(notes, ", ") + ")"
	}
	return fmt.Sprintf("wrote %s: sim image %s%s", out, version, note), nil
}
