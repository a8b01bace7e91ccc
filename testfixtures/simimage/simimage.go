// Package simimage reads and writes the OS images that the simulated DUT
// (package testfixtures/sim) boots.
//
// A sim image plays the role a disk image plays for a real board: a test
// flashes it onto the simulated device's storage (a plain file) while the
// storage multiplexer connects the storage to the host, and the simulated
// board reads it back when it boots.
//
// # Format
//
// An image is a header block of exactly [HeaderSize] bytes followed by a
// payload. The header is text: the line [Magic], then the lines
//
//	version: <version>
//	payload-size: <payload length in bytes, decimal>
//	payload-sha256: <lower-case hex SHA-256 of the payload>
//
// padded with NUL bytes to [HeaderSize]. Readers ignore header lines with
// other keys. The payload is a POSIX (PAX) tar archive of the image's root
// file system, with paths relative to the root ("etc/os-release"). It holds
// at least
//
//   - etc/dut-release: the version followed by a newline;
//   - etc/os-release: NAME="Jumpstarter Sim Linux", VERSION_ID and
//     PRETTY_NAME in os-release(5) syntax;
//   - etc/sim/boot-panic, when the image's kernel panics during boot;
//   - etc/sim/boot-hang, when the image's boot hangs before the login
//     prompt.
//
// A disk may be longer than the image written on it: bytes after the
// payload (zeros, or the tail of an older, longer image) are ignored, as a
// flashed block device keeps whatever followed the image.
package simimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/internal/atomicfile"
)

// HeaderSize is the size in bytes of the header block that precedes the
// payload.
const HeaderSize = 4096

// Magic is the first line of every image header.
const Magic = "JUMPSTARTER-SIM-IMAGE 1\n"

// MaxPayloadSize is the largest payload size a header may announce.
const MaxPayloadSize = 1 << 30

// MaxVersionLen is the longest version string an image may carry.
const MaxVersionLen = 64

// Paths of the files every image holds, and of the files that mark
// misbehaving images.
const (
	DUTReleasePath = "etc/dut-release"
	OSReleasePath  = "etc/os-release"
	PanicPath      = "etc/sim/boot-panic"
	HangPath       = "etc/sim/boot-hang"
)

// OSName is the NAME of the operating system in every image's os-release.
const OSName = "Jumpstarter Sim Linux"

// ErrNoImage is returned (wrapped) by [Read] when the data does not start
// with an image header, as on a blank or foreign disk.
var ErrNoImage = errors.New("no bootable image")

// ErrCorrupt is returned (wrapped) by [Read] when the data starts like an
// image but is damaged: malformed header, truncated payload, checksum
// mismatch or broken tar archive. The error text says what is wrong.
var ErrCorrupt = errors.New("image corrupt")

// Spec describes an image to write.
type Spec struct {
	// Version is the image's version, e.g. "1.2.0". It must be 1 to
	// MaxVersionLen printable ASCII characters without spaces.
	Version string
	// Files are extra files of the image, by path relative to the root
	// (e.g. "etc/motd") to content. They may not replace the files this
	// package generates (etc/dut-release, etc/os-release, etc/sim/...).
	Files map[string]string
	// Panic makes the image's kernel panic during boot.
	Panic bool
	// Hang makes the image's boot hang before the login prompt.
	Hang bool
}

// Image is an image read back from a disk.
type Image struct {
	// Version is the version the header and etc/dut-release name.
	Version string
	// Files are all regular files of the image, by path relative to the
	// root ("etc/os-release"), including the generated ones.
	Files map[string][]byte
	// Panic reports that the image's kernel panics during boot.
	Panic bool
	// Hang reports that the image's boot hangs before the login prompt.
	Hang bool
}

// modTime is the modification time of every file in an image, fixed so that
// the same Spec always gives the same bytes.
var modTime = time.Date(2024, time.January, 1, 0, 0, 0, 0, time.UTC)

// Encode returns the bytes of the image s describes. The same Spec always
// encodes to the same bytes.
func Encode(s Spec) ([]byte, error) {
	if err := checkVersion(s.Version); err != nil {
		return nil, fmt.Errorf("simimage: %w", err)
	}
	files := map[string]string{
		DUTReleasePath: s.Version + "\n",
		OSReleasePath:  osRelease(s.Version),
	}
	if s.Panic {
		files[PanicPath] = "the kernel of this image panics during boot\n"
	}
	if s.Hang {
		files[HangPath] = "the boot of this image hangs before the login prompt\n"
	}
	for p, content := range s.Files {
		if err := checkSpecPath(p); err != nil {
			return nil, fmt.Errorf("simimage: file %q: %w", p, err)
		}
		files[p] = content
	}
	if p, dir, ok := fileAsDir(files); ok {
		return nil, fmt.Errorf("simimage: file %q is also the directory of %q", dir, p)
	}

	var payload bytes.Buffer
	tw := tar.NewWriter(&payload)
	for _, p := range slices.Sorted(maps.Keys(files)) {
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     p,
			Mode:     0o644,
			Size:     int64(len(files[p])),
			ModTime:  modTime,
			Uname:    "root",
			Gname:    "root",
			Format:   tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("simimage: file %q: %w", p, err)
		}
		if _, err := io.WriteString(tw, files[p]); err != nil {
			return nil, fmt.Errorf("simimage: file %q: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("simimage: closing tar payload: %w", err)
	}

	sum := sha256.Sum256(payload.Bytes())
	header := fmt.Sprintf("%sversion: %s\npayload-size: %d\npayload-sha256: %s\n",
		Magic, s.Version, payload.Len(), hex.EncodeToString(sum[:]))
	out := make([]byte, HeaderSize, HeaderSize+payload.Len())
	copy(out, header) // the header is far below HeaderSize: the version is short
	return append(out, payload.Bytes()...), nil
}

// Write writes the image s describes to w.
func Write(w io.Writer, s Spec) error {
	b, err := Encode(s)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("simimage: writing image %s: %w", s.Version, err)
	}
	return nil
}

// WriteFile writes the image s describes to the file at path, atomically:
// it writes a temporary file in the same directory and renames it over path.
// The directory must exist.
func WriteFile(path string, s Spec) error {
	b, err := Encode(s)
	if err != nil {
		return err
	}
	return writeAtomic(path, func(f *os.File) error {
		_, err := f.Write(b)
		return err
	})
}

// WriteCorrupt writes the image s describes to path (atomically, as
// [WriteFile]) with one payload byte flipped, so that the header is valid
// but [Read] reports a checksum mismatch.
func WriteCorrupt(path string, s Spec) error {
	b, err := Encode(s)
	if err != nil {
		return err
	}
	b[HeaderSize+(len(b)-HeaderSize)/2] ^= 0xff
	return writeAtomic(path, func(f *os.File) error {
		_, err := f.Write(b)
		return err
	})
}

// WriteBlank writes a file of size bytes, all zero, to path (atomically, as
// [WriteFile]; the file is sparse where the file system allows). A disk
// holding it has no image.
func WriteBlank(path string, size int64) error {
	if size < 0 {
		return fmt.Errorf("simimage: blank image size %d is negative", size)
	}
	return writeAtomic(path, func(f *os.File) error { return f.Truncate(size) })
}

func writeAtomic(dst string, fill func(*os.File) error) error {
	if err := atomicfile.Write(dst, 0o644, fill); err != nil {
		return fmt.Errorf("simimage: %w", err)
	}
	return nil
}

// ReadFile reads the image on the disk (or image file) at path, as [Read].
func ReadFile(path string) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("simimage: %w", err)
	}
	defer f.Close()
	img, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return img, nil
}

// Read reads an image from the start of r, which holds a disk's content. It
// reads the header and then exactly the payload size the header announces;
// whatever follows is ignored.
//
// When r does not start with an image header the error wraps [ErrNoImage];
// when the image is damaged it wraps [ErrCorrupt] and says what is wrong.
// Other errors come from r.
func Read(r io.Reader) (*Image, error) {
	header := make([]byte, HeaderSize)
	n, err := io.ReadFull(r, header)
	switch {
	case err == nil:
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		if n < len(Magic) || string(header[:len(Magic)]) != Magic {
			return nil, noImage(header[:n])
		}
		return nil, fmt.Errorf("%w: truncated header: %d of %d bytes", ErrCorrupt, n, HeaderSize)
	default:
		return nil, fmt.Errorf("simimage: reading header: %w", err)
	}
	if string(header[:len(Magic)]) != Magic {
		return nil, noImage(header)
	}
	h, err := parseHeader(header)
	if err != nil {
		return nil, err
	}

	payload, err := io.ReadAll(io.LimitReader(r, h.size))
	if err != nil {
		return nil, fmt.Errorf("simimage: reading payload: %w", err)
	}
	if int64(len(payload)) < h.size {
		return nil, fmt.Errorf("%w: truncated payload: header says %d bytes, only %d follow the header", ErrCorrupt, h.size, len(payload))
	}
	if sum := sha256.Sum256(payload); hex.EncodeToString(sum[:]) != h.sha {
		return nil, fmt.Errorf("%w: payload sha256 mismatch: expected %s, got %s", ErrCorrupt, h.sha, hex.EncodeToString(sum[:]))
	}

	files, err := readTar(payload)
	if err != nil {
		return nil, err
	}
	rel, ok := files[DUTReleasePath]
	if !ok {
		return nil, fmt.Errorf("%w: payload has no %s", ErrCorrupt, DUTReleasePath)
	}
	if string(rel) != h.version+"\n" {
		return nil, fmt.Errorf("%w: %s holds %q, but the header says version %q", ErrCorrupt, DUTReleasePath, rel, h.version)
	}
	if _, ok := files[OSReleasePath]; !ok {
		return nil, fmt.Errorf("%w: payload has no %s", ErrCorrupt, OSReleasePath)
	}
	_, panics := files[PanicPath]
	_, hangs := files[HangPath]
	return &Image{Version: h.version, Files: files, Panic: panics, Hang: hangs}, nil
}

func noImage(start []byte) error {
	if len(start) == 0 {
		return fmt.Errorf("%w: the disk is empty", ErrNoImage)
	}
	if len(bytes.Trim(start, "\x00")) == 0 {
		return fmt.Errorf("%w: the disk holds only zero bytes where the %q header belongs", ErrNoImage, strings.TrimSpace(Magic))
	}
	start = start[:min(len(start), len(Magic))]
	return fmt.Errorf("%w: the disk starts with %q, not the %q header", ErrNoImage, start, strings.TrimSpace(Magic))
}

type header struct {
	version string
	size    int64
	sha     string
}

func parseHeader(b []byte) (header, error) {
	text := b
	if i := bytes.IndexByte(b, 0); i >= 0 {
		text = b[:i]
		if len(bytes.Trim(b[i:], "\x00")) != 0 {
			return header{}, fmt.Errorf("%w: header padding holds bytes other than NUL", ErrCorrupt)
		}
	}
	if !bytes.HasSuffix(text, []byte("\n")) {
		return header{}, fmt.Errorf("%w: the header's last line is not terminated by a newline", ErrCorrupt)
	}
	var h header
	seen := map[string]bool{}
	lines := strings.Split(strings.TrimSuffix(string(text[len(Magic):]), "\n"), "\n")
	if len(text) == len(Magic) {
		lines = nil
	}
	for _, line := range lines {
		key, value, ok := strings.Cut(line, ": ")
		if !ok || key == "" {
			return header{}, fmt.Errorf("%w: header line %q is not \"key: value\"", ErrCorrupt, line)
		}
		if seen[key] {
			return header{}, fmt.Errorf("%w: header has %q twice", ErrCorrupt, key)
		}
		seen[key] = true
		switch key {
		case "version":
			if err := checkVersion(value); err != nil {
				return header{}, fmt.Errorf("%w: header: %w", ErrCorrupt, err)
			}
			h.version = value
		case "payload-size":
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n < 0 || strconv.FormatInt(n, 10) != value {
				return header{}, fmt.Errorf("%w: header payload-size %q is not a byte count", ErrCorrupt, value)
			}
			if n > MaxPayloadSize {
				return header{}, fmt.Errorf("%w: header payload-size %d exceeds the limit of %d bytes", ErrCorrupt, n, MaxPayloadSize)
			}
			h.size = n
		case "payload-sha256":
			if len(value) != sha256.Size*2 || strings.ToLower(value) != value {
				return header{}, fmt.Errorf("%w: header payload-sha256 %q is not %d lower-case hex digits", ErrCorrupt, value, sha256.Size*2)
			}
			if _, err := hex.DecodeString(value); err != nil {
				return header{}, fmt.Errorf("%w: header payload-sha256 %q is not %d lower-case hex digits", ErrCorrupt, value, sha256.Size*2)
			}
			h.sha = value
		}
	}
	for _, key := range []string{"version", "payload-size", "payload-sha256"} {
		if !seen[key] {
			return header{}, fmt.Errorf("%w: header has no %q line", ErrCorrupt, key)
		}
	}
	return h, nil
}

func readTar(payload []byte) (map[string][]byte, error) {
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(payload))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: bad tar payload: %w", ErrCorrupt, err)
		}
		if slices.Contains(strings.Split(hdr.Name, "/"), "..") {
			return nil, fmt.Errorf("%w: bad tar payload: entry %q escapes the root", ErrCorrupt, hdr.Name)
		}
		name := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		if name == "" {
			if hdr.Typeflag == tar.TypeDir {
				continue // the root directory itself
			}
			return nil, fmt.Errorf("%w: bad tar payload: entry %q has no name", ErrCorrupt, hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeReg:
		default:
			return nil, fmt.Errorf("%w: bad tar payload: entry %q has type %q; images hold only regular files and directories", ErrCorrupt, hdr.Name, hdr.Typeflag)
		}
		if _, dup := files[name]; dup {
			return nil, fmt.Errorf("%w: bad tar payload: %q appears twice", ErrCorrupt, name)
		}
		content, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("%w: bad tar payload: reading %q: %w", ErrCorrupt, hdr.Name, err)
		}
		files[name] = content
	}
	if p, dir, ok := fileAsDir(files); ok {
		return nil, fmt.Errorf("%w: bad tar payload: file %q is also the directory of %q", ErrCorrupt, dir, p)
	}
	return files, nil
}

// fileAsDir finds a file whose path is a parent directory of another file's
// path: a file system cannot hold both.
func fileAsDir[V any](files map[string]V) (p, dir string, found bool) {
	for _, p := range slices.Sorted(maps.Keys(files)) {
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			if _, ok := files[dir]; ok {
				return p, dir, true
			}
		}
	}
	return "", "", false
}

func checkVersion(v string) error {
	if v == "" {
		return errors.New("version is empty")
	}
	if len(v) > MaxVersionLen {
		return fmt.Errorf("version %q is longer than %d bytes", v, MaxVersionLen)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("version %q holds %q; use printable ASCII without spaces, like 1.2.0", v, c)
		}
	}
	return nil
}

func checkSpecPath(p string) error {
	switch {
	case p == "" || p == ".":
		return errors.New("empty path")
	case strings.HasPrefix(p, "/"):
		return errors.New("path must be relative to the image root, like etc/motd")
	case path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../"):
		return errors.New("path must be clean and stay inside the image, like etc/motd")
	case p == DUTReleasePath || p == OSReleasePath || strings.HasPrefix(p, "etc/sim/"):
		return errors.New("path is generated from the Spec and cannot be given as a file")
	}
	return nil
}

func osRelease(version string) string {
	return fmt.Sprintf("PRETTY_NAME=%q\nNAME=%q\nVERSION_ID=%q\nVERSION=%q\nID=jumpstarter-sim\n",
		OSName+" "+version, OSName, version, version)
}
