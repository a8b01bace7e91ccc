package simimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustEncode(t testing.TB, s Spec) []byte {
	t.Helper()
	b, err := Encode(s)
	if err != nil {
		t.Fatalf("Encode(%+v): %v", s, err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	spec := Spec{Version: "1.2.0", Files: map[string]string{"etc/motd": "hello\n", "etc/hostname": "board\n", "usr/share/doc/README": "x"}}
	b := mustEncode(t, spec)
	if len(b) <= HeaderSize {
		t.Fatalf("image is %d bytes, want more than the %d-byte header", len(b), HeaderSize)
	}
	if !bytes.HasPrefix(b, []byte(Magic+"version: 1.2.0\npayload-size: ")) {
		t.Fatalf("header starts %q", b[:64])
	}
	img, err := Read(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if img.Version != "1.2.0" || img.Panic || img.Hang {
		t.Errorf("Read = version %q panic %v hang %v; want 1.2.0 false false", img.Version, img.Panic, img.Hang)
	}
	want := map[string]string{
		"etc/dut-release":      "1.2.0\n",
		"etc/motd":             "hello\n",
		"etc/hostname":         "board\n",
		"usr/share/doc/README": "x",
	}
	for p, content := range want {
		if got := string(img.Files[p]); got != content {
			t.Errorf("file %s = %q, want %q", p, got, content)
		}
	}
	osr := string(img.Files[OSReleasePath])
	for _, line := range []string{`NAME="Jumpstarter Sim Linux"`, `VERSION_ID="1.2.0"`, `PRETTY_NAME="Jumpstarter Sim Linux 1.2.0"`} {
		if !strings.Contains(osr, line+"\n") {
			t.Errorf("os-release %q lacks line %s", osr, line)
		}
	}
	if len(img.Files) != 5 {
		t.Errorf("image has files %v, want the 4 given plus os-release", keys(img.Files))
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestEncodeIsDeterministic(t *testing.T) {
	s := Spec{Version: "v9", Files: map[string]string{"b": "2", "a": "1", "c/d": "3"}}
	if !bytes.Equal(mustEncode(t, s), mustEncode(t, s)) {
		t.Fatal("two encodings of the same Spec differ")
	}
}

func TestPanicAndHangFlags(t *testing.T) {
	for _, s := range []Spec{{Version: "p", Panic: true}, {Version: "h", Hang: true}, {Version: "ph", Panic: true, Hang: true}} {
		img, err := Read(bytes.NewReader(mustEncode(t, s)))
		if err != nil {
			t.Fatalf("Read(%+v): %v", s, err)
		}
		if img.Panic != s.Panic || img.Hang != s.Hang {
			t.Errorf("Read(%+v) = panic %v hang %v", s, img.Panic, img.Hang)
		}
	}
}

func TestReadIgnoresTrailingBytes(t *testing.T) {
	long := mustEncode(t, Spec{Version: "1.0.0-with-a-long-version", Files: map[string]string{"big": strings.Repeat("x", 20000)}})
	short := mustEncode(t, Spec{Version: "2.0.0"})
	disk := append([]byte{}, long...)
	copy(disk, short) // flash the shorter image over the longer one
	disk = append(disk, make([]byte, 1<<16)...)
	img, err := Read(bytes.NewReader(disk))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if img.Version != "2.0.0" {
		t.Errorf("version = %q, want 2.0.0", img.Version)
	}
	if _, ok := img.Files["big"]; ok {
		t.Error("the old image's file leaked into the new one")
	}
}

func TestReadNoImage(t *testing.T) {
	for name, disk := range map[string][]byte{
		"empty":   nil,
		"zeros":   make([]byte, 3*HeaderSize),
		"short":   []byte("JUMP"),
		"foreign": append([]byte("\x7fELF\x02\x01\x01"), make([]byte, HeaderSize)...),
		"v2":      append([]byte("JUMPSTARTER-SIM-IMAGE 2\n"), make([]byte, HeaderSize)...),
	} {
		_, err := Read(bytes.NewReader(disk))
		if !errors.Is(err, ErrNoImage) || errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Read error = %v, want one wrapping ErrNoImage", name, err)
		}
	}
}

// rawImage builds an image from a header text and a payload, computing
// nothing: the caller controls every byte.
func rawImage(header string, payload []byte) []byte {
	b := make([]byte, HeaderSize)
	copy(b, header)
	return append(b, payload...)
}

type entry struct {
	hdr     *tar.Header
	content string
}

// reg is a regular file entry.
func reg(name, content string) entry {
	return entry{&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(content)), Mode: 0o644}, content}
}

func tarOf(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if err := tw.WriteHeader(e.hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func headerFor(version string, payload []byte) string {
	sum := sha256.Sum256(payload)
	return fmt.Sprintf("%sversion: %s\npayload-size: %d\npayload-sha256: %s\n", Magic, version, len(payload), hex.EncodeToString(sum[:]))
}

func TestReadCorrupt(t *testing.T) {
	good := mustEncode(t, Spec{Version: "1.2.0"})
	payload := good[HeaderSize:]
	flipped := append([]byte{}, good...)
	flipped[len(flipped)-700] ^= 1
	sum := sha256.Sum256(payload)
	wrongRelease := tarOf(t, reg(DUTReleasePath, "xxx"), reg(OSReleasePath, "x"))
	noOSRelease := tarOf(t, reg(DUTReleasePath, "x\n"))
	symlink := tarOf(t, entry{&tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/x", Linkname: "/", Mode: 0o777}, ""})
	escape := tarOf(t, reg("a/../../evil", "x"))
	fileDir := tarOf(t, reg("etc", "x"), reg("etc/x", "y"))
	dup := tarOf(t, reg("a", "1"), reg("./a", "2"))

	cases := []struct {
		name string
		disk []byte
		want string
	}{
		{"sha mismatch", flipped, "payload sha256 mismatch: expected " + hex.EncodeToString(sum[:]) + ", got "},
		{"truncated payload", good[:len(good)-10], fmt.Sprintf("truncated payload: header says %d bytes, only %d follow", len(payload), len(payload)-10)},
		{"truncated header", good[:100], "truncated header"},
		{"no payload-size", rawImage(Magic+"version: 1\npayload-sha256: "+hex.EncodeToString(sum[:])+"\n", payload), `no "payload-size" line`},
		{"no version", rawImage(Magic+"payload-size: 1\npayload-sha256: "+hex.EncodeToString(sum[:])+"\n", payload), `no "version" line`},
		{"no sha", rawImage(Magic+"version: 1\npayload-size: 1\n", payload), `no "payload-sha256" line`},
		{"bad size", rawImage(Magic+"version: 1\npayload-size: -5\n", payload), "not a byte count"},
		{"padded size", rawImage(Magic+"version: 1\npayload-size: 05\n", payload), "not a byte count"},
		{"huge size", rawImage(Magic+"version: 1\npayload-size: 99999999999\n", payload), "exceeds the limit"},
		{"bad sha", rawImage(Magic+"version: 1\npayload-sha256: XYZ\n", payload), "not 64 lower-case hex digits"},
		{"bad line", rawImage(Magic+"hello\n", payload), `"hello" is not "key: value"`},
		{"dup key", rawImage(Magic+"version: 1\nversion: 2\n", payload), `"version" twice`},
		{"bad version", rawImage(Magic+"version: a b\n", payload), "printable ASCII"},
		{"unterminated", rawImage(Magic+"version: 1", payload), "not terminated"},
		{"junk in padding", rawImage(headerFor("1.2.0", payload)+"\x00\x00junk", payload), "padding"},
		{"bad tar", rawImage(headerFor("1", []byte("not a tar archive")), []byte("not a tar archive")), "bad tar payload"},
		{"wrong dut-release", rawImage(headerFor("1.2.0", wrongRelease), wrongRelease), `etc/dut-release holds "xxx", but the header says version "1.2.0"`},
		{"no os-release", rawImage(headerFor("x", noOSRelease), noOSRelease), "payload has no etc/os-release"},
		{"no dut-release", rawImage(headerFor("x", tarOf(t)), tarOf(t)), "payload has no etc/dut-release"},
		{"symlink", rawImage(headerFor("x", symlink), symlink), "only regular files"},
		{"escape", rawImage(headerFor("x", escape), escape), "escapes the root"},
		{"file as dir", rawImage(headerFor("x", fileDir), fileDir), `file "etc" is also the directory of "etc/x"`},
		{"duplicate", rawImage(headerFor("x", dup), dup), `"a" appears twice`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img, err := Read(bytes.NewReader(c.disk))
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Read = %+v, %v; want an error wrapping ErrCorrupt", img, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
		})
	}
}

func TestReadForeignTar(t *testing.T) {
	// A tar written by another tool, with directory entries and "./" or "/"
	// prefixes, reads as well.
	payload := tarOf(t,
		entry{&tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755}, ""},
		entry{&tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755}, ""},
		reg("./etc/dut-release", "d\n"), reg("/etc/os-release", "NAME=x\n"))
	img, err := Read(bytes.NewReader(rawImage(headerFor("d", payload), payload)))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(img.Files) != 2 || string(img.Files[OSReleasePath]) != "NAME=x\n" {
		t.Errorf("files = %q", img.Files)
	}
}

func TestReadUnknownHeaderKeysIgnored(t *testing.T) {
	good := mustEncode(t, Spec{Version: "1.2.0"})
	payload := good[HeaderSize:]
	disk := rawImage(headerFor("1.2.0", payload)+"built-by: ci\n", payload)
	img, err := Read(bytes.NewReader(disk))
	if err != nil || img.Version != "1.2.0" {
		t.Fatalf("Read = %+v, %v; want version 1.2.0", img, err)
	}
}

func TestEncodeRejectsBadSpecs(t *testing.T) {
	for _, s := range []Spec{
		{},
		{Version: "has space"},
		{Version: "new\nline"},
		{Version: strings.Repeat("9", MaxVersionLen+1)},
		{Version: "1", Files: map[string]string{"/etc/motd": ""}},
		{Version: "1", Files: map[string]string{"etc/../../x": ""}},
		{Version: "1", Files: map[string]string{"etc//motd": ""}},
		{Version: "1", Files: map[string]string{"": ""}},
		{Version: "1", Files: map[string]string{"etc/dut-release": "2\n"}},
		{Version: "1", Files: map[string]string{"etc/os-release": ""}},
		{Version: "1", Files: map[string]string{"etc/sim/boot-panic": ""}},
		{Version: "1", Files: map[string]string{"etc": "file, not dir"}},
	} {
		if b, err := Encode(s); err == nil {
			t.Errorf("Encode(%+v) = %d bytes, want an error", s, len(b))
		}
		if err := Write(&bytes.Buffer{}, s); err == nil {
			t.Errorf("Write(%+v) succeeded, want an error", s)
		}
	}
}

func TestWriteFileHelpers(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.img")
	if err := WriteFile(good, Spec{Version: "3.1"}); err != nil {
		t.Fatal(err)
	}
	img, err := ReadFile(good)
	if err != nil || img.Version != "3.1" {
		t.Fatalf("ReadFile(good) = %+v, %v", img, err)
	}
	if fi, err := os.Stat(good); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("stat good: %v, %v; want mode 0644", fi, err)
	}

	corrupt := filepath.Join(dir, "corrupt.img")
	if err := WriteCorrupt(corrupt, Spec{Version: "3.1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(corrupt); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "sha256 mismatch") {
		t.Errorf("ReadFile(corrupt) error = %v, want a sha256 mismatch wrapping ErrCorrupt", err)
	}

	blank := filepath.Join(dir, "blank.img")
	if err := WriteBlank(blank, 1<<20); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(blank); err != nil || fi.Size() != 1<<20 {
		t.Errorf("stat blank: %v, %v; want 1 MiB", fi, err)
	}
	if _, err := ReadFile(blank); !errors.Is(err, ErrNoImage) {
		t.Errorf("ReadFile(blank) error = %v, want ErrNoImage", err)
	}
	if err := WriteBlank(blank, -1); err == nil {
		t.Error("WriteBlank(-1) succeeded")
	}

	// The writes are atomic: no temporary files are left behind.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("directory holds %d entries, want 3: %v", len(entries), entries)
	}

	if err := WriteFile(filepath.Join(dir, "missing", "x.img"), Spec{Version: "1"}); err == nil {
		t.Error("WriteFile into a missing directory succeeded")
	}
	if _, err := ReadFile(filepath.Join(dir, "missing.img")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadFile(missing) error = %v, want os.ErrNotExist", err)
	}
}

func FuzzRead(f *testing.F) {
	good, err := Encode(Spec{Version: "1.0", Files: map[string]string{"etc/motd": "hi"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:HeaderSize+10])
	f.Add(good[:200])
	f.Add(make([]byte, HeaderSize+100))
	f.Add([]byte(Magic))
	f.Add([]byte("random bytes"))
	f.Fuzz(func(t *testing.T, disk []byte) {
		img, err := Read(bytes.NewReader(disk))
		if err != nil {
			if !errors.Is(err, ErrNoImage) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Read error %v wraps neither ErrNoImage nor ErrCorrupt", err)
			}
			if img != nil {
				t.Fatal("Read returned an image along with an error")
			}
			return
		}
		// Anything accepted must really be an image: magic, a payload
		// whose checksum the header states, and a consistent release file.
		if !bytes.HasPrefix(disk, []byte(Magic)) {
			t.Fatalf("accepted data without the magic: %q", disk[:min(len(disk), 32)])
		}
		h, err := parseHeader(disk[:HeaderSize])
		if err != nil {
			t.Fatalf("accepted data whose header does not parse: %v", err)
		}
		sum := sha256.Sum256(disk[HeaderSize : HeaderSize+h.size])
		if hex.EncodeToString(sum[:]) != h.sha {
			t.Fatal("accepted a payload whose checksum does not match")
		}
		if img.Version == "" || string(img.Files[DUTReleasePath]) != img.Version+"\n" {
			t.Fatalf("accepted an image with version %q and dut-release %q", img.Version, img.Files[DUTReleasePath])
		}
	})
}
