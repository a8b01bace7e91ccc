//go:build !linux

package imagecache

import "testing"

// allocated is only told on Linux.
func allocated(testing.TB, string) (int64, bool) { return 0, false }
