package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/simimage"
)

func runCmd(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestWritesImages(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out", "images", "sim-1.2.0.img")
	code, stdout, stderr := runCmd("-version", "1.2.0", "-o", p, "-file", "etc/motd=hello", "-file", "etc/issue=x=y")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if !strings.Contains(stdout, "sim image 1.2.0") {
		t.Errorf("stdout %q does not report the image", stdout)
	}
	img, err := simimage.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if img.Version != "1.2.0" || string(img.Files["etc/motd"]) != "hello" || string(img.Files["etc/issue"]) != "x=y" || img.Panic || img.Hang {
		t.Errorf("image = %+v", img)
	}

	if code, _, stderr := runCmd("-version", "2", "-panic", "-hang", "-o", p); code != 0 {
		t.Fatalf("-panic -hang: exit %d, %s", code, stderr)
	}
	if img, err := simimage.ReadFile(p); err != nil || !img.Panic || !img.Hang {
		t.Errorf("-panic -hang image = %+v, %v", img, err)
	}

	if code, stdout, stderr := runCmd("-version", "3", "-corrupt", "-o", p); code != 0 || !strings.Contains(stdout, "corrupt") {
		t.Fatalf("-corrupt: exit %d, %q, %q", code, stdout, stderr)
	}
	if _, err := simimage.ReadFile(p); !errors.Is(err, simimage.ErrCorrupt) {
		t.Errorf("-corrupt image reads with error %v, want ErrCorrupt", err)
	}

	if code, _, stderr := runCmd("-blank", "1MiB", "-o", p); code != 0 {
		t.Fatalf("-blank: exit %d, %s", code, stderr)
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() != 1<<20 {
		t.Errorf("blank image: %v, %v", fi, err)
	}
	if _, err := simimage.ReadFile(p); !errors.Is(err, simimage.ErrNoImage) {
		t.Errorf("-blank image reads with error %v, want ErrNoImage", err)
	}
}

func TestUsageErrors(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.img")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-version", "1"}, "-o PATH is required"},
		{[]string{"-o", p}, "-version VERSION is required"},
		{[]string{"-version", "1 2", "-o", p}, "printable ASCII"},
		{[]string{"-version", "1", "-o", p, "extra"}, `unexpected argument "extra"`},
		{[]string{"-blank", "lots", "-o", p}, "-blank"},
		{[]string{"-blank", "1M", "-version", "1", "-o", p}, "cannot be combined"},
		{[]string{"-version", "1", "-o", p, "-file", "nocontent"}, "PATH=CONTENT"},
		{[]string{"-version", "1", "-o", p, "-file", "etc/dut-release=2"}, "generated"},
		{[]string{"-nosuchflag"}, "flag provided but not defined"},
	} {
		code, stdout, stderr := runCmd(c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) || stdout != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and an error saying %q", c.args, code, stdout, stderr, c.want)
		}
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed run left %s behind (%v)", p, err)
	}
}

func TestHelp(t *testing.T) {
	code, _, stderr := runCmd("-h")
	if code != 0 || !strings.Contains(stderr, "usage: mksimimage") {
		t.Errorf("-h: exit %d, stderr %q", code, stderr)
	}
}

func TestWriteFailure(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCmd("-version", "1", "-o", filepath.Join(blocker, "x.img"))
	if code != 1 || !strings.Contains(stderr, "mksimimage: ") {
		t.Errorf("exit %d, stderr %q; want exit 1 with an error", code, stderr)
	}
}
