package imagecache

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"sync"
)

// Header describes the file an upload sends (the proto's UploadHeader).
type Header struct {
	// SHA256 is the SHA-256 of the whole file as it is on disk (its holes
	// read as zeros), 64 lower-case hex digits.
	SHA256 string
	// Size is the file's size in bytes, holes included.
	Size int64
	// Name is the file's base name, for messages only: the cache is keyed
	// by digest alone.
	Name string
}

// Result says what an upload did (the proto's UploadImageResponse).
type Result struct {
	// SHA256 is the digest the data hashed to (the header's).
	SHA256 string
	// Size is the file's size.
	Size int64
	// Name is the header's name.
	Name string
	// Received is how many bytes of data the chunks carried: the data
	// ranges of the file, not its holes.
	Received int64
	// AlreadyCached says the cache held the file before this upload
	// finished; the data sent were verified, then discarded.
	AlreadyCached bool
}

// Upload is one file being received into the cache, from Cache.Begin to
// Commit or Abort. Its methods are safe for concurrent use, though chunks
// only make sense sent in order by one sender.
//
// When the cache already holds the digest at Begin, the upload is
// verify-only: AlreadyCached reports it, the cached file is pinned until
// Commit or Abort, the chunks are hashed but not written, and Commit still
// refuses data that do not match the header (the proto's contract is that
// a mismatched upload is refused, cached or not). An exporter that prefers
// to answer at once and skip the bytes may call Abort and answer with
// AlreadyCached itself.
type Upload struct {
	c *Cache
	h Header

	mu       sync.Mutex
	f        *os.File // the temporary file; nil once closed, and for a verify-only upload
	release  func()   // a verify-only upload's pin on the cached file
	verify   bool     // verify-only: the cache held the digest at Begin
	hash     hash.Hash
	next     int64 // the end of the previous chunk
	received int64
	err      error // the first failure; every later call returns it
	finished bool  // Commit or Abort was called
}

// Begin starts an upload of the file h describes. The digest must be 64
// lower-case hex digits and the size between 0 and the cache's bound
// (ErrTooLarge beyond it): both errors wrap ErrInvalid. The caller must end
// every upload with Commit or Abort (Abort when the stream breaks or the
// client goes away), or its temporary file stays until the next Open.
func (c *Cache) Begin(h Header) (*Upload, error) {
	if !ValidSHA256(h.SHA256) {
		return nil, fmt.Errorf("imagecache: upload %q: %w: digest %q is not a SHA-256: send 64 lower-case hex digits", h.Name, ErrInvalid, h.SHA256)
	}
	if h.Size < 0 {
		return nil, fmt.Errorf("imagecache: upload %q: %w: negative size %d: send the file's size", h.Name, ErrInvalid, h.Size)
	}
	if h.Size > c.max {
		return nil, fmt.Errorf("imagecache: upload %q: %w: %d bytes, the cache holds at most %d: flash it from a smaller (compressed) file or give the exporter a larger cache", h.Name, ErrTooLarge, h.Size, c.max)
	}
	u := &Upload{c: c, h: h, hash: sha256.New()}
	if _, release, err := c.Acquire(h.SHA256); err == nil {
		u.verify, u.release = true, release
		return u, nil
	}
	f, err := os.CreateTemp(c.dir, tempPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("imagecache: upload %q: %w", h.Name, err)
	}
	u.f = f
	return u, nil
}

// Header returns the header the upload began with.
func (u *Upload) Header() Header { return u.h }

// AlreadyCached says the cache held the digest when the upload began: the
// upload only verifies the data (see Upload).
func (u *Upload) AlreadyCached() bool { return u.verify }

// WriteChunk takes data, the file's bytes at off. A chunk must start at or
// past the end of the previous one and end at or before the header's size;
// the bytes between chunks are zeros (left as holes in the cached file).
// data is not kept after WriteChunk returns. A chunk out of order or out of
// bounds fails with ErrInvalid; any failure ends the upload (its temporary
// file is removed, and Commit returns the same error).
func (u *Upload) WriteChunk(off int64, data []byte) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.usable(); err != nil {
		return err
	}
	n := int64(len(data))
	switch {
	case off < u.next:
		return u.fail(fmt.Errorf("imagecache: upload %q: %w: chunk at offset %d (%d bytes) starts before the end of the previous chunk at %d: send chunks in ascending, non-overlapping order", u.h.Name, ErrInvalid, off, n, u.next))
	case off > u.h.Size || n > u.h.Size-off:
		return u.fail(fmt.Errorf("imagecache: upload %q: %w: chunk at offset %d (%d bytes) ends at %d, past the header's size %d", u.h.Name, ErrInvalid, off, n, off+n, u.h.Size))
	}
	gap := off - u.next
	if u.f != nil && n >= parallelMin {
		// Hash while the write copies: both are done before returning.
		done := make(chan struct{})
		go func() {
			hashZeros(u.hash, gap)
			u.hash.Write(data)
			close(done)
		}()
		_, err := u.f.WriteAt(data, off)
		<-done
		if err != nil {
			return u.fail(fmt.Errorf("imagecache: upload %q: %w", u.h.Name, err))
		}
	} else {
		if u.f != nil && n > 0 {
			if _, err := u.f.WriteAt(data, off); err != nil {
				return u.fail(fmt.Errorf("imagecache: upload %q: %w", u.h.Name, err))
			}
		}
		hashZeros(u.hash, gap)
		u.hash.Write(data)
	}
	u.next = off + n
	u.received += n
	return nil
}

// Commit ends the upload: it checks that the data (the chunks, zeros
// between and after them up to the header's size) hash to the header's
// SHA-256, then syncs the file and renames it into the cache, where it is
// the most recently used file, and evicts least recently used ones until
// the cache fits its bound again. Data that do not match fail with
// ErrMismatch and nothing enters the cache. When the cache holds the
// digest by then (another upload of the same file finished first, or the
// upload was verify-only), the data are discarded and Result.AlreadyCached
// is set.
func (u *Upload) Commit() (Result, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.usable(); err != nil {
		return Result{}, err
	}
	u.finished = true
	hashZeros(u.hash, u.h.Size-u.next)
	got := hex.EncodeToString(u.hash.Sum(nil))
	if got != u.h.SHA256 {
		u.fail(fmt.Errorf("imagecache: upload %q: %w: the %d bytes (%d of them data) hash to %s, not the header's %s: send the file as it is on disk with its SHA-256 and size", u.h.Name, ErrMismatch, u.h.Size, u.received, got, u.h.SHA256))
		return Result{}, u.err
	}
	res := Result{SHA256: got, Size: u.h.Size, Name: u.h.Name, Received: u.received}
	if u.verify {
		u.cleanup()
		res.AlreadyCached = true
		return res, nil
	}
	f := u.f
	err := f.Truncate(u.h.Size) // the trailing hole
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		u.fail(fmt.Errorf("imagecache: upload %q: %w", u.h.Name, err))
		return Result{}, u.err
	}
	if err := f.Close(); err != nil {
		u.fail(fmt.Errorf("imagecache: upload %q: %w", u.h.Name, err))
		return Result{}, u.err
	}
	u.f = nil
	tmp := f.Name()

	c := u.c
	c.mu.Lock()
	if e, ok := c.entries[got]; ok {
		_ = os.Remove(tmp)
		c.touch(e)
		c.mu.Unlock()
		res.AlreadyCached = true
		return res, nil
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, got)); err != nil {
		c.mu.Unlock()
		_ = os.Remove(tmp)
		u.err = fmt.Errorf("imagecache: upload %q: %w", u.h.Name, err)
		return Result{}, u.err
	}
	c.trim(c.add(got, u.h.Size))
	c.mu.Unlock()
	// Best effort: without it a crash may forget the rename (and the
	// evictions), leaving the temporary file that Open removes: the cache
	// stays consistent either way.
	syncDir(c.dir)
	return res, nil
}

// Abort ends the upload without caching anything and removes its temporary
// file. It is idempotent, and does nothing after Commit.
func (u *Upload) Abort() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.finished = true
	u.cleanup()
}

// usable returns why the upload takes no more calls, or nil. u.mu is held.
func (u *Upload) usable() error {
	if u.err != nil {
		return u.err
	}
	if u.finished {
		return fmt.Errorf("imagecache: upload %q already committed or aborted: begin a new one", u.h.Name)
	}
	return nil
}

// fail records err as the upload's failure, releases what it holds and
// returns err. u.mu is held.
func (u *Upload) fail(err error) error {
	if u.err == nil {
		u.err = err
	}
	u.cleanup()
	return u.err
}

// cleanup removes the temporary file and releases the pin, once. u.mu is
// held.
func (u *Upload) cleanup() {
	if u.f != nil {
		_ = u.f.Close()
		_ = os.Remove(u.f.Name())
		u.f = nil
	}
	if u.release != nil {
		u.release()
		u.release = nil
	}
}

// parallelMin is the smallest chunk WriteChunk hashes while it writes.
const parallelMin = 256 << 10

// zeros is a shared buffer of zeros, never written, for hashing holes.
var zeros = make([]byte, 1<<20)

// hashZeros feeds n zero bytes to h.
func hashZeros(h hash.Hash, n int64) {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		h.Write(zeros[:k])
		n -= k
	}
}

// syncDir fsyncs a directory, so that a rename in it is durable.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}
