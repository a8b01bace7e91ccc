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
// bounded (about Buffers+InFlight+2 times BufferSize, 96 MiB by default,
// plus a 4 MiB read-back buffer and a decoder's own: see the README's
// measured peaks) whatever the image size:
//
//   - a producer reads the image (a raw image past the page cache with
//     O_DIRECT, only its mapped ranges when it has a bmap, only its data
//     when it has holes) or unpacks it, and checks each bmap range's
//     SHA-256 as it passes;
//   - the image file's SHA-256 is taken alongside (from the stream for a
//     whole raw image, else by a second reader that skips the holes of a
//     sparse file), or taken from the hash cache when this very file was
//     hashed before (see [Options.NoHashCache]); [Options.DeferHash] lets
//     Write return before it is complete ([Report.Hash]);
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
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
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
	// Default 8 MiB.
	BufferSize int
	// Buffers is how many buffers the decompressor may fill ahead of the
	// writer. Default 2.
	Buffers int
	// InFlight is how many writes may be in flight at once. Default 8:
	// 64 MiB in flight is what let a virtio disk and a loop device with
	// direct I/O write as fast as dd. Memory is about
	// Buffers+InFlight+2 times BufferSize (96 MiB by
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
	// DeferHash lets Write return once the image is written, synced and
	// read back, without waiting for the image file's SHA-256 when it is
	// still being computed (on a first flash of a sparse or compressed
	// image it reads the file once more, and costs more than the write).
	// [Report.Hash] then gives it: [Hash.Wait] returns it exact, or an
	// error when the file changed. Report.SHA256 is set only if it was
	// complete by then. Wait for it (or [Hash.Stop] it) before the image
	// may change or the test ends; it goes on while the DUT boots.
	DeferHash bool
	// KnownSHA256, when set, is the image file's SHA-256, already known
	// and trusted: the key of a content-addressed store that checked it
	// when the file entered and never changes its files (an exporter's
	// image cache). Write reports it (as SHA256Cached) instead of
	// computing it.
	KnownSHA256 string

	faults *faults // fault injection of this package's tests; nil in production
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
	Bytes int64 `json:"bytes"`
	// SHA256 is the hex SHA-256 of the image file as given; with
	// [Options.DeferHash] it is "" when the hash was not complete when
	// Write returned (see Hash).
	SHA256 string `json:"sha256"`
	// Hash is the image file's SHA-256 as it is computed: complete when
	// Write returns unless [Options.DeferHash] let it return first. It is
	// nil when Write failed before the hash began.
	Hash *Hash `json:"-"`
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

// verifySegment bounds a read-back range so a mismatch names a small one.
const verifySegment = 64 << 20

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
	o = o.withDefaults()
	regular, err := checkTargetPath(target)
	if err != nil {
		return rep, err
	}
	img, err := openImage(imagePath)
	if err != nil {
		return rep, err
	}
	defer img.file.Close()
	rep.Format = img.format
	p, err := planImage(img, imagePath, size, o)
	rep.Bmap = p.bmapPath
	if err != nil {
		return rep, err
	}
	rep.Mode, rep.Sparse = p.mode, p.sparse
	tg, err := openTarget(imagePath, target, regular, p, o)
	if err != nil {
		return rep, err
	}
	defer tg.close()
	rep.Direct = tg.direct != nil
	j := &job{o: o, p: p, rep: &rep, image: imagePath, img: img, tg: tg}
	err = j.run(ctx)
	if err != nil && rep.Hash != nil {
		rep.Hash.stop() // a failed Write leaves no hasher behind
	}
	if j.later != nil {
		j.later() // after a failure it ends at once, stopped
	}
	if err != nil && rep.Hash != nil {
		rep.Hash.Stop()
	}
	return rep, err
}

// withDefaults fills in the defaults of the zero fields.
func (o Options) withDefaults() Options {
	if o.BufferSize <= 0 {
		o.BufferSize = 8 << 20
	}
	o.BufferSize = (o.BufferSize + align - 1) &^ (align - 1)
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 64 << 20
	}
	if o.Buffers <= 0 {
		o.Buffers = 2
	}
	if o.InFlight <= 0 {
		o.InFlight = 8
	}
	if o.SyncEvery == 0 {
		o.SyncEvery = 64 << 20
	}
	return o
}

// checkTargetPath checks that target is a regular file or a block device
// none of whose partitions is mounted; regular says which.
func checkTargetPath(target string) (regular bool, err error) {
	st, err := os.Stat(target)
	if err != nil {
		return false, fmt.Errorf("%w: %s: %w", ErrTarget, target, err)
	}
	regular = st.Mode().IsRegular()
	if !regular && (st.Mode()&fs.ModeDevice == 0 || st.Mode()&fs.ModeCharDevice != 0) {
		return false, fmt.Errorf("%w: %s is neither a block device nor a regular file (mode %s)", ErrTarget, target, st.Mode())
	}
	if major, minor, ok := devNumber(st); ok {
		where, err := mountedAt(target, major, minor)
		if err != nil {
			return false, fmt.Errorf("%w: %w", ErrTarget, err)
		}
		if where != "" {
			return false, fmt.Errorf("%w: %s (or one of its partitions) is mounted at %s: unmount it first; flashing a mounted disk corrupts it", ErrTarget, target, where)
		}
	}
	return regular, nil
}

// imageFile is the open image, its format and its stat when opened.
type imageFile struct {
	file   *os.File
	format Format
	before os.FileInfo
}

// openImage opens the image and tells its format by its first bytes.
func openImage(path string) (*imageFile, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrImage, err)
	}
	before, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrImage, path, err)
	}
	var head [8]byte
	hn, _ := io.ReadFull(file, head[:])
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		file.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrImage, path, err)
	}
	return &imageFile{file: file, format: Detect(head[:hn]), before: before}, nil
}

// planImage finds the image's bmap and data ranges and makes the plan.
func planImage(img *imageFile, path string, size int64, o Options) (plan, error) {
	bmap, bmapPath, err := findBmap(path, img.format, o)
	if err != nil {
		return plan{}, err
	}
	in := planInput{imagePath: path, format: img.format, fileSize: size, bmap: bmap, bmapPath: bmapPath, skipHoles: o.SkipHoles}
	if bmap == nil && img.format == Raw {
		in.data, in.dataKnown = dataExtents(img.file, size)
	}
	return makePlan(in)
}

// targetFile is the target, open for writing: dst claims it (O_EXCL on a
// block device), direct writes past the page cache (nil when it cannot).
type targetFile struct {
	path     string
	regular  bool
	dst      *os.File
	direct   *os.File
	capacity int64
	growable bool // an empty regular file, which takes the image's size
}

// openTarget opens the target for writing and checks that it is the DUT's
// disk (Options.CheckTarget) and holds the image.
func openTarget(imagePath, target string, regular bool, p plan, o Options) (*targetFile, error) {
	flag := os.O_WRONLY
	if !regular {
		// On Linux, O_EXCL claims a block device: it fails with EBUSY while
		// the kernel uses it (mounted, swap, device-mapper, RAID), and keeps
		// others from claiming it while we write.
		flag |= os.O_EXCL
	}
	dst, err := os.OpenFile(target, flag, 0)
	if errors.Is(err, syscall.EBUSY) {
		return nil, fmt.Errorf("%w: %s is in use by the system (mounted, swap, device-mapper or RAID member): release it first: %w", ErrTarget, target, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: open %s for writing: %w", ErrTarget, target, err)
	}
	t := &targetFile{path: target, regular: regular, dst: dst}
	if err := t.check(imagePath, p, o); err != nil {
		t.close()
		return nil, err
	}
	if !o.NoDirect {
		if t.direct, err = openDirect(target, os.O_WRONLY); err != nil {
			t.close()
			return nil, fmt.Errorf("%w: open %s for writing: %w", ErrTarget, target, err)
		}
	}
	return t, nil
}

// check runs Options.CheckTarget and checks the target's capacity.
func (t *targetFile) check(imagePath string, p plan, o Options) error {
	if o.CheckTarget != nil {
		if err := o.CheckTarget(t.dst); err != nil {
			return fmt.Errorf("%w: %s is not this device's disk, refusing to write to it: %w", ErrTarget, t.path, err)
		}
	}
	capacity, err := t.dst.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("%w: size of %s: %w", ErrTarget, t.path, err)
	}
	t.capacity, t.growable = capacity, t.regular && capacity == 0
	return p.checkFits(imagePath, t.path, capacity, t.growable)
}

// closeChecked closes the target's descriptors and reports a failure.
func (t *targetFile) closeChecked() error {
	if t.direct != nil {
		if err := t.direct.Close(); err != nil {
			return fmt.Errorf("%w: close %s: %w", ErrTarget, t.path, err)
		}
	}
	if err := t.dst.Close(); err != nil {
		return fmt.Errorf("%w: close %s: %w", ErrTarget, t.path, err)
	}
	return nil
}

// close closes the target's descriptors (again: harmless).
func (t *targetFile) close() {
	if t.direct != nil {
		t.direct.Close()
	}
	t.dst.Close()
}

// job is one [Write] past its checks: the plan and the open image and
// target. run starts the stages (the image's hash, the pipeline, the
// read-back), copies and finishes.
type job struct {
	o     Options
	p     plan
	rep   *Report
	image string
	img   *imageFile
	tg    *targetFile
	// later starts a deferred hash, once Write is done with the image.
	later func()
}

// run flashes the image; the Report says how far it got.
func (j *job) run(ctx context.Context) (err error) {
	h, feed := j.startHash(ctx)
	j.rep.Hash = h
	j.rep.SHA256Cached = h.Cached()
	if h.Cached() {
		j.rep.SHA256 = h.sum
	}
	pl, err := j.startPipeline(ctx, feed)
	if err != nil {
		return err
	}
	defer pl.close()

	// The verifier reads back what each sync made durable while the
	// write goes on.
	var ver *verifier
	if !j.o.NoVerify {
		vctx, stopVerify := context.WithCancel(ctx)
		if ver, err = startVerifier(vctx, j.tg.path, j.o); err != nil {
			stopVerify()
			return err
		}
		defer func() { stopVerify(); ver.wait() }()
	}
	if j.tg.growable && j.p.imageSize >= 0 {
		// A new file gets its size first: its holes are the image's
		// holes and read as zeros from the start.
		if err := j.tg.dst.Truncate(j.p.imageSize); err != nil {
			return fmt.Errorf("%w: size %s: %w", ErrTarget, j.tg.path, err)
		}
	}
	wr := startWriters(j.tg.path, j.tg.dst, j.tg.direct, j.o.InFlight, !j.tg.regular, j.o.BufferSize, j.o.faults)
	defer wr.stop()
	c := &copier{
		p: j.p, o: j.o, rep: j.rep, image: j.image, target: j.tg.path, wr: wr, ver: ver,
		dst: j.tg.dst, direct: j.tg.direct, capacity: j.tg.capacity, growable: j.tg.growable,
		free: pl.free, file: j.img.file, before: j.img.before, position: j.position,
		start: pl.start, total: j.p.imageSize,
	}
	if err := c.copyAll(ctx, pl.out); err != nil {
		return err
	}
	pl.close()
	return j.finish(ctx, c, h)
}

// position says how far into the image file the decoder has read, or -1.
func (j *job) position() int64 {
	pos, err := j.img.file.Seek(0, io.SeekCurrent)
	if err != nil {
		return -1
	}
	return pos
}

// startHash returns the image's Hash: from the hash cache, or being
// computed. The hasher it returns is what the pipeline feeds: the stream's
// (a whole raw image, hashed as it passes) or a tee of the producer's
// chunks (a raw image read in parts); for a compressed image, nil: the
// file is hashed on its own descriptor.
func (j *job) startHash(ctx context.Context) (*Hash, hashFeed) {
	if j.o.KnownSHA256 != "" {
		return cachedHash(j.o.KnownSHA256), hashFeed{}
	}
	cache := hashCache(j.o)
	if sum := cache.lookup(j.img.file, j.img.before); sum != "" {
		return cachedHash(sum), hashFeed{}
	}
	if j.o.DeferHash {
		ctx = context.WithoutCancel(ctx) // it may outlive the Write
	}
	hctx, stop := context.WithCancel(ctx)
	ih := &imageHasher{h: newHash(stop), path: j.image, before: j.img.before, size: j.p.fileSize, cache: cache, faults: j.o.faults, idle: j.o.DeferHash}
	switch {
	case j.p.wholeStream():
		return ih.h, hashFeed{stream: ih}
	case j.o.DeferHash:
		// Hashing beside the write costs it CPU time (about a second
		// per GiB, holes included) on a busy host: a deferred hash
		// begins when Write returns, while the DUT boots.
		ih.direct = j.p.format == Raw // no decoder shares its page cache
		j.later = func() { ih.h.workers.Go(func() { ih.readFile(hctx) }) }
		return ih.h, hashFeed{}
	case j.p.format == Raw:
		t := newTeeHasher(ih, 2, j.o.BufferSize)
		ih.h.workers.Go(func() { t.run(hctx) })
		return ih.h, hashFeed{tee: t}
	}
	ih.h.workers.Go(func() { ih.readFile(hctx) })
	return ih.h, hashFeed{}
}

// hashFeed is how the pipeline feeds the image's hasher, if it does.
type hashFeed struct {
	stream *imageHasher // hashes the whole stream as a stage
	tee    *teeHasher   // is offered copies of the chunks
}

// pipeline is the producer (a reader of the raw image or a decoder),
// optionally followed by the stream's hasher, filling reusable buffers.
type pipeline struct {
	free    chan []byte
	out     <-chan chunk
	start   time.Time
	stop    context.CancelFunc
	wg      sync.WaitGroup
	closers []func()
	once    sync.Once
}

// startPipeline starts the producer, which feeds the image's hasher.
func (j *job) startPipeline(ctx context.Context, feed hashFeed) (*pipeline, error) {
	prod, closeSrc, err := j.producer(ctx)
	if err != nil {
		return nil, err
	}
	prod.tee = feed.tee
	pl := &pipeline{start: time.Now(), closers: []func(){closeSrc}}
	rctx, stop := context.WithCancel(ctx)
	pl.stop = stop
	n := j.o.Buffers + j.o.InFlight + 2
	pl.free = make(chan []byte, n)
	for range n {
		pl.free <- alignedBuf(j.o.BufferSize)
	}
	produced := make(chan chunk, j.o.Buffers)
	pl.out = produced
	pl.wg.Go(func() { prod.run(rctx, pl.free, produced) })
	if feed.stream != nil {
		pl.out = feed.stream.stage(rctx, j.img.file, produced, &pl.wg)
	}
	return pl, nil
}

// close stops the pipeline and waits for its goroutines (once).
func (pl *pipeline) close() {
	pl.once.Do(func() {
		pl.stop()
		pl.wg.Wait()
		for _, c := range pl.closers {
			c()
		}
	})
}

// producer returns the producer of the plan: spans of the raw image (past
// the page cache where it can), or a decoder's stream.
func (j *job) producer(ctx context.Context) (*producer, func(), error) {
	prod := &producer{file: j.img.file, size: j.p.fileSize, exts: j.p.exts, spans: j.p.spans}
	if b := j.p.bmap; b != nil {
		prod.newSum = b.newHash
		prod.mismatch = func(e extent, got string) error {
			return fmt.Errorf("%w: %s does not match its bmap %s: %s has %s %s, the bmap says %s; the target is incomplete", ErrImage, j.image, j.p.bmapPath, e.name, b.ChecksumType, got, e.sum)
		}
	}
	if j.p.format != Raw {
		r, by, closeSrc, err := openDecoder(ctx, j.img.file, j.p.format, j.o.PureGo)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s: cannot read its header: %w", ErrImage, j.image, err)
		}
		prod.r, j.rep.Decoder = r, by
		return prod, closeSrc, nil
	}
	j.rep.Decoder = "none"
	closeSrc := func() {}
	if !j.o.NoDirect {
		// Reading past the page cache saves filling it with an image
		// read once.
		if d, err := openDirect(j.image, os.O_RDONLY); err == nil && d != nil {
			if st, err := d.Stat(); err == nil && os.SameFile(st, j.img.before) {
				prod.direct = d
			}
			closeSrc = func() { d.Close() }
		}
	}
	return prod, closeSrc, nil
}

// finish ends a write whose stream ended cleanly: the last sync, the
// image's hash (unless deferred), the check that the image did not change,
// the final progress and the end of the read-back.
func (j *job) finish(ctx context.Context, c *copier, h *Hash) error {
	rep := j.rep
	if j.tg.growable && j.p.exts != nil {
		// Skipped ranges at the end leave the new file short.
		if err := j.tg.dst.Truncate(rep.Bytes); err != nil {
			return fmt.Errorf("%w: size %s: %w", ErrTarget, j.tg.path, err)
		}
	}
	if err := c.sync(ctx); err != nil {
		return c.fail(err)
	}
	rep.Direct = j.tg.direct != nil && !c.wr.noDir.Load()
	rep.ZeroedBy = c.wr.zeroedBy()
	if err := j.tg.closeChecked(); err != nil {
		return err
	}
	if err := j.awaitHash(ctx, h); err != nil {
		return err
	}
	if after, err := j.img.file.Stat(); err != nil || !sameFile(j.img.before, after) {
		rep.SHA256 = ""
		return errChanged(j.image)
	}
	rep.Duration = time.Since(c.start)
	if rep.Bytes > 0 {
		rep.MappedFraction = float64(rep.MappedBytes) / float64(rep.Bytes)
	}
	c.total = rep.Bytes
	c.progress(true)
	if c.ver == nil {
		return nil
	}
	vstart := time.Now()
	c.ver.add(nil, true)
	err := c.ver.wait()
	rep.VerifyDuration = time.Since(vstart)
	if err != nil {
		return err
	}
	rep.Verified = true
	return nil
}

// awaitHash waits for the image's hash and puts it in the Report, or with
// Options.DeferHash takes it only when it is complete already.
func (j *job) awaitHash(ctx context.Context, h *Hash) error {
	if h.Cached() {
		return nil
	}
	if j.o.DeferHash {
		select {
		case <-h.Done():
			if h.err == nil {
				j.rep.SHA256 = h.sum
			}
		default:
		}
		return nil
	}
	sum, err := h.Wait(ctx)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("flash %s to %s was cancelled while the image's SHA-256 was computed: all %d bytes were written and synced, but not verified: %w", j.image, j.tg.path, j.rep.MappedBytes, ctx.Err())
	}
	if err != nil {
		return err
	}
	j.rep.SHA256 = sum
	return nil
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
