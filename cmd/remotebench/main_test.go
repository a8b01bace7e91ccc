package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary be the exporter child of the memory part.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "-exporter" {
		os.Exit(exporterChild(os.Args[2:]))
	}
	os.Exit(m.Run())
}

func TestStats(t *testing.T) {
	var s []time.Duration
	for i := 10; i >= 1; i-- {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	if m, p := medianDur(s), p90(s); m != 6*time.Millisecond || p != 9*time.Millisecond {
		t.Errorf("median %v p90 %v", m, p)
	}
}

// TestTinyRun runs every part at tiny sizes.
func TestTinyRun(t *testing.T) {
	for _, tool := range []string{"zstd", "bmaptool"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (testfixtures/qemuimage/deps.sh)", tool)
		}
	}
	c, err := parseFlags(flag.NewFlagSet("t", flag.ContinueOnError), []string{"-size", "8MiB", "-runs", "1", "-console-size", "1MiB",
		"-run-count", "5", "-lease-count", "3", "-delay", "2ms", "-nodrop", "-dir", t.TempDir(), "-timeout", "3m", "-step-timeout", "1m"})
	if err != nil {
		t.Fatal(err)
	}
	var out, log bytes.Buffer
	if err := run(context.Background(), c, &out, &log); err != nil {
		t.Fatalf("%v\n%s\n%s", err, out.String(), log.String())
	}
	t.Log(out.String())
	for _, want := range []string{"== 1. flash", "remote second", "== 2. first flash through a proxy", "== 3. console", "Run(\"true\") p90", "== 4. lease", "== 5. exporter process memory", "after the dense zst first flash", "goals"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
