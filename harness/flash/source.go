package flash

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Format is the encoding of an image file, told by its first bytes, never by
// its name.
type Format string

// The formats [Detect] knows.
const (
	Raw   Format = "raw"
	Gzip  Format = "gzip"
	Xz    Format = "xz"
	Zstd  Format = "zstd"
	Bzip2 Format = "bzip2"
)

var magics = []struct {
	f     Format
	magic []byte
}{
	{Gzip, []byte{0x1f, 0x8b}},
	{Xz, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}},
	{Zstd, []byte{0x28, 0xb5, 0x2f, 0xfd}},
}

// Detect returns the format whose magic bytes start header; anything else is
// [Raw].
func Detect(header []byte) Format {
	for _, m := range magics {
		if bytes.HasPrefix(header, m.magic) {
			return m.f
		}
	}
	// bzip2: "BZh" and a block size digit 1-9.
	if len(header) >= 4 && bytes.HasPrefix(header, []byte("BZh")) && header[3] >= '1' && header[3] <= '9' {
		return Bzip2
	}
	return Raw
}

// decoder returns a streaming reader of the image's content and its format.
// Nothing is unpacked to disk or held whole in memory.
func decoder(r io.Reader) (io.Reader, Format, func(), error) {
	br := bufio.NewReaderSize(r, 1<<20)
	head, err := br.Peek(8)
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return nil, "", nil, err
	}
	f := Detect(head)
	noop := func() {}
	switch f {
	case Gzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, f, nil, err
		}
		return zr, f, func() { zr.Close() }, nil
	case Xz:
		xr, err := xz.NewReader(br)
		if err != nil {
			return nil, f, nil, err
		}
		return xr, f, noop, nil
	case Zstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, f, nil, err
		}
		return zr, f, zr.Close, nil
	case Bzip2:
		return bzip2.NewReader(br), f, noop, nil
	}
	return br, Raw, noop, nil
}

// describeFormat names the format for messages.
func describeFormat(f Format) string {
	if f == Raw {
		return "raw"
	}
	return fmt.Sprintf("%s-compressed", f)
}

// decoderCmd is a system command that unpacks a format from stdin to
// stdout: args are what it is run with, label what [Report.Decoder] shows
// after its path.
type decoderCmd struct {
	name  string
	args  []string
	label string
}

// systemDecoders are the commands tried, in order, for a format; the first
// on PATH that starts unpacks the image. xz: liblzma, several times faster
// than the built-in decoder, and on every core for a multi-block file (as
// `xz -T0` writes them). bzip2: lbzip2 unpacks any bzip2 file on every core
// (it finds the blocks itself), pbzip2 only the multi-stream files it
// writes (others on one core), bzip2 on one core; each is several times
// faster than the built-in decoder (about 6.5 MB/s).
var systemDecoders = map[Format][]decoderCmd{
	Xz: {{"xz", []string{"-d", "-c", "-q", "-T0"}, "-d -T0"}},
	Bzip2: {
		{"lbzip2", []string{"-d", "-c"}, "-d"},
		{"pbzip2", []string{"-d", "-c"}, "-d"},
		{"bzip2", []string{"-d", "-c", "-q"}, "-d"},
	},
}

// openDecoder returns a streaming reader of the image's content for the
// file f (positioned at its start) and says what unpacks it: for xz and
// bzip2 the first of systemDecoders found on PATH unless pureGo is set,
// else (or when none starts) the built-in decoder. ctx bounds the command
// (it is killed when ctx ends); closeFn stops it. The command shares f's
// offset, so how far it has read tells the progress.
func openDecoder(ctx context.Context, f *os.File, format Format, pureGo bool) (r io.Reader, by string, closeFn func(), err error) {
	for _, d := range systemDecoders[format] {
		if pureGo {
			break
		}
		path, err := exec.LookPath(d.name)
		if err != nil {
			continue
		}
		pr, err := startCommand(ctx, f, path, d.args...)
		if err != nil {
			continue // cannot run here (exec format, resources): the next one
		}
		return pr, path + " " + d.label, pr.close, nil
	}
	r, _, closeFn, err = decoder(f)
	return r, "built-in", closeFn, err
}

// procReader reads a command's stdout; at its end it waits for the command
// and turns a failure into an error that carries the command's message.
type procReader struct {
	cmd    *exec.Cmd
	out    io.ReadCloser
	stderr *headBuffer
	err    error
	waited bool
}

func startCommand(ctx context.Context, stdin *os.File, path string, args ...string) (*procReader, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdin = stdin
	p := &procReader{cmd: cmd, stderr: &headBuffer{max: 4096}}
	cmd.Stderr = p.stderr
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	// xz writes 8 KiB at a time: a big pipe saves most of the context
	// switches between it and the reader (on 2 cores the difference is
	// about 1.8x for a 1 GiB image; the bzip2 decoders gain too).
	setPipeSize(pw, 1<<20)
	cmd.Stdout = pw
	p.out = pr
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	return p, nil
}

func (p *procReader) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	n, err := p.out.Read(b)
	if err == io.EOF {
		p.waited = true
		p.out.Close()
		if werr := p.cmd.Wait(); werr != nil {
			msg := strings.TrimSpace(p.stderr.String())
			if msg == "" {
				msg = "no message"
			}
			err = fmt.Errorf("%s said %q: %w", filepath.Base(p.cmd.Path), msg, werr)
		}
	}
	if err != nil {
		p.err = err
	}
	return n, err
}

// close stops the command if it still runs and reaps it.
func (p *procReader) close() {
	if p.waited {
		return
	}
	p.waited = true
	_ = p.cmd.Process.Kill()
	p.out.Close()
	_ = p.cmd.Wait()
}

// headBuffer keeps the first max bytes written to it.
type headBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (h *headBuffer) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if room := h.max - len(h.buf); room > 0 {
		h.buf = append(h.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (h *headBuffer) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return string(h.buf)
}
