// Package flash writes OS images onto a DUT's storage: the block device (or,
// for virtual DUTs, the regular file) that a storage multiplexer exposes on
// the test host.
//
// This first engine streams the image into the target with a bounded buffer,
// decompressing on the way when the image is gzip, xz, zstd or bzip2
// (told by its magic bytes, not its name), hashes the image file (SHA-256),
// syncs the target before reporting success, and checks its inputs before it
// writes a byte: the image must be a readable regular file, the target a
// block device or regular file no smaller than the image (for a compressed
// image: no smaller than what it unpacks to, checked as it is written, before
// the first byte that would not fit). bmap-mapped images, O_DIRECT, a
// parallel pipeline and read-back verification come with the full engine.
package flash

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// Errors callers tell apart with [errors.Is].
var (
	// ErrImage is wrapped by errors about the image: missing, unreadable,
	// not a regular file, empty.
	ErrImage = errors.New("bad image")
	// ErrTarget is wrapped by errors about the target: missing, not a block
	// device or regular file, too small.
	ErrTarget = errors.New("bad flash target")
)

// Progress reports how a write goes.
type Progress struct {
	Done, Total int64         // bytes
	Elapsed     time.Duration // since the write began
}

// Rate returns the average write rate so far in MB/s (10^6 bytes).
func (p Progress) Rate() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Done) / 1e6 / p.Elapsed.Seconds()
}

// Options tune [Write].
type Options struct {
	// Progress, when set, is called about every ProgressEvery bytes and once
	// at the end.
	Progress func(Progress)
	// ProgressEvery defaults to 64 MiB.
	ProgressEvery int64
	// BufferSize is the size of each read and write. Default 4 MiB.
	BufferSize int
}

// Report says what a successful [Write] did.
type Report struct {
	Image    string        // the image's path
	Format   Format        // the image's encoding
	Target   string        // the target's path
	Bytes    int64         // bytes written (the unpacked image)
	SHA256   string        // hex SHA-256 of the image file as given
	Duration time.Duration // from open to the end of the final sync
}

// MBps returns the write rate in MB/s (10^6 bytes), sync included.
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

// Write copies the image at imagePath onto target, unpacking it when it is
// compressed, and syncs it. It refuses, before writing anything, an image
// that [CheckImage] rejects and a target that is not a block device or
// regular file or is smaller than a raw image (a regular file target may grow
// only when it is empty); a compressed image that unpacks to more than the
// target holds fails before the first byte that would not fit. A corrupt or
// truncated compressed stream fails with the offset reached. When ctx ends it
// stops at the next buffer and reports how far it got; the target is then
// incomplete and must be written again.
func Write(ctx context.Context, imagePath, target string, o Options) (Report, error) {
	rep := Report{Image: imagePath, Target: target}
	size, err := CheckImage(imagePath)
	if err != nil {
		return rep, err
	}
	if o.BufferSize <= 0 {
		o.BufferSize = 4 << 20
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = 64 << 20
	}
	st, err := os.Stat(target)
	if err != nil {
		return rep, fmt.Errorf("%w: %s: %w", ErrTarget, target, err)
	}
	regular := st.Mode().IsRegular()
	if !regular && st.Mode()&fs.ModeDevice == 0 {
		return rep, fmt.Errorf("%w: %s is neither a block device nor a regular file (mode %s)", ErrTarget, target, st.Mode())
	}
	file, err := os.Open(imagePath)
	if err != nil {
		return rep, fmt.Errorf("%w: %w", ErrImage, err)
	}
	defer file.Close()
	h := sha256.New()
	src, format, closeSrc, err := decoder(io.TeeReader(file, h))
	if err != nil {
		return rep, fmt.Errorf("%w: %s: cannot read its header: %w", ErrImage, imagePath, err)
	}
	defer closeSrc()
	rep.Format = format
	dst, err := os.OpenFile(target, os.O_WRONLY, 0)
	if err != nil {
		return rep, fmt.Errorf("%w: open %s for writing: %w", ErrTarget, target, err)
	}
	defer dst.Close()
	capacity, err := dst.Seek(0, io.SeekEnd)
	if err != nil {
		return rep, fmt.Errorf("%w: size of %s: %w", ErrTarget, target, err)
	}
	growable := regular && capacity == 0
	if format == Raw && capacity < size && !growable {
		return rep, fmt.Errorf("%w: %s holds %d bytes, the image %s needs %d: use a bigger disk or a smaller image", ErrTarget, target, capacity, imagePath, size)
	}
	if _, err := dst.Seek(0, io.SeekStart); err != nil {
		return rep, fmt.Errorf("%w: %s: %w", ErrTarget, target, err)
	}

	start := time.Now()
	buf := make([]byte, o.BufferSize)
	nextReport := o.ProgressEvery
	report := func() {
		if o.Progress != nil {
			o.Progress(Progress{Done: rep.Bytes, Total: size, Elapsed: time.Since(start)})
		}
	}
	for {
		if err := ctx.Err(); err != nil {
			return rep, fmt.Errorf("flash %s to %s stopped after %d of %d bytes; the target is incomplete and must be flashed again: %w", imagePath, target, rep.Bytes, size, err)
		}
		n, rerr := fill(src, buf)
		if n > 0 {
			if !growable && rep.Bytes+int64(n) > capacity {
				return rep, fmt.Errorf("%w: the %s image %s unpacks to more than the %d bytes %s holds; stopped at offset %d, the target is incomplete: use a bigger disk or a smaller image", ErrTarget, describeFormat(format), imagePath, capacity, target, rep.Bytes)
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return rep, fmt.Errorf("%w: write %s at offset %d: %w", ErrTarget, target, rep.Bytes, err)
			}
			rep.Bytes += int64(n)
			if rep.Bytes >= nextReport {
				report()
				nextReport += o.ProgressEvery
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rep, fmt.Errorf("%w: %s: the %s stream is corrupt or truncated after %d bytes were written; the target is incomplete: %w", ErrImage, imagePath, describeFormat(format), rep.Bytes, rerr)
		}
	}
	if format == Raw && rep.Bytes != size {
		return rep, fmt.Errorf("%w: %s changed while it was flashed: read %d bytes, expected %d", ErrImage, imagePath, rep.Bytes, size)
	}
	// Hash what the decoder left unread (a compressed file's trailer).
	if _, err := io.Copy(h, file); err != nil {
		return rep, fmt.Errorf("%w: read %s: %w", ErrImage, imagePath, err)
	}
	if err := dst.Sync(); err != nil {
		return rep, fmt.Errorf("%w: sync %s: %w", ErrTarget, target, err)
	}
	if err := dst.Close(); err != nil {
		return rep, fmt.Errorf("%w: close %s: %w", ErrTarget, target, err)
	}
	rep.Duration = time.Since(start)
	rep.SHA256 = hex.EncodeToString(h.Sum(nil))
	report()
	return rep, nil
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
