//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
)

func unsupported() error {
	return fmt.Errorf("lock: device leases need flock(2), which %s lacks: %w", runtime.GOOS, errors.ErrUnsupported)
}

func acquire(context.Context, string, []string, []string, Holder) (*Lease, error) {
	return nil, unsupported()
}

func readHolder(string) (Holder, bool, error) {
	return Holder{}, false, unsupported()
}

func unlockFile(*os.File) error {
	return unsupported()
}

// AcquireAll is not supported here.
func AcquireAll(context.Context, string, [][]string, Holder) ([]*Lease, error) {
	return nil, unsupported()
}
