//go:build !linux

package flash

import (
	"os"
	"time"
)

func openDirect(string, int) (*os.File, error) { return nil, nil }

func dropCache(*os.File, int64, int64) {}

func dataExtents(*os.File, int64) ([][2]int64, bool) { return nil, false }

func devNumber(os.FileInfo) (major, minor uint32, ok bool) { return 0, 0, false }

func sameFile(a, b os.FileInfo) bool {
	return a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

func setPipeSize(*os.File, int) {}

func fileKey(*os.File, os.FileInfo) string { return "" }

func changeTime(os.FileInfo) (time.Time, bool) { return time.Time{}, false }

const (
	zeroPunch zeroMethod = iota
	zeroZeroRange
	zeroBlk
	zeroWrite
)

func deviceZero(*os.File, zeroMethod, int64, int64) error { return errZeroUnsupported }

func dataIn(*os.File, int64, int64) ([][2]int64, bool) { return nil, false }

func yieldThread() {}
