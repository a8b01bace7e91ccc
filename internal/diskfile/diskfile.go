// Package diskfile creates the disk files of virtual devices (the simulated
// DUT's and the QEMU virtual DUT's storage) safely when several processes
// discover the same devices at once.
package diskfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Ensure creates a sparse disk file of size bytes at path unless a file
// exists there. It never truncates an existing file: other processes may be
// using it. The file appears atomically, already at its full size; when
// another process creates it meanwhile, that one is kept.
func Ensure(path string, size int64) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("creating disk %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err != nil {
		return fmt.Errorf("creating disk %s: %w", path, err)
	}
	// Link fails if another process created the disk meanwhile: then its
	// disk is the one to use.
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("creating disk %s: %w", path, err)
	}
	return nil
}
