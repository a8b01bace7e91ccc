package flash

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// plan is what a [Write] will do, decided from what is known about the
// image before a byte is copied: its format, its bmap, the data ranges of a
// raw image. Making it does no I/O (see [makePlan]), so every rule of the
// package doc about modes, holes and bmaps is a test of a value.
type plan struct {
	format Format
	// fileSize is the image file's size; imageSize the unpacked image's,
	// -1 when not known before the end (a compressed image without bmap).
	fileSize, imageSize int64
	bmap                *Bmap
	bmapPath            string
	// exts are the ranges of the image to write, in order; nil: all of it.
	exts []extent
	// spans are what the producer reads of a raw image (exts merged
	// across short gaps, or the whole file); nil: a decoder streams it.
	spans []extent
	mode  Mode
	// sparse: the raw image's holes are left as they were (ModeSkipHoles).
	sparse bool
	// zeroHoles: ModeFull with holes; the gaps between exts are zeroed.
	zeroHoles bool
}

// planInput is what [makePlan] decides from.
type planInput struct {
	imagePath string
	format    Format
	fileSize  int64
	bmap      *Bmap  // nil: none
	bmapPath  string // where bmap came from
	// data are the byte ranges of a raw image file that hold data
	// (SEEK_DATA); dataKnown is false when the file system cannot tell.
	data      [][2]int64
	dataKnown bool
	skipHoles bool // Options.SkipHoles
}

// makePlan decides a [Write]'s plan: which ranges of the image are written,
// which are zeroed, what the producer reads, and the [Mode] that results.
// It fails on a bmap that belongs to another (raw) image.
func makePlan(in planInput) (plan, error) {
	p := plan{format: in.format, fileSize: in.fileSize, imageSize: -1, bmap: in.bmap, bmapPath: in.bmapPath, mode: ModeFull}
	if in.format == Raw {
		p.imageSize = in.fileSize
	}
	switch {
	case in.bmap != nil:
		if in.format == Raw && in.bmap.ImageSize != in.fileSize {
			return p, fmt.Errorf("%w: %w: %s is for an image of %d bytes, %s has %d: it belongs to another image", ErrImage, ErrBmap, in.bmapPath, in.bmap.ImageSize, in.imagePath, in.fileSize)
		}
		p.imageSize = in.bmap.ImageSize
		p.exts = bmapExtents(in.bmap)
		p.mode = ModeBmap
	case in.format == Raw && in.dataKnown:
		data := blockExtents(in.data, in.fileSize)
		if data == nil {
			break // no holes: every byte is written
		}
		if in.skipHoles {
			p.exts, p.mode, p.sparse = data, ModeSkipHoles, true
			break
		}
		// Short holes are read and written with their neighbours (the
		// producer reads through them anyway); the rest are zeroed on
		// the target.
		p.exts, p.zeroHoles = dataSpans(data), true
	}
	if in.format == Raw {
		p.spans = []extent{{start: 0, end: in.fileSize}}
		if p.exts != nil {
			p.spans = mergeSpans(p.exts)
		}
	}
	return p, nil
}

// wholeStream says the producer hands over every byte of the image file in
// order: its SHA-256 can be taken from the stream.
func (p plan) wholeStream() bool {
	return p.format == Raw && p.exts == nil
}

// checkFits refuses a target of capacity bytes that cannot hold the image
// (a growable target, an empty regular file, holds anything).
func (p plan) checkFits(imagePath, target string, capacity int64, growable bool) error {
	if p.imageSize >= 0 && capacity < p.imageSize && !growable {
		return tooBig(target, capacity, fmt.Sprintf("the image %s needs %d", imagePath, p.imageSize))
	}
	return nil
}

// bmapExtents returns the mapped ranges of b as extents to write.
func bmapExtents(b *Bmap) []extent {
	exts := make([]extent, 0, len(b.Ranges))
	for _, r := range b.Ranges {
		s, e := b.Bytes(r)
		exts = append(exts, extent{start: s, end: e, sum: r.Checksum, name: fmt.Sprintf("bmap range %d-%d (bytes %d-%d)", r.First, r.Last, s, e-1)})
	}
	return exts
}

// findBmap returns the bmap to use and its path, or nil.
func findBmap(imagePath string, format Format, o Options) (*Bmap, string, error) {
	if o.NoBmap {
		return nil, "", nil
	}
	candidates := []string{o.Bmap}
	if o.Bmap == "" {
		candidates = []string{imagePath + ".bmap"}
		if ext := filepath.Ext(imagePath); format != Raw && ext != "" {
			candidates = append(candidates, strings.TrimSuffix(imagePath, ext)+".bmap")
		}
	}
	for _, c := range candidates {
		doc, err := os.ReadFile(c)
		if errors.Is(err, fs.ErrNotExist) && o.Bmap == "" {
			continue
		}
		if err != nil {
			return nil, c, fmt.Errorf("%w: %w: %w", ErrImage, ErrBmap, err)
		}
		b, err := ParseBmap(doc)
		if err != nil {
			return nil, c, fmt.Errorf("%s: %w", c, err)
		}
		return b, c, nil
	}
	return nil, "", nil
}

// holeExtents maps a raw image's data the way `bmaptool create` does: 4 KiB
// blocks holding any data, merged into ranges. It returns nil when the file
// has no holes or the file system cannot tell.
func holeExtents(f *os.File, size int64) []extent {
	data, ok := dataExtents(f, size)
	if !ok {
		return nil
	}
	return blockExtents(data, size)
}

// blockExtents rounds the data ranges of a file of size bytes out to 4 KiB
// blocks and merges them: nil when that leaves no hole, empty when the file
// is all holes.
func blockExtents(data [][2]int64, size int64) []extent {
	const bs = 4096
	var out []extent
	for _, d := range data {
		first, last := d[0]/bs, (d[1]-1)/bs
		s, e := first*bs, min((last+1)*bs, size)
		if n := len(out); n > 0 && s <= out[n-1].end {
			out[n-1].end = max(out[n-1].end, e)
			continue
		}
		out = append(out, extent{start: s, end: e})
	}
	if len(out) == 1 && out[0].start == 0 && out[0].end == size {
		return nil
	}
	for i := range out {
		out[i].name = fmt.Sprintf("data blocks %d-%d", out[i].start/bs, (out[i].end-1)/bs)
	}
	if out == nil {
		out = []extent{} // all holes: nothing to write
	}
	return out
}

// dataSpans merges a sparse raw image's data ranges across holes shorter
// than spanGap (which the producer reads through anyway: writing their
// zeros costs less than another request): the ranges ModeFull writes; the
// holes between them are zeroed.
func dataSpans(data []extent) []extent {
	out := mergeSpans(data)
	const bs = 4096
	for i := range out {
		out[i].name = fmt.Sprintf("data blocks %d-%d", out[i].start/bs, (out[i].end-1)/bs)
	}
	return out
}

// tooBig describes a target smaller than the image: the image's fault (it
// does not fit this DUT's disk), unless the target holds no bytes at all,
// which is a disk or reader without its medium.
func tooBig(target string, capacity int64, what string) error {
	if capacity == 0 {
		return fmt.Errorf("%w: %s holds 0 bytes (%s): no medium in the reader, or the disk failed: check the DUT's storage", ErrTarget, target, what)
	}
	return fmt.Errorf("%w: %w: %s holds %d bytes, %s: the image is too big for this DUT's disk: use a smaller image, or a DUT with a bigger disk", ErrImage, ErrTooBig, target, capacity, what)
}

// BmapFor returns the path of the bmap a [Write] of image with o would read
// (o.Bmap, IMAGE.bmap beside the image, or for a compressed foo.img.zst
// foo.img.bmap), or "" when it would use none. It reads only the image's
// first bytes (to tell its format) and checks that the bmap parses, so that
// a tool sending the image elsewhere (the remote driver) sends the bmap the
// engine there must use.
func BmapFor(image string, o Options) (string, error) {
	f, err := os.Open(image)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrImage, err)
	}
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	f.Close()
	_, path, err := findBmap(image, Detect(head[:n]), o)
	return path, err
}

// Flasher is implemented by a device that writes images itself rather than
// showing this host a block target: a remote device, whose exporter runs
// this engine beside the storage. The harness hands it the image (and o)
// where it would call [Write] on the block target; the device powers off,
// switches its storage, writes, verifies and switches it off again, and
// returns the engine's report.
type Flasher interface {
	FlashImage(ctx context.Context, image string, o Options) (Report, error)
}
