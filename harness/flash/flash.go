// Package flash writes OS images onto a DUT's storage: the block device (or,
// for virtual DUTs, the regular file) that a storage multiplexer exposes on
// the test host.
//
// [Write] streams the image into the target, unpacking it on the way when it
// is gzip, xz, zstd or bzip2 (told by its magic bytes, not its name; xz and
// bzip2 go through a system decoder when one is installed: xz, lbzip2,
// pbzip2 or bzip2, several times faster than the built-in decoders, which
// are the fallback and [Options.PureGo]). It works as a pipeline of goroutines
// joined by bounded queues of reusable aligned buffers, so memory stays
// bounded (about Buffers+InFlight+2 times BufferSize, 40 MiB by default)
// whatever the image size:
//
//   - a producer reads the image (a raw image past the page cache with
//     O_DIRECT, only its mapped ranges when it has a bmap, only its data
//     when it has holes) or unpacks it, and checks each bmap range's
//     SHA-256 as it passes;
//   - the image file's SHA-256 is taken alongside (from the stream for a
//     whole raw image, else by a second reader that skips the holes of a
//     sparse file), or taken from the hash cache when this very file was
//     hashed before (see [Options.NoHashCache]);
//   - the writer keeps several writes in flight ([Options.InFlight]), with
//     O_DIRECT where the target allows it, and syncs every
//     [Options.SyncEvery] bytes so that cancelling never waits for minutes
//     of dirty pages;
//   - a verifier reads each synced range back past the page cache while the
//     write goes on and compares its CRC-32C with what was written (and a
//     zeroed range with zeros), so the read-back adds little to the flash; a
//     mismatch stops the write.
//
// # Holes and bmaps
//
// Without a bmap the target ends byte-identical to the image ([ModeFull]):
// each of its first [Report.Bytes] bytes is the image's (what lies past the
// image's end is left as it was). The holes of a
// sparse raw image (mapped as `bmaptool create` maps them: 4 KiB blocks
// without data) are not read; they are made zero on the target by the
// device where it guarantees zeros (fallocate PUNCH_HOLE, else ZERO_RANGE,
// on a regular file; the BLKZEROOUT ioctl on a block device, never
// BLKDISCARD, which need not read back as zeros), else by writing zeros,
// and the read-back checks that they read as zeros. A compressed image has
// no holes: all of it is written. Skipping holes is what a bmap or an
// explicit option asks for: with a bmap (bmaptool's format 1.x/2.0, beside
// the image or given in [Options]) only its mapped ranges are written
// ([ModeBmap]) and the rest of the target is left as it was; with
// [Options.SkipHoles] the holes of a sparse raw image are left as they were
// ([ModeSkipHoles]). [Options.NoBmap] refuses a bmap found beside the image,
// like `bmaptool copy --nobmap`. [Report.Mode] says which rule a write
// followed.
//
// # Errors
//
// Every error about the image (missing, unreadable, empty, a corrupt or
// truncated stream, a bmap that is corrupt or another image's, a range not
// matching its bmap, an image that changed while it was flashed, an image
// larger than the target) wraps [ErrImage], those about a bmap also
// [ErrBmap], and a too big image also [ErrTooBig]: the user's input to fix.
// Every error about the target (missing, not a disk, mounted, claimed, not
// this DUT's disk, without its medium, failing to write, sync or zero,
// reading back other bytes) wraps [ErrTarget], a read-back mismatch also
// [ErrVerify]: the lab's. A cancelled ctx wraps its error and neither.
//
// Before writing a byte it checks its inputs: the image must be a readable
// regular file, the bmap its own, the target a block device that is not
// mounted (nor any of its partitions) or a regular file, and no smaller than
// the image.
package flash

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Errors callers tell apart with [errors.Is].
var (
	// ErrImage is wrapped by errors about the image: missing, unreadable,
	// not a regular file, empty, a corrupt or truncated stream, not
	// matching its bmap, changed while it was flashed, too big for the
	// target ([ErrTooBig]).
	ErrImage = errors.New("bad image")
	// ErrTarget is wrapped by errors about the target: missing, not a block
	// device or regular file, mounted, claimed, not the DUT's disk, without
	// its medium (0 bytes), failing to write, sync, zero or read back.
	ErrTarget = errors.New("bad flash target")
	// ErrTooBig is wrapped (with [ErrImage]) when the image is larger than
	// the target: the image does not fit this DUT's disk, which the
	// image's author can fix (a smaller image) and the lab cannot.
	ErrTooBig = errors.New("image larger than the target")
	// ErrVerify is wrapped (with [ErrTarget]) when what was read back from
	// the target differs from what was written.
	ErrVerify = errors.New("read-back verification failed")
)

// Progress reports how a write goes.
type Progress struct {
	// Done is how far into the unpacked image the write got (written,
	// zeroed or skipped bytes). Total is the unpacked image's size, or -1 when it is
	// not known before the end (a compressed image without a bmap).
	Done, Total int64
	// Fraction is the share of the work done, from 0 to 1: Done/Total, or
	// when Total is unknown the share of the compressed file read so far.
	Fraction float64
	Elapsed  time.Duration // since the write began
}

// Rate returns the average write rate so far in MB/s (10^6 bytes).
func (p Progress) Rate() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Done) / 1e6 / p.Elapsed.Seconds()
}

// Options tune [Write]. The zero value is the recommended setting.
type Options struct {
	// Progress, when set, is called about every ProgressEvery bytes and once
	// at the end, from the writing goroutine.
	Progress func(Progress)
	// ProgressEvery defaults to 64 MiB.
	ProgressEvery int64
	// BufferSize is the size of each read and write, rounded up to 4 KiB.
	// Default 4 MiB.
	BufferSize int
	// Buffers is how many buffers the decompressor may fill ahead of the
	// writer. Default 4.
	Buffers int
	// InFlight is how many writes may be in flight at once. Default 4.
	// Memory is about Buffers+InFlight+2 times BufferSize (40 MiB by
	// default).
	InFlight int
	// Bmap is the bmap file to use. When empty, IMAGE.bmap is used if it
	// exists, and for a compressed image foo.img.zst also foo.img.bmap.
	// NoBmap wins over it.
	Bmap string
	// NoBmap refuses every bmap, like `bmaptool copy --nobmap`: neither
	// IMAGE.bmap beside the image nor [Options.Bmap] is read, and the
	// target ends byte-identical to the image ([ModeFull]: a raw image's
	// holes are zeroed on the target, see [Write]).
	NoBmap bool
	// SkipHoles leaves the target's bytes under the holes of a sparse raw
	// image (one without a bmap) as they were, writing only its data
	// ([ModeSkipHoles]), as the flash engine did before byte-identity
	// became the default: faster, but the target then holds the image only
	// where the image has data, and whatever was flashed before everywhere
	// else (an old file system's signature in an empty partition, an old
	// boot sector in a blank image). Ask for it only when the holes'
	// content does not matter. It has no effect with a bmap (which already
	// writes only its mapped ranges) nor on a compressed image (which has
	// no holes: its zeros are written).
	SkipHoles bool
	// SyncEvery syncs the target after every this many bytes written, so
	// that cancelling or closing never waits for minutes of dirty pages.
	// Default 64 MiB; negative syncs only at the end.
	SyncEvery int64
	// NoDirect writes and reads through the page cache instead of O_DIRECT.
	NoDirect bool
	// NoVerify skips reading the written ranges back.
	NoVerify bool
	// NoHashCache computes the image's SHA-256 every time. By default a
	// computed hash is remembered in the user's cache directory
	// ($XDG_CACHE_HOME/jumpstarter-go/image-sha256), keyed by the file's
	// device, inode and inode generation, size, modification and
	// status-change times (which no write can leave unchanged), so
	// flashing the same image again does not read all of it again. On a
	// file system that does not give inode generations nothing is cached.
	NoHashCache bool
	// HashCacheDir overrides where hashes are remembered.
	HashCacheDir string
	// CheckTarget, when set, is called with the opened target before
	// anything is written: a driver's proof that this is its DUT's disk and
	// not another (see driver.TargetChecker). An error refuses the target.
	CheckTarget func(f *os.File) error
	// PureGo unpacks xz and bzip2 images with the built-in decoders even
	// when a command for them is on PATH (xz; lbzip2, pbzip2 or bzip2),
	// which is used by default: it is several times faster and, xz and
	// lbzip2, uses every core.
	PureGo bool
}

// Mode says what a [Write] left on the target outside the image's data.
type Mode string

// The modes of [Report.Mode].
const (
	// ModeBmap: a bmap was used; its mapped ranges were written and
	// checked against its checksums, its unmapped ranges were left as
	// they were on the target.
	ModeBmap Mode = "bmap"
	// ModeFull: the target's first [Report.Bytes] bytes are byte-identical
	// to the (unpacked) image. The holes of a sparse raw image were zeroed
	// on the target ([Report.ZeroedBytes], [Report.ZeroedBy]) rather than
	// read and written.
	ModeFull Mode = "full"
	// ModeSkipHoles: [Options.SkipHoles]; the data of a sparse raw image
	// was written and its holes left as they were on the target.
	ModeSkipHoles Mode = "skip-holes"
)

// Report says what a [Write] did (on failure: how far it got).
type Report struct {
	Image  string `json:"image"`  // the image's path
	Format Format `json:"format"` // the image's encoding
	// Decoder says what unpacked the image: "none" for a raw image,
	// "built-in", or the command that did.
	Decoder string `json:"decoder"`
	Target  string `json:"target"` // the target's path
	// Bytes is how far into the unpacked image the write got: its size
	// after a success.
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"` // hex SHA-256 of the image file as given
	// SHA256Cached says the SHA-256 came from the hash cache (see
	// [Options.NoHashCache]) instead of being computed by this write.
	SHA256Cached bool `json:"sha256_cached"`
	// Duration runs from the start of the write to the end of the final
	// sync. The read-back overlaps it: each range is read back once a
	// sync made it durable.
	Duration time.Duration `json:"-"`

	// Mode says what the target holds besides what was written: the image
	// byte for byte (ModeFull), or old bytes outside a bmap's mapped
	// ranges (ModeBmap) or under a raw image's holes (ModeSkipHoles).
	Mode Mode   `json:"mode"`
	Bmap string `json:"bmap"` // the bmap file used, "" when none
	// Sparse says the raw image's holes were skipped, left as they were
	// on the target: Mode is ModeSkipHoles.
	Sparse bool `json:"sparse"`
	// MappedBytes is how many bytes of the image were written to the
	// target: the mapped ranges of a bmap, the data of a sparse raw image
	// (with the short holes between its data ranges, under 256 KiB, read
	// and written as the zeros they are), or all Bytes.
	MappedBytes int64 `json:"mapped_bytes"`
	// MappedFraction is MappedBytes / Bytes.
	MappedFraction float64 `json:"mapped_fraction"`
	// ZeroedBytes is how many bytes of the target were made zero, rather
	// than written from the image, to match the holes of a sparse raw
	// image (ModeFull). With ModeFull, MappedBytes + ZeroedBytes = Bytes.
	ZeroedBytes int64 `json:"zeroed_bytes"`
	// ZeroedBy says how: "punch-hole" or "zero-range" (fallocate on a
	// regular file), "blkzeroout" (the BLKZEROOUT ioctl of a block device,
	// which reads back as zeros by contract), "write" (zeros written, where
	// the device offers none of these), "+"-joined when several were used
	// (an unaligned last hole of a block device is written); "" when
	// nothing was zeroed.
	ZeroedBy string `json:"zeroed_by"`
	Direct   bool   `json:"direct"` // writes went through O_DIRECT
	// Verified says the written ranges were read back and matched, and
	// the zeroed ones read as zeros.
	Verified bool `json:"verified"`
	// VerifyDuration is how long the read-back ran on after the write
	// ended: what verification adds to a flash.
	VerifyDuration time.Duration `json:"-"`
}

// MBps returns the flash rate in MB/s (10^6 bytes) of the image's size,
// sync included (skipped ranges count, as with bmaptool).
func (r Report) MBps() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Bytes) / 1e6 / r.Duration.Seconds()
}

// CheckImage checks that path names a readable, non-empty regular file and
// returns its size. It is cheap: call it before switching any hardware.
func CheckImage(path string) (int64, error) {
	if path == "" {
		return 0, fmt.Errorf("%w: no image path given: set DUT_IMAGE to the image file to flash", ErrImage)
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("%w: %s does not exist: build or download it first, or point DUT_IMAGE at an existing file: %w", ErrImage, path, err)
		}
		return 0, fmt.Errorf("%w: cannot open %s: %w", ErrImage, path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %w", ErrImage, path, err)
	}
	if !st.Mode().IsRegular() {
		return 0, fmt.Errorf("%w: %s is not a regular file (mode %s)", ErrImage, path, st.Mode())
	}
	if st.Size() == 0 {
		return 0, fmt.Errorf("%w: %s is empty", ErrImage, path)
	}
	return st.Size(), nil
}

// align is the O_DIRECT alignment of offsets, lengths and buffer addresses
// used: enough for 512- and 4096-byte logical sectors.
const align = 4096

// alignedBuf returns n bytes whose address is a multiple of align.
func alignedBuf(n int) []byte {
	b := make([]byte, n+align)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (align - 1))
	if off != 0 {
		off = align - off
	}
	return b[off : off+n : off+n]
}

func isAligned(p []byte) bool {
	return len(p) > 0 && uintptr(unsafe.Pointer(&p[0]))&(align-1) == 0
}

// extent is a byte range [start, end) of the image to write; sum is the
// bmap's checksum of it ("" when none) and name says what it is in messages.
type extent struct {
	start, end int64
	sum        string
	name       string
}

// written is a byte range of the target and the CRC-32C of what was written
// there, or a range that was zeroed, checked by the read-back.
type written struct {
	start, end int64
	sum        uint32 // CRC-32C
	name       string
	zero       bool // zeroed, not written: must read back as zeros
}

// Test hooks, nil in production: syncHook is called after each sync of the
// target with the bytes written so far; writeHook before each write, whose
// error it can fake (a disk that goes away).
var (
	syncHook  func(written int64)
	writeHook func(off int64, n int) error
)

// verifySegment bounds a read-back range so a mismatch names a small one.
const verifySegment = 64 << 20

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

// Write copies the image at imagePath onto target, unpacking it when it is
// compressed, syncs it and reads it back. Without a bmap the target's first
// bytes end identical to the image, holes included (they are zeroed, not
// written, see the package doc); with one only its mapped ranges are
// written, and with [Options.SkipHoles] only a sparse raw image's data. The
// [Report] says which ([Report.Mode]) and how many bytes were written and
// zeroed. It refuses, before writing anything, an image
// that [CheckImage] rejects, a bad bmap (unparsable, a wrong own checksum,
// an ImageSize not the raw image's size), a target that is not a block
// device or regular file, a mounted block device, and a target smaller than
// a raw image or the bmap's ImageSize (a regular file target may grow only
// when it is empty); a compressed image that unpacks to more than the target
// holds, or to another size than its bmap says, fails when the stream shows
// it. A range whose data does not match its bmap checksum, a corrupt or
// truncated stream, and a read-back mismatch fail naming the range. When ctx
// ends it stops at the next buffer and reports how far it got; the target is
// then incomplete and must be written again.
func Write(ctx context.Context, imagePath, target string, o Options) (Report, error) {
	rep := Report{Image: imagePath, Target: target}
	size, err := CheckImage(imagePath)
	if err != nil {
		return rep, err
	}
	if o.BufferSize <= 0 {
		o.BufferSize = 4 << 20
	}
	o.BufferSize = (o.BufferSize + align - 1) &^ (align - 1)
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 64 << 20
	}
	if o.Buffers <= 0 {
		o.Buffers = 4
	}
	if o.InFlight <= 0 {
		o.InFlight = 4
	}
	if o.SyncEvery == 0 {
		o.SyncEvery = 64 << 20
	}
	st, err := os.Stat(target)
	if err != nil {
		return rep, fmt.Errorf("%w: %s: %w", ErrTarget, target, err)
	}
	regular := st.Mode().IsRegular()
	if !regular && (st.Mode()&fs.ModeDevice == 0 || st.Mode()&fs.ModeCharDevice != 0) {
		return rep, fmt.Errorf("%w: %s is neither a block device nor a regular file (mode %s)", ErrTarget, target, st.Mode())
	}
	if major, minor, ok := devNumber(st); ok {
		where, err := mountedAt(target, major, minor)
		if err != nil {
			return rep, fmt.Errorf("%w: %w", ErrTarget, err)
		}
		if where != "" {
			return rep, fmt.Errorf("%w: %s (or one of its partitions) is mounted at %s: unmount it first; flashing a mounted disk corrupts it", ErrTarget, target, where)
		}
	}
	file, err := os.Open(imagePath)
	if err != nil {
		return rep, fmt.Errorf("%w: %w", ErrImage, err)
	}
	defer file.Close()
	var head [8]byte
	hn, _ := io.ReadFull(file, head[:])
	format := Detect(head[:hn])
	rep.Format = format
	bmap, bmapPath, err := findBmap(imagePath, format, o)
	if err != nil {
		return rep, err
	}
	rep.Bmap = bmapPath
	var exts []extent      // nil: write everything
	imageSize := int64(-1) // the unpacked size, when known
	if format == Raw {
		imageSize = size
	}
	if bmap != nil {
		if format == Raw && bmap.ImageSize != size {
			return rep, fmt.Errorf("%w: %w: %s is for an image of %d bytes, %s has %d: it belongs to another image", ErrImage, ErrBmap, bmapPath, bmap.ImageSize, imagePath, size)
		}
		imageSize = bmap.ImageSize
		exts = make([]extent, 0, len(bmap.Ranges))
		for _, r := range bmap.Ranges {
			s, e := bmap.Bytes(r)
			exts = append(exts, extent{start: s, end: e, sum: r.Checksum, name: fmt.Sprintf("bmap range %d-%d (bytes %d-%d)", r.First, r.Last, s, e-1)})
		}
	}
	rep.Mode = ModeFull
	zeroHoles := false // ModeFull with holes: the gaps between exts are zeroed
	switch {
	case bmap != nil:
		rep.Mode = ModeBmap
	case format == Raw:
		data := holeExtents(file, size)
		if data == nil {
			break // no holes: every byte is written
		}
		if o.SkipHoles {
			exts, rep.Mode, rep.Sparse = data, ModeSkipHoles, true
			break
		}
		// Short holes are read and written with their neighbours
		// (the producer reads through them anyway); the rest are
		// zeroed on the target.
		exts, zeroHoles = dataSpans(data), true
	}
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		return rep, fmt.Errorf("%w: %s: %w", ErrImage, imagePath, err)
	}
	total := imageSize // -1: not known before the end

	flag := os.O_WRONLY
	if !regular {
		// On Linux, O_EXCL claims a block device: it fails with EBUSY while
		// the kernel uses it (mounted, swap, device-mapper, RAID), and keeps
		// others from claiming it while we write.
		flag |= os.O_EXCL
	}
	dst, err := os.OpenFile(target, flag, 0)
	if errors.Is(err, syscall.EBUSY) {
		return rep, fmt.Errorf("%w: %s is in use by the system (mounted, swap, device-mapper or RAID member): release it first: %w", ErrTarget, target, err)
	}
	if err != nil {
		return rep, fmt.Errorf("%w: open %s for writing: %w", ErrTarget, target, err)
	}
	defer dst.Close()
	if o.CheckTarget != nil {
		if err := o.CheckTarget(dst); err != nil {
			return rep, fmt.Errorf("%w: %s is not this device's disk, refusing to write to it: %w", ErrTarget, target, err)
		}
	}
	capacity, err := dst.Seek(0, io.SeekEnd)
	if err != nil {
		return rep, fmt.Errorf("%w: size of %s: %w", ErrTarget, target, err)
	}
	growable := regular && capacity == 0
	if imageSize >= 0 && capacity < imageSize && !growable {
		return rep, tooBig(target, capacity, fmt.Sprintf("the image %s needs %d", imagePath, imageSize))
	}
	var direct *os.File
	if !o.NoDirect {
		if direct, err = openDirect(target, os.O_WRONLY); err != nil {
			return rep, fmt.Errorf("%w: open %s for writing: %w", ErrTarget, target, err)
		}
		if direct != nil {
			defer direct.Close()
			rep.Direct = true
		}
	}

	// The image's SHA-256 comes from the hash cache, from the stream as it
	// passes (a whole raw image), or from a parallel reader on the same
	// descriptor (pread); the image's stat before and after proves the
	// bytes hashed are the bytes flashed.
	before, err := file.Stat()
	if err != nil {
		return rep, fmt.Errorf("%w: %s: %w", ErrImage, imagePath, err)
	}
	cache := hashCache(o)
	rep.SHA256 = cache.lookup(file, before)
	rep.SHA256Cached = rep.SHA256 != ""
	prod := &producer{file: file, size: size, exts: exts}
	if bmap != nil {
		prod.newSum = bmap.newHash
		prod.mismatch = func(e extent, got string) error {
			return fmt.Errorf("%w: %s does not match its bmap %s: %s has %s %s, the bmap says %s; the target is incomplete", ErrImage, imagePath, bmapPath, e.name, bmap.ChecksumType, got, e.sum)
		}
	}
	var streamSum hash.Hash // hashes the chunks on their way to the writer
	sumc := make(chan sumResult, 1)
	closeSrc := func() {}
	if format == Raw {
		rep.Decoder = "none"
		prod.spans = []extent{{start: 0, end: size}}
		if exts != nil {
			prod.spans = mergeSpans(exts)
		} else if !rep.SHA256Cached {
			streamSum = sha256.New()
		}
		if !o.NoDirect {
			// Reading past the page cache saves filling it with an
			// image read once.
			if d, err := openDirect(imagePath, os.O_RDONLY); err == nil && d != nil {
				if st, err := d.Stat(); err == nil && os.SameFile(st, before) {
					prod.direct = d
				}
				defer d.Close()
			}
		}
	} else {
		r, by, c, err := openDecoder(ctx, file, format, o.PureGo)
		if err != nil {
			return rep, fmt.Errorf("%w: %s: cannot read its header: %w", ErrImage, imagePath, err)
		}
		prod.r, rep.Decoder, closeSrc = r, by, c
	}
	hctx, stopHash := context.WithCancel(ctx)
	var hashing sync.WaitGroup
	defer func() { stopHash(); hashing.Wait() }() // Write leaves no goroutine behind
	if !rep.SHA256Cached && streamSum == nil {
		hashing.Go(func() { sumc <- hashFile(hctx, imagePath, before, size) })
	}

	// The producer fills free buffers and queues them for the writer,
	// through the hashing stage when the stream is hashed.
	start := time.Now()
	rctx, stop := context.WithCancel(ctx)
	free := make(chan []byte, o.Buffers+o.InFlight+2)
	for range o.Buffers + o.InFlight + 2 {
		free <- alignedBuf(o.BufferSize)
	}
	produced := make(chan chunk, o.Buffers)
	full := produced // what the writer takes
	var wg sync.WaitGroup
	wg.Go(func() { prod.run(rctx, free, produced) })
	if streamSum != nil {
		hashed := make(chan chunk, o.Buffers)
		in := produced
		wg.Go(func() {
			defer close(hashed)
			var n int64
			for c := range in {
				streamSum.Write(c.buf[:c.n])
				n += int64(c.n)
				if c.err == io.EOF && n == size {
					sumc <- sumResult{sum: hex.EncodeToString(streamSum.Sum(nil))}
				}
				select {
				case hashed <- c:
				case <-rctx.Done():
					return
				}
			}
		})
		full = hashed
	}
	defer closeSrc()
	defer wg.Wait()
	defer stop()

	// The verifier reads back what each sync made durable while the write
	// goes on.
	var ver *verifier
	if !o.NoVerify {
		vctx, stopVerify := context.WithCancel(ctx)
		if ver, err = startVerifier(vctx, target, o); err != nil {
			stopVerify()
			return rep, err
		}
		defer func() { stopVerify(); ver.wait() }()
	}

	if growable && imageSize >= 0 {
		// A new file gets its size first: its holes are the image's
		// holes and read as zeros from the start.
		if err := dst.Truncate(imageSize); err != nil {
			return rep, fmt.Errorf("%w: size %s: %w", ErrTarget, target, err)
		}
	}
	wr := startWriters(target, dst, direct, o.InFlight, !regular, o.BufferSize)
	defer wr.stop()
	var release func() // gives the current chunk's buffer back once written

	var (
		ri        int       // the extent being written
		done      []written // closed segments, in order
		handed    int       // how many of done the verifier has
		cur       *written
		lastSync  int64 // MappedBytes at the last sync
		lastCover int64 // MappedBytes+ZeroedBytes at the last sync
		zpos      int64 // with zeroHoles: the target is settled up to here
		nextPrint = o.ProgressEvery
	)
	finished := false // the last report()
	report := func() {
		if o.Progress != nil {
			p := Progress{Done: rep.Bytes, Total: total, Elapsed: time.Since(start)}
			switch {
			case total > 0:
				p.Fraction = float64(rep.Bytes) / float64(total)
			case finished:
				p.Fraction = 1
			default:
				// The decoder (or the xz command, which shares the
				// descriptor) has read this far into the file.
				if pos, err := file.Seek(0, io.SeekCurrent); err == nil && size > 0 {
					p.Fraction = min(float64(pos)/float64(size), 1)
				}
			}
			o.Progress(p)
		}
	}
	// put writes p at offset at of the target and sums it for the
	// read-back.
	put := func(p []byte, at int64, name string, hold, release func()) error {
		for q, a := p, at; len(q) > 0; {
			if cur != nil && (cur.end != a || cur.name != name || cur.end-cur.start >= verifySegment) {
				done = append(done, *cur)
				cur = nil
			}
			if cur == nil {
				cur = &written{start: a, end: a, name: name}
			}
			k := min(int64(len(q)), verifySegment-(cur.end-cur.start))
			cur.sum = crc32.Update(cur.sum, castagnoli, q[:k])
			cur.end += k
			q, a = q[k:], a+k
		}
		if writeHook != nil {
			if err := writeHook(at, len(p)); err != nil {
				return writeFailed(target, at, err)
			}
		}
		if err := wr.failed(); err != nil {
			return err
		}
		hold()
		wr.submit(p, at, release)
		return nil
	}
	// fail and stopped wait for the writes in flight, so that the report
	// says what reached the target.
	fail := func(err error) (Report, error) {
		_ = wr.drain()
		rep.MappedBytes, rep.ZeroedBytes, rep.ZeroedBy = wr.ok.Load(), wr.zeroed.Load(), wr.zeroedBy()
		rep.Direct = direct != nil && !wr.noDir.Load()
		return rep, err
	}
	stopped := func(err error) error {
		_ = wr.drain()
		rep.MappedBytes, rep.ZeroedBytes, rep.ZeroedBy = wr.ok.Load(), wr.zeroed.Load(), wr.zeroedBy()
		of := fmt.Sprintf(" of %d", total)
		if total < 0 {
			of = " (unpacked)"
		}
		return fmt.Errorf("flash %s to %s stopped at image offset %d%s (%d bytes written to the target); the target is incomplete and must be flashed again: %w", imagePath, target, rep.Bytes, of, rep.MappedBytes, err)
	}

	syncTarget := func() error {
		if err := wr.drain(); err != nil {
			return err
		}
		if direct != nil {
			if err := direct.Sync(); err != nil {
				return fmt.Errorf("%w: sync %s: %w", ErrTarget, target, err)
			}
		}
		if err := dst.Sync(); err != nil {
			return fmt.Errorf("%w: sync %s: %w", ErrTarget, target, err)
		}
		lastSync, lastCover = rep.MappedBytes, rep.MappedBytes+rep.ZeroedBytes
		if syncHook != nil {
			syncHook(lastSync)
		}
		if err := ctx.Err(); err != nil {
			// Cancelled while syncing: say how far the write got, not
			// that the read-back stopped.
			return stopped(err)
		}
		if ver != nil {
			// Everything written so far is durable: hand it to the
			// read-back, the open segment too.
			if cur != nil {
				done = append(done, *cur)
				cur = nil
			}
			ver.add(done[handed:], false)
			handed = len(done)
			return ver.failed()
		}
		return nil
	}
	// zeroTo zeroes the target from zpos up to end (a hole of the image),
	// in pieces that the read-back checks apart.
	zeroTo := func(end int64) error {
		for zpos < end {
			if err := ctx.Err(); err != nil {
				return stopped(err)
			}
			if err := wr.failed(); err != nil {
				return err
			}
			n := min(end-zpos, verifySegment)
			if cur != nil {
				done = append(done, *cur)
				cur = nil
			}
			done = append(done, written{start: zpos, end: zpos + n, zero: true, name: "a hole of the image"})
			wr.submitZero(zpos, n)
			rep.ZeroedBytes += n
			zpos += n
			if o.SyncEvery > 0 && rep.MappedBytes+rep.ZeroedBytes-lastCover >= o.SyncEvery {
				if err := syncTarget(); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return rep, stopped(err)
		}
		var c chunk
		var ok bool
		select {
		case c, ok = <-full:
		case <-ctx.Done():
			return rep, stopped(ctx.Err())
		}
		if !ok {
			if err := ctx.Err(); err != nil {
				return rep, stopped(err)
			}
			return rep, stopped(errors.New("the decompressor stopped"))
		}
		if c.n > 0 {
			off, end := c.off, c.off+int64(c.n)
			if !growable && end > capacity {
				return fail(tooBig(target, capacity, fmt.Sprintf("the %s image %s unpacks to more (stopped at offset %d, the target is incomplete)", describeFormat(format), imagePath, rep.Bytes)))
			}
			if bmap != nil && end > bmap.ImageSize {
				return fail(fmt.Errorf("%w: %w: the %s image %s unpacks to more than the %d bytes its bmap %s says (stopped at offset %d): the bmap belongs to another image", ErrImage, ErrBmap, describeFormat(format), imagePath, bmap.ImageSize, bmapPath, rep.Bytes))
			}
			refs := new(atomic.Int32)
			refs.Store(1) // this loop's hold; each write adds one
			buf := c.buf
			hold := func() { refs.Add(1) }
			release = func() {
				if refs.Add(-1) == 0 {
					free <- buf
				}
			}
			if exts == nil {
				if err := put(c.buf[:c.n], off, "", hold, release); err != nil {
					return fail(err)
				}
				rep.MappedBytes += int64(c.n)
			}
			for pos := off; exts != nil && pos < end && ri < len(exts); {
				e := exts[ri]
				if e.start >= end {
					break
				}
				a, b := max(pos, e.start), min(end, e.end)
				if zeroHoles {
					if err := zeroTo(a); err != nil {
						return fail(err)
					}
					zpos = b
				}
				if err := put(c.buf[a-off:b-off], a, e.name, hold, release); err != nil {
					return fail(err)
				}
				rep.MappedBytes += b - a
				if b == e.end {
					ri++
				}
				pos = b
			}
			if o.SyncEvery > 0 && rep.MappedBytes+rep.ZeroedBytes-lastCover >= o.SyncEvery {
				if err := syncTarget(); err != nil {
					return fail(err)
				}
			}
		}
		rep.Bytes = max(rep.Bytes, c.off+int64(c.n))
		if rep.Bytes >= nextPrint {
			report()
			nextPrint = (rep.Bytes/o.ProgressEvery + 1) * o.ProgressEvery
		}
		rerr := c.err
		if rerr == nil {
			if release != nil {
				release()
			} else {
				free <- c.buf
			}
			release = nil
			continue
		}
		if rerr == io.EOF {
			break
		}
		if err := ctx.Err(); err != nil {
			// The decoder command was killed by the cancel: not the
			// image's fault.
			return rep, stopped(err)
		}
		if st, err := file.Stat(); err == nil && !sameFile(before, st) {
			return fail(errChanged(imagePath))
		}
		if errors.Is(rerr, ErrImage) {
			return fail(rerr)
		}
		return fail(fmt.Errorf("%w: %s: the %s stream is corrupt or truncated after %d bytes were written; the target is incomplete: %w", ErrImage, imagePath, describeFormat(format), rep.Bytes, rerr))
	}
	if cur != nil {
		done = append(done, *cur)
		cur = nil
	}
	if format == Raw && rep.Bytes != size {
		return fail(fmt.Errorf("%w: %s changed while it was flashed: read %d bytes, expected %d", ErrImage, imagePath, rep.Bytes, size))
	}
	if zeroHoles {
		if err := zeroTo(size); err != nil { // the last hole, or all of a blank image
			return fail(err)
		}
	}
	if bmap != nil && rep.Bytes != bmap.ImageSize {
		return fail(fmt.Errorf("%w: %w: the %s image %s unpacks to %d bytes, its bmap %s says %d: the bmap belongs to another image; the target is incomplete", ErrImage, ErrBmap, describeFormat(format), imagePath, rep.Bytes, bmapPath, bmap.ImageSize))
	}
	stop()
	wg.Wait()
	if growable && exts != nil {
		// Skipped ranges at the end leave the new file short.
		if err := dst.Truncate(rep.Bytes); err != nil {
			return rep, fmt.Errorf("%w: size %s: %w", ErrTarget, target, err)
		}
	}
	if err := syncTarget(); err != nil {
		return fail(err)
	}
	rep.Direct = direct != nil && !wr.noDir.Load()
	rep.ZeroedBy = wr.zeroedBy()
	if direct != nil {
		if err := direct.Close(); err != nil {
			return rep, fmt.Errorf("%w: close %s: %w", ErrTarget, target, err)
		}
	}
	if err := dst.Close(); err != nil {
		return rep, fmt.Errorf("%w: close %s: %w", ErrTarget, target, err)
	}
	if !rep.SHA256Cached {
		var hs sumResult
		select {
		case hs = <-sumc:
		case <-ctx.Done():
			return rep, fmt.Errorf("flash %s to %s was cancelled while the image's SHA-256 was computed: all %d bytes were written and synced, but not verified: %w", imagePath, target, rep.MappedBytes, ctx.Err())
		}
		if hs.err != nil && ctx.Err() != nil {
			return rep, fmt.Errorf("flash %s to %s was cancelled while the image's SHA-256 was computed: all %d bytes were written and synced, but not verified: %w", imagePath, target, rep.MappedBytes, ctx.Err())
		}
		if hs.err != nil {
			return rep, fmt.Errorf("%w: read %s: %w", ErrImage, imagePath, hs.err)
		}
		rep.SHA256 = hs.sum
	}
	after, err := file.Stat()
	if err != nil || !sameFile(before, after) {
		rep.SHA256 = ""
		return rep, errChanged(imagePath)
	}
	if !rep.SHA256Cached {
		cache.store(file, after, rep.SHA256)
	}
	rep.Duration = time.Since(start)
	if rep.Bytes > 0 {
		rep.MappedFraction = float64(rep.MappedBytes) / float64(rep.Bytes)
	}
	finished, total = true, rep.Bytes
	report()
	if o.NoVerify {
		return rep, nil
	}
	vstart := time.Now()
	ver.add(nil, true)
	err = ver.wait()
	rep.VerifyDuration = time.Since(vstart)
	if err != nil {
		return rep, err
	}
	rep.Verified = true
	return rep, nil
}

func errChanged(imagePath string) error {
	return fmt.Errorf("%w: %s changed while it was flashed (size or modification time differ): the target holds neither version; flash it again", ErrImage, imagePath)
}

// writeFailed describes a failed write to the target at offset at.
func writeFailed(target string, at int64, err error) error {
	return fmt.Errorf("%w: write %s at offset %d failed%s; the target is incomplete and must be flashed again: %w", ErrTarget, target, at, failHint(err), err)
}

// failHint says what a failed write or zeroing of the target means.
func failHint(err error) string {
	switch {
	case errors.Is(err, syscall.EIO), errors.Is(err, syscall.ENODEV), errors.Is(err, syscall.ENXIO):
		return ": the disk went away or failed (unplugged, storage mux switched, or a bad medium): check it and its connection"
	case errors.Is(err, syscall.ENOSPC):
		return ": the target is full"
	}
	return ""
}

// sumResult is the image file's SHA-256 (hex) or why it could not be taken.
type sumResult struct {
	sum string
	err error
}

// hashFile returns the SHA-256 of the first size bytes of the file at path,
// which must still be the file before describes. It reads on its own
// descriptors (past the page cache where it can) and feeds the holes of a
// sparse file from memory instead of reading them.
func hashFile(ctx context.Context, path string, before os.FileInfo, size int64) sumResult {
	f, err := os.Open(path)
	if err != nil {
		return sumResult{err: err}
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !os.SameFile(st, before) {
		return sumResult{err: errors.New("the file was replaced while it was flashed")}
	}
	var direct *os.File
	if d, err := openDirect(path, os.O_RDONLY); err == nil && d != nil {
		defer d.Close()
		if st, err := d.Stat(); err == nil && os.SameFile(st, before) {
			direct = d
		}
	}
	data, ok := dataExtents(f, size)
	if !ok {
		data = [][2]int64{{0, size}}
	}
	h := sha256.New()
	const step = 1 << 20
	buf := alignedBuf(step)
	zeros := make([]byte, step)
	var pos int64
	for _, d := range append(data, [2]int64{size, size}) {
		for pos < d[0] { // a hole reads as zeros
			if err := ctx.Err(); err != nil {
				return sumResult{err: err}
			}
			n := min(int64(step), d[0]-pos)
			h.Write(zeros[:n])
			pos += n
		}
		for pos < d[1] {
			if err := ctx.Err(); err != nil {
				return sumResult{err: err}
			}
			want := int(min(int64(step), d[1]-pos))
			var n int
			var err error
			if direct != nil && pos%align == 0 {
				n, err = direct.ReadAt(buf[:(want+align-1)&^(align-1)], pos)
				if errors.Is(err, syscall.EINVAL) {
					direct = nil
					continue
				}
			} else {
				n, err = f.ReadAt(buf[:want], pos)
			}
			if n < want {
				if err == nil || err == io.EOF {
					err = fmt.Errorf("the file shrank to %d bytes while it was flashed", pos+int64(n))
				}
				return sumResult{err: err}
			}
			h.Write(buf[:want])
			pos += int64(want)
		}
	}
	return sumResult{sum: hex.EncodeToString(h.Sum(nil))}
}

// fill reads until buf is full or the reader fails. Unlike io.ReadFull it
// returns io.EOF for a clean end after a partial buffer and passes every
// other error through, so a decoder's io.ErrUnexpectedEOF (a truncated
// stream) stays an error.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
