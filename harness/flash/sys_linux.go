//go:build linux

package flash

import (
	"errors"
	"os"
	"syscall"
)

// openDirect opens path with O_DIRECT added to flag, or returns nil when the
// file system refuses it (EINVAL: tmpfs, some FUSE and overlay mounts).
func openDirect(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_DIRECT, 0)
	if errors.Is(err, syscall.EINVAL) {
		return nil, nil
	}
	return f, err
}

// dropCache asks the kernel to forget the file's cached pages, so what is
// read next comes from the medium. The data must be synced first.
func dropCache(f *os.File) {
	const posixFadvDontneed = 4
	_, _, _ = syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, posixFadvDontneed, 0, 0)
}

// dataExtents returns the byte ranges of f that hold data, told by
// SEEK_DATA/SEEK_HOLE; ok is false when the file system cannot tell.
func dataExtents(f *os.File, size int64) (ext [][2]int64, ok bool) {
	const seekData, seekHole = 3, 4
	fd := int(f.Fd())
	var off int64
	for off < size {
		start, err := syscall.Seek(fd, off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			break // no data after off
		}
		if err != nil {
			return nil, false
		}
		end, err := syscall.Seek(fd, start, seekHole)
		if err != nil {
			return nil, false
		}
		end = min(end, size)
		if end <= start {
			break
		}
		ext = append(ext, [2]int64{start, end})
		off = end
	}
	if _, err := syscall.Seek(fd, 0, 0); err != nil {
		return nil, false
	}
	return ext, true
}

// devNumber returns a block device's major and minor numbers.
func devNumber(fi os.FileInfo) (major, minor uint32, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return 0, 0, false
	}
	rdev := uint64(st.Rdev) //nolint:unconvert // uint64 on some architectures only
	major = uint32((rdev>>8)&0xfff) | uint32((rdev>>32)&^0xfff)
	minor = uint32(rdev&0xff) | uint32((rdev>>12)&^0xff)
	return major, minor, true
}
