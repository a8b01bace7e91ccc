// Package imagecache is the exporter's cache of image files, kept by their
// SHA-256 and bounded in bytes, and the client's way of reading a file for
// an upload into it.
//
// An exporter (dut serve) answers FlashService.HasImage with [Cache.Has],
// receives FlashService.UploadImage with [Cache.Begin], [Upload.WriteChunk]
// and [Upload.Commit] (or [Upload.Abort] when the stream fails), and pins the
// file a flash reads with [Cache.Acquire]. A client hashes its file with
// [FileSHA256] and, when the exporter lacks it, sends it as it is on disk
// with [Chunks]: only the data ranges of a sparse file travel, and the
// exporter's copy is sparse where the client's was.
//
// The package knows nothing of protobuf: the exporter adapts its messages
// and maps the sentinel errors to codes ([ErrInvalid] and everything that
// wraps it to "invalid_argument", [ErrNotCached] likewise for a flash of a
// digest the cache lacks).
//
// # On disk
//
// The cache is one directory. Each cached file is named by its digest (64
// lower-case hex digits) and only ever appears there by an atomic rename of
// a fully written, fsynced and verified temporary file; an upload in
// progress is a dot-prefixed temporary file (".upload-*") in the same
// directory, which [Open] removes as what a crash left behind. Nothing else
// is kept: the index is rebuilt at Open from the files present (their sizes
// from stat, their order from their modification times: when they
// entered). Use ([Cache.Acquire], a repeated upload) orders them in memory
// only: a cached file is never changed, not even its modification time, so
// that a flash reading it sees it stay as it was.
//
// # Bounds
//
// The cache holds at most maxBytes of cached files: after each upload it
// evicts least recently used files until it fits. A file in use (pinned by
// Acquire until its release) is never evicted; when the pinned files alone
// exceed the bound the cache stays over it until the pins are released, and
// then trims. The file an upload has just stored is not evicted by that
// upload's own trim (the client is about to flash it). Uploads in progress
// are not counted: their temporary files take disk space beside the bound.
//
// # Concurrency
//
// All methods are safe for concurrent use. Uploads of different files run
// side by side; two uploads of the same file may too: the first to commit
// stores it, the others verify their data and report it already cached.
// One Cache owns its directory: two Caches (or processes) on one directory
// would remove each other's uploads at Open.
package imagecache

import (
	"container/list"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// The sentinel errors. Test for them with errors.Is.
var (
	// ErrInvalid marks a malformed request: a bad digest, a negative
	// size, chunks out of order or past the size, a digest or size that
	// does not match the data. The caller should fix what it sends.
	ErrInvalid = errors.New("invalid argument")
	// ErrMismatch marks an upload whose data do not hash to the header's
	// SHA-256 (or fill a different size). It wraps ErrInvalid.
	ErrMismatch = fmt.Errorf("%w: data do not match the header", ErrInvalid)
	// ErrTooLarge marks an upload of a file larger than the whole cache.
	// It wraps ErrInvalid.
	ErrTooLarge = fmt.Errorf("%w: too large for the cache", ErrInvalid)
	// ErrNotCached says the cache does not hold the digest asked for:
	// upload the file first.
	ErrNotCached = errors.New("image not cached")
)

// tempPrefix begins the name of an upload's temporary file.
const tempPrefix = ".upload-"

// Cache is a directory of image files named by their SHA-256, bounded in
// bytes. Its methods are safe for concurrent use.
type Cache struct {
	dir string
	max int64

	mu      sync.Mutex
	entries map[string]*entry
	lru     *list.List // of *entry, most recently used first
	total   int64      // bytes of all entries
}

// entry is one cached file.
type entry struct {
	sum  string
	size int64
	pins int
	elem *list.Element
}

// Open opens the cache in dir, bounded to maxBytes of cached files,
// creating dir when it does not exist. It removes the temporary files of
// uploads a crash interrupted, and indexes the files present whose names
// are SHA-256 digests (64 lower-case hex digits; other names and anything
// not a regular file are left alone and ignored). Files are not re-hashed:
// only this package writes such names, after verifying the data. When the
// files present exceed maxBytes, the least recently modified ones are
// evicted.
func Open(dir string, maxBytes int64) (*Cache, error) {
	if maxBytes < 0 {
		return nil, fmt.Errorf("imagecache: open %s: negative bound %d bytes: give the cache's size in bytes", dir, maxBytes)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("imagecache: open: %w", err)
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("imagecache: open: %w", err)
	}
	type found struct {
		sum   string
		size  int64
		mtime time.Time
	}
	var files []found
	for _, de := range des {
		name := de.Name()
		if strings.HasPrefix(name, tempPrefix) {
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("imagecache: open: removing an interrupted upload: %w", err)
			}
			continue
		}
		if !ValidSHA256(name) || !de.Type().IsRegular() {
			continue
		}
		fi, err := de.Info()
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("imagecache: open: %w", err)
		}
		files = append(files, found{name, fi.Size(), fi.ModTime()})
	}
	// Most recently modified first, as the LRU list runs.
	slices.SortFunc(files, func(a, b found) int {
		if c := b.mtime.Compare(a.mtime); c != 0 {
			return c
		}
		return strings.Compare(a.sum, b.sum)
	})
	c := &Cache{dir: dir, max: maxBytes, entries: make(map[string]*entry), lru: list.New()}
	for _, f := range files {
		e := &entry{sum: f.sum, size: f.size}
		e.elem = c.lru.PushBack(e)
		c.entries[f.sum] = e
		c.total += f.size
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.trim(nil)
	return c, nil
}

// Dir returns the cache's directory.
func (c *Cache) Dir() string { return c.dir }

// MaxBytes returns the cache's bound in bytes.
func (c *Cache) MaxBytes() int64 { return c.max }

// Has says whether the cache holds the file with this SHA-256 and its
// size. A malformed digest is simply not held. Has does not count as a use
// for the eviction order: a file Has reports may be evicted before it is
// acquired (a flash then fails with ErrNotCached and the client uploads).
func (c *Cache) Has(sum string) (size int64, ok bool) {
	if !ValidSHA256(sum) {
		return 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[sum]
	if !ok {
		return 0, false
	}
	return e.size, true
}

// Acquire returns the path of the cached file with this SHA-256 and pins it
// against eviction until release is called (release is idempotent; call it
// when the flash is done reading). It counts as a use for the eviction
// order. A digest the cache lacks fails with ErrNotCached, a malformed one
// with ErrInvalid.
func (c *Cache) Acquire(sum string) (path string, release func(), err error) {
	if !ValidSHA256(sum) {
		return "", nil, fmt.Errorf("imagecache: %w: digest %q is not a SHA-256 (64 lower-case hex digits)", ErrInvalid, sum)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[sum]
	path = filepath.Join(c.dir, sum)
	if ok {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			// Removed behind the cache's back: forget it.
			c.drop(e)
			ok = false
		}
	}
	if !ok {
		return "", nil, fmt.Errorf("imagecache: %s: %w: upload it first", sum, ErrNotCached)
	}
	c.touch(e)
	e.pins++
	var once sync.Once
	release = func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			e.pins--
			if e.pins == 0 {
				c.trim(nil)
			}
		})
	}
	return path, release, nil
}

// Len returns the number of cached files.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Bytes returns the total size of the cached files. It exceeds the bound
// only while pinned files keep it from trimming.
func (c *Cache) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// touch makes e the most recently used entry. c.mu is held. The order is
// kept in memory only: a cached file is never changed, not even its
// modification time, since a flash reading it checks that it stays as it
// was (and after a restart, Open orders the files by when they entered).
func (c *Cache) touch(e *entry) {
	c.lru.MoveToFront(e.elem)
}

// add indexes a file just renamed into place as the most recently used
// one. c.mu is held.
func (c *Cache) add(sum string, size int64) *entry {
	e := &entry{sum: sum, size: size}
	e.elem = c.lru.PushFront(e)
	c.entries[sum] = e
	c.total += size
	return e
}

// drop forgets e. c.mu is held.
func (c *Cache) drop(e *entry) {
	c.lru.Remove(e.elem)
	delete(c.entries, e.sum)
	c.total -= e.size
}

// trim evicts the least recently used unpinned entries, keep aside, until
// the cache fits its bound or only pinned entries (and keep) are left. The
// files are removed under c.mu, so that an upload of the same digest
// cannot rename its file into place between the index and the disk
// disagreeing. c.mu is held.
func (c *Cache) trim(keep *entry) {
	for el := c.lru.Back(); el != nil && c.total > c.max; {
		e := el.Value.(*entry)
		el = el.Prev()
		if e.pins > 0 || e == keep {
			continue
		}
		if err := os.Remove(filepath.Join(c.dir, e.sum)); err != nil && !errors.Is(err, os.ErrNotExist) {
			continue // kept on disk, so kept in the index; tried again next time
		}
		c.drop(e)
	}
}

// ValidSHA256 says whether s is a SHA-256 as the cache names files: 64
// lower-case hex digits.
func ValidSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if (ch < '0' || ch > '9') && (ch < 'a' || ch > 'f') {
			return false
		}
	}
	return true
}
