package imagecache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
)

// MaxChunk is the most data one chunk of an upload carries (the proto's
// UploadChunk limit), and Chunks' default piece size.
const MaxChunk = 4 << 20

// Chunks reads the regular file f as it is on disk and calls fn for its
// data ranges, in ascending order, split into pieces of at most max bytes
// (MaxChunk when max <= 0). The data ranges are those SEEK_DATA and
// SEEK_HOLE report; where the file system (or the platform) cannot tell,
// the whole file is data. data is a reused buffer: fn must not keep it
// after it returns.
//
// In the same pass Chunks computes the SHA-256 of the whole file, its holes
// hashed as zeros, and returns it in hex with the file's size and the
// number of data bytes read (and passed to fn). It stops at ctx's end or
// fn's first error, and returns that error. It reads with ReadAt, yet moves
// f's offset (SEEK_DATA does).
//
// A client uploads a file with FileSHA256 first (the header needs the
// digest), then Chunks, sending each piece as an UploadChunk; the digest
// Chunks returns tells whether the file changed in between.
func Chunks(ctx context.Context, f *os.File, max int, fn func(off int64, data []byte) error) (sum string, size, dataBytes int64, err error) {
	if fn == nil {
		return "", 0, 0, errors.New("imagecache: chunks: fn is nil: use FileSHA256 to only hash")
	}
	return chunks(ctx, f, max, fn)
}

// Ranges is Chunks without the hash: for a sender whose receiver checks
// the digest itself (an exporter refuses an upload that does not match
// it), it saves a second pass of SHA-256 over the whole file, holes
// included.
func Ranges(ctx context.Context, f *os.File, max int, fn func(off int64, data []byte) error) (size, dataBytes int64, err error) {
	if fn == nil {
		return 0, 0, errors.New("imagecache: ranges: fn is nil")
	}
	_, size, dataBytes, err = scan(ctx, f, max, fn, false)
	return size, dataBytes, err
}

// FileSHA256 returns the hex SHA-256 of the regular file f as Chunks
// computes it (its data ranges read, its holes hashed as zeros), without
// calling anything for the data. It stops at ctx's end.
func FileSHA256(ctx context.Context, f *os.File) (string, error) {
	sum, _, _, err := chunks(ctx, f, MaxChunk, nil)
	return sum, err
}

// chunks is Chunks with fn optional.
func chunks(ctx context.Context, f *os.File, max int, fn func(off int64, data []byte) error) (sum string, size, dataBytes int64, err error) {
	return scan(ctx, f, max, fn, true)
}

// scan reads f's data ranges for fn, hashing the whole file when withSum.
func scan(ctx context.Context, f *os.File, max int, fn func(off int64, data []byte) error, withSum bool) (sum string, size, dataBytes int64, err error) {
	fi, err := f.Stat()
	if err != nil {
		return "", 0, 0, fmt.Errorf("imagecache: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", 0, 0, fmt.Errorf("imagecache: %s is not a regular file (%s): upload a file", f.Name(), fi.Mode().Type())
	}
	size = fi.Size()
	if max <= 0 {
		max = MaxChunk
	}
	buf := make([]byte, min(int64(max), max64(size, 1)))
	var h hash.Hash = discard{}
	if withSum {
		h = sha256.New()
	}
	var prev int64 // the end of what is hashed
	for prev < size {
		start, end, err := nextData(f, prev, size)
		if err != nil {
			return "", size, dataBytes, fmt.Errorf("imagecache: reading %s: %w", f.Name(), err)
		}
		hashZeros(h, start-prev)
		for pos := start; pos < end; {
			if err := ctx.Err(); err != nil {
				return "", size, dataBytes, err
			}
			n := min(int64(len(buf)), end-pos)
			p := buf[:n]
			if _, err := f.ReadAt(p, pos); err != nil {
				if errors.Is(err, io.EOF) {
					err = fmt.Errorf("it shrank below %d bytes while read: send it when nothing writes it", size)
				}
				return "", size, dataBytes, fmt.Errorf("imagecache: reading %s: %w", f.Name(), err)
			}
			h.Write(p)
			dataBytes += n
			if fn != nil {
				if err := fn(pos, p); err != nil {
					return "", size, dataBytes, err
				}
			}
			pos += n
		}
		prev = end
	}
	if err := ctx.Err(); err != nil {
		return "", size, dataBytes, err
	}
	if !withSum {
		return "", size, dataBytes, nil
	}
	return hex.EncodeToString(h.Sum(nil)), size, dataBytes, nil
}

// discard is a hash.Hash that computes nothing (a scan without the hash).
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
func (discard) Sum(b []byte) []byte         { return b }
func (discard) Reset()                      {}
func (discard) Size() int                   { return 0 }
func (discard) BlockSize() int              { return 1 << 20 }

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}
