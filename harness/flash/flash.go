// Package flash writes OS images onto a DUT's storage: the block device (or,
// for virtual DUTs, the regular file) that a storage multiplexer exposes on
// the test host.
//
// The engine streams the image into the target, decompressing on the way
// when the image is gzip, xz, zstd or bzip2 (told by its magic bytes, not its
// name). Decompression runs in its own goroutine and feeds the writer through
// a bounded queue of reusable buffers, so memory stays bounded whatever the
// image size. With a bmap (bmaptool's format 1.x/2.0, beside the image or
// given in [Options]) only the mapped ranges are written, each checked
// against the bmap's checksum as it streams; a sparse raw image without a
// bmap has its holes skipped the way `bmaptool create` would map them.
// Writes use O_DIRECT with aligned buffers where the target allows it, the
// target is synced every [Options.SyncEvery] bytes and at the end, and then
// the written ranges are read back past the page cache and compared by
// SHA-256. Before writing a byte it checks its inputs: the image must be a
// readable regular file, the target a block device that is not mounted (nor
// any of its partitions) or a regular file, and no smaller than the image.
package flash

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Errors callers tell apart with [errors.Is].
var (
	// ErrImage is wrapped by errors about the image: missing, unreadable,
	// not a regular file, empty, corrupt, not matching its bmap.
	ErrImage = errors.New("bad image")
	// ErrTarget is wrapped by errors about the target: missing, not a block
	// device or regular file, mounted, too small, failing to write.
	ErrTarget = errors.New("bad flash target")
	// ErrVerify is wrapped (with [ErrTarget]) when what was read back from
	// the target differs from what was written.
	ErrVerify = errors.New("read-back verification failed")
)

// Progress reports how a write goes.
type Progress struct {
	Done, Total int64         // bytes of the image passed (written or skipped)
	Elapsed     time.Duration // since the write began
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
	// writer. Default 4; memory is about Buffers+1 times BufferSize.
	Buffers int
	// Bmap is the bmap file to use. When empty, IMAGE.bmap is used if it
	// exists, and for a compressed image foo.img.zst also foo.img.bmap.
	Bmap string
	// NoBmap ignores any bmap and any holes: every byte is written.
	NoBmap bool
	// SyncEvery syncs the target after every this many bytes written, so
	// that cancelling or closing never waits for minutes of dirty pages.
	// Default 64 MiB; negative syncs only at the end.
	SyncEvery int64
	// NoDirect writes and reads through the page cache instead of O_DIRECT.
	NoDirect bool
	// NoVerify skips reading the written ranges back.
	NoVerify bool
}

// Report says what a [Write] did (on failure: how far it got).
type Report struct {
	Image  string // the image's path
	Format Format // the image's encoding
	Target string // the target's path
	// Bytes is how far into the unpacked image the write got: its size
	// after a success.
	Bytes  int64
	SHA256 string // hex SHA-256 of the image file as given
	// Duration runs from open to the end of the final sync (without verify).
	Duration time.Duration

	Bmap   string // the bmap file used, "" when none
	Sparse bool   // the raw image's holes were skipped (no bmap)
	// MappedBytes is how many bytes were written to the target: the mapped
	// ranges, or all Bytes when nothing was skipped.
	MappedBytes    int64
	MappedFraction float64 // MappedBytes / Bytes
	Direct         bool    // writes went through O_DIRECT
	Verified       bool    // the written ranges were read back and matched
	VerifyDuration time.Duration
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

// written is a byte range of the target and the SHA-256 of what was written
// there, checked by the read-back.
type written struct {
	start, end int64
	sum        []byte
	name       string
}

// syncHook, when set (by tests), is called after each sync of the target
// with the bytes written so far.
var syncHook func(written int64)

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

type chunk struct {
	buf []byte
	n   int
	off int64
	err error
}

// Write copies the image at imagePath onto target, unpacking it when it is
// compressed, writing only the mapped ranges when it has a bmap or holes,
// syncs it and reads it back. It refuses, before writing anything, an image
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
	var exts []extent // nil: write everything
	var newSum func() hash.Hash
	imageSize := int64(-1) // the unpacked size, when known
	if format == Raw {
		imageSize = size
	}
	if bmap != nil {
		if format == Raw && bmap.ImageSize != size {
			return rep, fmt.Errorf("%w: %w: %s is for an image of %d bytes, %s has %d: it belongs to another image", ErrImage, ErrBmap, bmapPath, bmap.ImageSize, imagePath, size)
		}
		imageSize = bmap.ImageSize
		newSum = bmap.newHash
		exts = make([]extent, 0, len(bmap.Ranges))
		for _, r := range bmap.Ranges {
			s, e := bmap.Bytes(r)
			exts = append(exts, extent{start: s, end: e, sum: r.Checksum, name: fmt.Sprintf("bmap range %d-%d (bytes %d-%d)", r.First, r.Last, s, e-1)})
		}
	} else if format == Raw && !o.NoBmap {
		exts = holeExtents(file, size)
		rep.Sparse = exts != nil
	}
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		return rep, fmt.Errorf("%w: %s: %w", ErrImage, imagePath, err)
	}
	total := size
	if imageSize >= 0 {
		total = imageSize
	}

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
	capacity, err := dst.Seek(0, io.SeekEnd)
	if err != nil {
		return rep, fmt.Errorf("%w: size of %s: %w", ErrTarget, target, err)
	}
	growable := regular && capacity == 0
	if imageSize >= 0 && capacity < imageSize && !growable {
		return rep, fmt.Errorf("%w: %s holds %d bytes, the image %s needs %d: use a bigger disk or a smaller image", ErrTarget, target, capacity, imagePath, imageSize)
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

	h := sha256.New()
	src, _, closeSrc, err := decoder(io.TeeReader(file, h))
	if err != nil {
		return rep, fmt.Errorf("%w: %s: cannot read its header: %w", ErrImage, imagePath, err)
	}

	// The decompressor fills free buffers and queues them for the writer.
	start := time.Now()
	rctx, stop := context.WithCancel(ctx)
	free := make(chan []byte, o.Buffers+1)
	for range o.Buffers + 1 {
		free <- alignedBuf(o.BufferSize)
	}
	full := make(chan chunk, o.Buffers)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(full)
		var off int64
		for {
			var b []byte
			select {
			case b = <-free:
			case <-rctx.Done():
				return
			}
			n, err := fill(src, b)
			select {
			case full <- chunk{b, n, off, err}:
			case <-rctx.Done():
				return
			}
			off += int64(n)
			if err != nil {
				return
			}
		}
	}()
	defer closeSrc()
	defer wg.Wait()
	defer stop()

	var (
		ri        int // the extent being written
		extSum    hash.Hash
		done      []written
		cur       *written
		curH      hash.Hash
		lastSync  int64
		nextPrint = o.ProgressEvery
	)
	report := func() {
		if o.Progress != nil {
			o.Progress(Progress{Done: rep.Bytes, Total: total, Elapsed: time.Since(start)})
		}
	}
	closeCur := func() {
		if cur != nil {
			cur.sum = curH.Sum(nil)
			done = append(done, *cur)
			cur = nil
		}
	}
	// put writes p at offset at of the target and hashes it for the
	// read-back.
	put := func(p []byte, at int64, name string) error {
		for q, a := p, at; len(q) > 0; {
			if cur != nil && (cur.end != a || cur.name != name || cur.end-cur.start >= verifySegment) {
				closeCur()
			}
			if cur == nil {
				cur = &written{start: a, end: a, name: name}
				curH = sha256.New()
			}
			k := min(int64(len(q)), verifySegment-(cur.end-cur.start))
			curH.Write(q[:k])
			cur.end += k
			q, a = q[k:], a+k
		}
		if direct != nil && at%align == 0 && isAligned(p) {
			if k := len(p) &^ (align - 1); k > 0 {
				_, err := direct.WriteAt(p[:k], at)
				switch {
				case errors.Is(err, syscall.EINVAL):
					// The device wants another alignment: go on without
					// O_DIRECT (pwrite writes all or fails, so nothing
					// was half-done).
					_ = direct.Close()
					direct, rep.Direct = nil, false
				case err != nil:
					return fmt.Errorf("%w: write %s at offset %d: %w", ErrTarget, target, at, err)
				default:
					p, at = p[k:], at+int64(k)
				}
			}
		}
		if len(p) > 0 {
			if _, err := dst.WriteAt(p, at); err != nil {
				return fmt.Errorf("%w: write %s at offset %d: %w", ErrTarget, target, at, err)
			}
		}
		return nil
	}
	syncTarget := func() error {
		if direct != nil {
			if err := direct.Sync(); err != nil {
				return fmt.Errorf("%w: sync %s: %w", ErrTarget, target, err)
			}
		}
		if err := dst.Sync(); err != nil {
			return fmt.Errorf("%w: sync %s: %w", ErrTarget, target, err)
		}
		lastSync = rep.MappedBytes
		if syncHook != nil {
			syncHook(lastSync)
		}
		return nil
	}
	stopped := func(err error) error {
		return fmt.Errorf("flash %s to %s stopped at image offset %d of %d (%d bytes written to the target); the target is incomplete and must be flashed again: %w", imagePath, target, rep.Bytes, total, rep.MappedBytes, err)
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
				return rep, fmt.Errorf("%w: the %s image %s unpacks to more than the %d bytes %s holds; stopped at offset %d, the target is incomplete: use a bigger disk or a smaller image", ErrTarget, describeFormat(format), imagePath, capacity, target, rep.Bytes)
			}
			if bmap != nil && end > bmap.ImageSize {
				return rep, fmt.Errorf("%w: %w: the %s image %s unpacks to more than the %d bytes its bmap %s says (stopped at offset %d): the bmap belongs to another image", ErrImage, ErrBmap, describeFormat(format), imagePath, bmap.ImageSize, bmapPath, rep.Bytes)
			}
			if exts == nil {
				if err := put(c.buf[:c.n], off, ""); err != nil {
					return rep, err
				}
				rep.MappedBytes += int64(c.n)
			}
			for pos := off; exts != nil && pos < end && ri < len(exts); {
				e := exts[ri]
				if e.start >= end {
					break
				}
				a, b := max(pos, e.start), min(end, e.end)
				p := c.buf[a-off : b-off]
				if e.sum != "" {
					if extSum == nil {
						extSum = newSum()
					}
					extSum.Write(p)
				}
				if err := put(p, a, e.name); err != nil {
					return rep, err
				}
				rep.MappedBytes += b - a
				if b == e.end {
					if e.sum != "" {
						if got := hex.EncodeToString(extSum.Sum(nil)); got != e.sum {
							return rep, fmt.Errorf("%w: %s does not match its bmap %s: %s has %s %s, the bmap says %s; the target is incomplete", ErrImage, imagePath, bmapPath, e.name, bmap.ChecksumType, got, e.sum)
						}
						extSum = nil
					}
					ri++
				}
				pos = b
			}
			rep.Bytes = end
			if o.SyncEvery > 0 && rep.MappedBytes-lastSync >= o.SyncEvery {
				if err := syncTarget(); err != nil {
					return rep, err
				}
			}
			if rep.Bytes >= nextPrint {
				report()
				nextPrint += o.ProgressEvery
			}
		}
		rerr := c.err
		if rerr == nil {
			free <- c.buf
			continue
		}
		if rerr == io.EOF {
			break
		}
		return rep, fmt.Errorf("%w: %s: the %s stream is corrupt or truncated after %d bytes were written; the target is incomplete: %w", ErrImage, imagePath, describeFormat(format), rep.Bytes, rerr)
	}
	closeCur()
	if format == Raw && rep.Bytes != size {
		return rep, fmt.Errorf("%w: %s changed while it was flashed: read %d bytes, expected %d", ErrImage, imagePath, rep.Bytes, size)
	}
	if bmap != nil && rep.Bytes != bmap.ImageSize {
		return rep, fmt.Errorf("%w: %w: the %s image %s unpacks to %d bytes, its bmap %s says %d: the bmap belongs to another image; the target is incomplete", ErrImage, ErrBmap, describeFormat(format), imagePath, rep.Bytes, bmapPath, bmap.ImageSize)
	}
	// Hash what the decoder left unread (a compressed file's trailer).
	stop()
	wg.Wait()
	if _, err := io.Copy(h, file); err != nil {
		return rep, fmt.Errorf("%w: read %s: %w", ErrImage, imagePath, err)
	}
	if growable && exts != nil {
		// Skipped ranges at the end leave the new file short.
		if err := dst.Truncate(rep.Bytes); err != nil {
			return rep, fmt.Errorf("%w: size %s: %w", ErrTarget, target, err)
		}
	}
	if err := syncTarget(); err != nil {
		return rep, err
	}
	if direct != nil {
		if err := direct.Close(); err != nil {
			return rep, fmt.Errorf("%w: close %s: %w", ErrTarget, target, err)
		}
	}
	if err := dst.Close(); err != nil {
		return rep, fmt.Errorf("%w: close %s: %w", ErrTarget, target, err)
	}
	rep.Duration = time.Since(start)
	rep.SHA256 = hex.EncodeToString(h.Sum(nil))
	if rep.Bytes > 0 {
		rep.MappedFraction = float64(rep.MappedBytes) / float64(rep.Bytes)
	}
	report()
	if o.NoVerify {
		return rep, nil
	}
	vstart := time.Now()
	err = verify(ctx, target, done, o)
	rep.VerifyDuration = time.Since(vstart)
	if err != nil {
		return rep, err
	}
	rep.Verified = true
	return rep, nil
}

// verify reads the written ranges back from the medium (O_DIRECT, or after
// dropping the page cache) and compares their SHA-256 with what was written.
func verify(ctx context.Context, target string, ranges []written, o Options) error {
	rd, err := os.Open(target)
	if err != nil {
		return fmt.Errorf("%w: verify: open %s: %w", ErrTarget, target, err)
	}
	defer rd.Close()
	dropCache(rd)
	var direct *os.File
	if !o.NoDirect {
		if direct, err = openDirect(target, os.O_RDONLY); err != nil {
			return fmt.Errorf("%w: verify: open %s: %w", ErrTarget, target, err)
		}
		if direct != nil {
			defer direct.Close()
		}
	}
	size := o.BufferSize
	if size <= 0 {
		size = 4 << 20
	}
	buf := alignedBuf((size + align - 1) &^ (align - 1))
	for _, w := range ranges {
		h := sha256.New()
		for pos := w.start; pos < w.end; {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("verify of %s stopped at offset %d: %w", target, pos, err)
			}
			want := int(min(int64(len(buf)), w.end-pos))
			var n int
			var err error
			if direct != nil && pos%align == 0 {
				n, err = direct.ReadAt(buf[:(want+align-1)&^(align-1)], pos)
			} else {
				n, err = rd.ReadAt(buf[:want], pos)
			}
			if n < want {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("%w: %w: read %s at offset %d: %w", ErrTarget, ErrVerify, target, pos, err)
			}
			h.Write(buf[:want])
			pos += int64(want)
		}
		if got := h.Sum(nil); string(got) != string(w.sum) {
			where := fmt.Sprintf("bytes %d-%d", w.start, w.end-1)
			if w.name != "" {
				where += " of " + w.name
			}
			return fmt.Errorf("%w: %w: %s %s read back with sha256 %x, but %x was written: the medium or its adapter corrupts data", ErrTarget, ErrVerify, target, where, got, w.sum)
		}
	}
	return nil
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
