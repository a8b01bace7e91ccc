//go:build linux

package flash

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"
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

// dropCache asks the kernel to forget the cached pages of n bytes of f at
// off, so what is read next comes from the medium. The data must be synced
// first.
func dropCache(f *os.File, off, n int64) {
	const posixFadvDontneed = 4
	_, _, _ = syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), uintptr(off), uintptr(n), posixFadvDontneed, 0, 0)
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

// sameFile says whether two stats of one open file show no change between
// them: same size, modification and status-change times (the latter cannot
// be set back by a user).
func sameFile(a, b os.FileInfo) bool {
	sa, ok1 := a.Sys().(*syscall.Stat_t)
	sb, ok2 := b.Sys().(*syscall.Stat_t)
	if !ok1 || !ok2 {
		return a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
	}
	return sa.Size == sb.Size && sa.Mtim == sb.Mtim && sa.Ctim == sb.Ctim
}

// setPipeSize asks for a pipe buffer of n bytes (F_SETPIPE_SZ); the kernel
// may refuse, which only costs speed.
func setPipeSize(f *os.File, n int) {
	const fSetPipeSz = 1031
	_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, f.Fd(), fSetPipeSz, uintptr(n))
}

// fileKey names the content of the open file f (stat fi) for the hash
// cache: device, inode and its generation (which changes when the inode
// number is reused), size, modification and status-change times. It is ""
// when the file system cannot tell the generation: then nothing is cached.
func fileKey(f *os.File, fi os.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	const fsIocGetversion = 0x80087601 // _IOR('v', 1, long)
	var gen int64
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), fsIocGetversion, uintptr(unsafe.Pointer(&gen))); errno != 0 {
		return ""
	}
	return fmt.Sprintf("%x-%x-%x-%d-%d.%09d-%d.%09d", st.Dev, st.Ino, uint32(gen), st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
}

// changeTime returns a file's status-change time.
func changeTime(fi os.FileInfo) (time.Time, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(st.Ctim.Sec, st.Ctim.Nsec), true //nolint:unconvert
}
