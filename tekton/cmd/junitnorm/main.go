// Command junitnorm rewrites the JUnit XML that gotestsum wrote into a file
// that Jenkins xunit's junit-10.xsd accepts, with each testcase's properties
// kept, the console tail of failed hardware tests in their failure text and
// the compiler's output in a package's build failure (see package
// junitnorm). It can also write the counts of passed, failed and skipped
// testcases to files, as a Tekton step writes its results.
//
//	junitnorm -in raw.xml -out junit.xml -stream test2json.jsonl \
//	    -relative-base /workspace/artifacts \
//	    -passed $(results.passed.path) -failed $(results.failed.path) -skipped $(results.skipped.path)
//
// It exits 0 when it wrote the file, whatever the tests' outcome, 1 when it
// could not, and 2 on a usage error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/jumpstarter-dev/jumpstarter-go/tekton/junitnorm"
)

func main() {
	in := flag.String("in", "", "gotestsum's JUnit XML file (required)")
	out := flag.String("out", "", "where to write the normalised file (default: -in, replaced)")
	stream := flag.String("stream", "", "the test2json stream gotestsum read (its --jsonfile), for build failures' compiler output")
	props := flag.String("case-properties", string(junitnorm.PropertiesSystemOut), "where testcase properties go: system-out (schema-valid [[PROPERTY|name=value]] lines) or element (<properties>, not schema-valid)")
	tail := flag.Int("tail-lines", 40, "lines of a failed test's console log appended to its failure (0: none)")
	base := flag.String("relative-base", "", "rewrite property values that are paths under this folder relative to the output file's folder")
	passed := flag.String("passed", "", "write the number of passed testcases to this file")
	failed := flag.String("failed", "", "write the number of failed testcases (failures and errors) to this file")
	skipped := flag.String("skipped", "", "write the number of skipped testcases to this file")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: junitnorm -in GOTESTSUM.xml [-out JUNIT.xml] [flags]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *in == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	if *out == "" {
		*out = *in
	}
	opts := junitnorm.Options{CaseProperties: junitnorm.CasePropertiesMode(*props), TailLines: *tail}
	if *tail == 0 {
		opts.TailLines = -1
	}
	if *base != "" {
		abs, err := filepath.Abs(*out)
		if err != nil {
			fail(err)
		}
		opts.RelativeBase, opts.RelativeTo = *base, filepath.Dir(abs)
	}
	counts, err := run(*in, *out, *stream, opts)
	if err != nil {
		fail(err)
	}
	for _, r := range []struct {
		path string
		n    int
	}{{*passed, counts.Passed}, {*failed, counts.Failed}, {*skipped, counts.Skipped}} {
		if r.path == "" {
			continue
		}
		if err := os.WriteFile(r.path, []byte(strconv.Itoa(r.n)), 0o644); err != nil {
			fail(fmt.Errorf("write result: %w", err))
		}
	}
	fmt.Fprintf(os.Stderr, "junitnorm: %s: %v\n", *out, counts)
}

func run(in, out, stream string, opts junitnorm.Options) (junitnorm.Counts, error) {
	f, err := os.Open(in)
	if err != nil {
		return junitnorm.Counts{}, fmt.Errorf("open JUnit file: %w", err)
	}
	defer f.Close()
	if stream != "" {
		sf, err := os.Open(stream)
		switch {
		case errors.Is(err, os.ErrNotExist):
			fmt.Fprintf(os.Stderr, "junitnorm: %s does not exist; build failures will lack the compiler's output\n", stream)
		case err != nil:
			return junitnorm.Counts{}, fmt.Errorf("open test2json stream: %w", err)
		default:
			defer sf.Close()
			opts.Stream = sf
		}
	}
	s, err := junitnorm.Normalize(f, opts)
	if err != nil {
		return junitnorm.Counts{}, fmt.Errorf("%s: %w", in, err)
	}
	if err := writeAtomic(out, s.Write); err != nil {
		return junitnorm.Counts{}, err
	}
	return s.Counts(), nil
}

// writeAtomic writes through a temporary file in out's folder and renames it
// over out, so a reader never sees half a report and -out may equal -in.
func writeAtomic(out string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(out), ".junitnorm-*")
	if err != nil {
		return fmt.Errorf("create output: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod output: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close output: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("rename output: %w", err)
	}
	return nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "junitnorm:", err)
	os.Exit(1)
}
