package harness

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// defeatTestCache makes the go command refuse to cache this test binary's
// result, once a test has acquired a DUT: a hardware result must come from
// the hardware, whatever flags go test was given (only -count=1 turns the
// cache off by itself, and the cache cannot see an image changed in place
// outside the module, nor a board that died).
//
// How: go test records the files a test opens and, after the run, refuses to
// cache the result when one of them inside the module was modified less
// than 2 s ago (cmd/go's modTimeCutoff; a file modified "in the future" is
// always that new). Files outside the module are not looked at, so the
// harness opens a stamp file in $TMPDIR, dated far in the future, through a
// path that starts in the test's package folder and climbs out of it with
// "..": lexically inside the module, so the go command checks it, and always
// too new to cache. Outside go test (no -test.testlogfile) it does nothing.
// TestHardwareResultsAreNeverCached proves it against the real go command.
func defeatTestCache() { defeatOnce.Do(openNoCacheStamp) }

var defeatOnce sync.Once

// noCacheStampAge is how far in the future the stamp is dated.
const noCacheStampAge = 100 * 365 * 24 * time.Hour

func openNoCacheStamp() {
	if f := flag.Lookup("test.testlogfile"); f == nil || f.Value.String() == "" {
		return
	}
	dir := filepath.Join(os.TempDir(), "jumpstarter-go")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	stamp := filepath.Join(dir, "never-cache-hardware-results")
	if f, err := os.OpenFile(stamp, os.O_CREATE|os.O_WRONLY, 0o666); err == nil {
		_ = f.Close()
	}
	future := time.Now().Add(noCacheStampAge)
	_ = os.Chtimes(stamp, future, future)
	wd, err := os.Getwd()
	if err != nil {
		return
	}
	if f, err := os.Open(climbTo(wd, stamp)); err == nil {
		_ = f.Close()
	}
}

// climbTo returns a path to target that starts with from and climbs out of
// it to the root with "..": "/a/b" and "/tmp/x" give "/a/b/../../tmp/x".
// It is not cleaned: the go command must see it start with from.
func climbTo(from, target string) string {
	from = filepath.Clean(from)
	depth := strings.Count(from, string(filepath.Separator))
	if from == string(filepath.Separator) {
		depth = 0
	}
	return from + strings.Repeat(string(filepath.Separator)+"..", depth) + target
}
