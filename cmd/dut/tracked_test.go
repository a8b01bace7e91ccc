package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNoBuildOutputTracked fails when git tracks a build output anywhere in
// the repository: an executable or object file (ELF, Mach-O, PE) or an ar
// archive (.a, Go's package archives). It runs `git ls-files` in the
// checkout this test is run from and reads the start of every tracked file;
// outside a git checkout (a module cache, a source tarball) or without git
// it skips. CI: go test -run TestNoBuildOutputTracked ./cmd/dut/
func TestNoBuildOutputTracked(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed: cannot list the tracked files")
	}
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not in a git checkout (git rev-parse: %v): nothing is tracked", err)
	}
	root := strings.TrimSpace(string(top))
	bad, n, err := trackedBuildOutput(root)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("git ls-files in %s listed no readable file", root)
	}
	if len(bad) > 0 {
		t.Errorf("git tracks build output in %s; untrack and delete it (git rm --cached FILE && rm FILE) and make .gitignore cover it:\n  %s", root, strings.Join(bad, "\n  "))
	}
}

// trackedBuildOutput lists the files git tracks in the checkout at root
// that are build output, each with its kind, and counts the tracked files
// it read.
func trackedBuildOutput(root string) (bad []string, n int, err error) {
	out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err != nil {
		return nil, 0, fmt.Errorf("git ls-files in %s: %w", root, err)
	}
	for _, name := range strings.Split(string(out), "\x00") {
		if name == "" {
			continue
		}
		kind, err := binaryKind(filepath.Join(root, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the work tree; git status shows it
		}
		if err != nil {
			return nil, n, fmt.Errorf("reading tracked file %s: %w", name, err)
		}
		n++
		if kind != "" {
			bad = append(bad, name+" ("+kind+")")
		}
	}
	return bad, n, nil
}

// TestTrackedBuildOutputFindsABinary: a repository tracking a copy of this
// test's own binary is caught; its source files are not.
func TestTrackedBuildOutputFindsABinary(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	self, err := os.Executable()
	if err != nil {
		t.Skipf("os.Executable: %v", err)
	}
	exe, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	gitIn := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", root}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	gitIn("init", "-q")
	require.NoError(t, os.MkdirAll(filepath.Join(root, "cmd", "tool"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "cmd", "tool", "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(root, "cmd", "tool", "tool"), exe, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "run.sh"), []byte("#!/bin/sh\nexec go run ./cmd/tool\n"), 0o755))
	gitIn("add", ".")

	bad, n, err := trackedBuildOutput(root)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	require.Len(t, bad, 1)
	assert.Regexp(t, `^cmd/tool/tool \((ELF|Mach-O|PE)`, bad[0])

	gitIn("rm", "-q", "--cached", "cmd/tool/tool")
	bad, _, err = trackedBuildOutput(root)
	require.NoError(t, err)
	assert.Empty(t, bad, "untracked, it no longer counts")
}

// binaryKind names the executable or object format of the file at path, or
// returns "" for any other file (directories and symlinks included).
func binaryKind(path string) (string, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 512)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", err
	}
	return magicKind(head[:n]), nil
}

// magicKind recognises executable and object formats by their first bytes.
func magicKind(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("\x7fELF")):
		return "ELF executable or object"
	case bytes.HasPrefix(b, []byte("!<arch>\n")):
		return "ar archive"
	case len(b) >= 4 && isMachO(binary.BigEndian.Uint32(b)):
		return "Mach-O executable or object"
	case bytes.HasPrefix(b, []byte("MZ")) && len(b) >= 0x40:
		// A PE file: "MZ", and at the offset stored at 0x3c, "PE\0\0".
		off := int(binary.LittleEndian.Uint32(b[0x3c:]))
		if off >= 0 && off+4 <= len(b) && bytes.Equal(b[off:off+4], []byte("PE\x00\x00")) {
			return "PE (Windows) executable"
		}
	}
	return ""
}

func isMachO(m uint32) bool {
	switch m {
	case 0xfeedface, 0xfeedfacf, 0xcefaedfe, 0xcffaedfe:
		return true
	}
	return false
}

func TestMagicKind(t *testing.T) {
	pe := make([]byte, 0x80)
	copy(pe, "MZ")
	binary.LittleEndian.PutUint32(pe[0x3c:], 0x40)
	copy(pe[0x40:], "PE\x00\x00")
	for _, c := range []struct {
		head string
		want bool
	}{
		{"\x7fELF\x02\x01\x01", true},
		{"!<arch>\n__.PKGDEF", true},
		{"\xcf\xfa\xed\xfe\x07\x00\x00\x01", true},
		{string(pe), true},
		{"MZ is how this text begins, and it is long enough to have an offset at 0x3c: no PE header anywhere in it.", false},
		{"#!/bin/sh\necho hi\n", false},
		{"package main\n", false},
		{"", false},
	} {
		if got := magicKind([]byte(c.head)) != ""; got != c.want {
			t.Errorf("magicKind(%q) = %q, want a match: %v", c.head, magicKind([]byte(c.head)), c.want)
		}
	}

	// The real thing: this test's own binary.
	self, err := os.Executable()
	if err != nil {
		t.Skipf("os.Executable: %v", err)
	}
	kind, err := binaryKind(self)
	if err != nil {
		t.Fatal(err)
	}
	if kind == "" {
		t.Errorf("binaryKind(%s) does not recognise the running test binary", self)
	}
}
