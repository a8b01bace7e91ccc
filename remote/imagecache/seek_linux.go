package imagecache

import (
	"errors"
	"os"
	"syscall"
)

// nextData returns the first data range of f at or past off, cut at size:
// [size, size) when there is none. Where the file system cannot tell, the
// rest of the file is data.
func nextData(f *os.File, off, size int64) (start, end int64, err error) {
	const seekData, seekHole = 3, 4
	d, err := f.Seek(off, seekData)
	switch {
	case errors.Is(err, syscall.ENXIO):
		return size, size, nil // no data past off
	case unsupported(err):
		return off, size, nil
	case err != nil:
		return 0, 0, err
	case d >= size:
		return size, size, nil
	case d < off:
		return off, size, nil // not what SEEK_DATA promises: read it all
	}
	h, err := f.Seek(d, seekHole)
	switch {
	case unsupported(err):
		return d, size, nil
	case err != nil:
		return 0, 0, err
	case h <= d:
		return d, size, nil
	}
	return d, min(h, size), nil
}

// unsupported says err is a file system's way of not knowing holes.
func unsupported(err error) bool {
	return errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOTSUP)
}
