package flash

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"fmt"
	"io"

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
