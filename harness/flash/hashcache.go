package flash

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/internal/atomicfile"
)

// sumCache remembers image SHA-256s by file identity; its zero value (no
// dir) remembers nothing.
type sumCache struct {
	dir  string
	racy time.Duration // see racyWindow
}

// racyWindow is how recent a file's last change may be for its hash to be
// remembered: file systems stamp times from a clock that may tick only
// every few milliseconds (and on older kernels every jiffy), so a file
// rewritten in place, same size, within one tick of the hash would keep its
// times. Tests set it to 0.
var racyWindow = 2 * time.Second

// racy says whether fi changed too recently for its times to prove that
// the bytes hashed are still the bytes there.
func racy(fi os.FileInfo, window time.Duration) bool {
	ct, ok := changeTime(fi)
	if !ok {
		ct = fi.ModTime()
	}
	return time.Since(ct) < window
}

// hashCacheMaxAge is how long an unused entry is kept.
const hashCacheMaxAge = 30 * 24 * time.Hour

func hashCache(o Options) sumCache {
	window := racyWindow
	if o.faults != nil && o.faults.racyWindow != nil {
		window = *o.faults.racyWindow
	}
	if o.NoHashCache {
		return sumCache{}
	}
	if o.HashCacheDir != "" {
		return sumCache{o.HashCacheDir, window}
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return sumCache{}
	}
	return sumCache{filepath.Join(dir, "jumpstarter-go", "image-sha256"), window}
}

// key names the entry of the open file f (stat fi): the same key means the
// same bytes, since every write changes the status-change time, which only
// the kernel sets, and a reused inode number has a new generation. It is ""
// when the file system does not say.
func (c sumCache) key(f *os.File, fi os.FileInfo) string {
	if c.dir == "" {
		return ""
	}
	return fileKey(f, fi)
}

// lookup returns the remembered hex SHA-256 of f (stat fi), or "".
func (c sumCache) lookup(f *os.File, fi os.FileInfo) string {
	k := c.key(f, fi)
	if k == "" {
		return ""
	}
	path := filepath.Join(c.dir, k)
	b, err := os.ReadFile(path)
	if err != nil || len(b) != 64 {
		return ""
	}
	if _, err := hex.DecodeString(string(b)); err != nil {
		return ""
	}
	now := time.Now()
	_ = os.Chtimes(path, now, now) // keep a used entry from being pruned
	return string(b)
}

// store remembers sum for f (stat fi) (atomically) and prunes entries unused for a
// month. Failures only cost a later recomputation.
func (c sumCache) store(f *os.File, fi os.FileInfo, sum string) {
	k := c.key(f, fi)
	if k == "" || len(sum) != 64 || racy(fi, c.racy) {
		return
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return
	}
	if atomicfile.WriteFile(filepath.Join(c.dir, k), []byte(sum), 0o644) != nil {
		return
	}
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > hashCacheMaxAge {
			_ = os.Remove(filepath.Join(c.dir, e.Name()))
		}
	}
}
