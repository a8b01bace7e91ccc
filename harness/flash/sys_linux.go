//go:build linux

package flash

import (
	"errors"
	"fmt"
	"os"
	"runtime"
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

// How a range of the target is made to read as zeros, in order of
// preference: the first three are the device's (or file system's) own
// guarantee and move no data; zeroWrite writes zeros.
const (
	zeroPunch     zeroMethod = iota // fallocate(PUNCH_HOLE|KEEP_SIZE): a regular file
	zeroZeroRange                   // fallocate(ZERO_RANGE|KEEP_SIZE): a regular file
	zeroBlk                         // ioctl(BLKZEROOUT): a block device
	zeroWrite                       // write zeros
)

// deviceZero makes n bytes of f at off read as zeros with method m (not
// zeroWrite). It returns errZeroUnsupported when the file system or device
// does not offer m, so that the caller can try the next one.
func deviceZero(f *os.File, m zeroMethod, off, n int64) error {
	const (
		fallocKeepSize  = 0x01
		fallocPunchHole = 0x02
		fallocZeroRange = 0x10
		blkZeroOut      = 0x127f // _IO(0x12, 127)
	)
	var err error
	switch m {
	case zeroPunch:
		err = syscall.Fallocate(int(f.Fd()), fallocPunchHole|fallocKeepSize, off, n)
	case zeroZeroRange:
		err = syscall.Fallocate(int(f.Fd()), fallocZeroRange|fallocKeepSize, off, n)
	case zeroBlk:
		// BLKZEROOUT reads back as zeros by contract (the kernel writes
		// zeros itself where the device has no WRITE ZEROES), unlike
		// BLKDISCARD; it also drops the range from the page cache.
		r := [2]uint64{uint64(off), uint64(n)}
		if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), blkZeroOut, uintptr(unsafe.Pointer(&r))); errno != 0 {
			err = errno
		}
	default:
		return errZeroUnsupported
	}
	if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.ENOTTY) || errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("%w: %w", errZeroUnsupported, err)
	}
	return err
}

// dataIn returns the parts of [start, end) of f that hold data, told by
// SEEK_DATA/SEEK_HOLE: a hole of a regular file reads as zeros by the file
// system's guarantee. A block device (or a file system that cannot tell)
// reports everything as data. ok is false when the question failed.
func dataIn(f *os.File, start, end int64) (parts [][2]int64, ok bool) {
	const seekData, seekHole = 3, 4
	fd := int(f.Fd())
	for off := start; off < end; {
		d, err := syscall.Seek(fd, off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			break // no data after off (or off is past the end)
		}
		if err != nil {
			return nil, false
		}
		if d >= end {
			break
		}
		h, err := syscall.Seek(fd, d, seekHole)
		if err != nil {
			return nil, false
		}
		h = min(h, end)
		if h <= d {
			return nil, false
		}
		parts = append(parts, [2]int64{d, h})
		off = h
	}
	return parts, true
}

// yieldThread makes the calling goroutine's OS thread the lowest-priority
// one of the process (nice 19): a deferred hash then uses the CPU time the
// write leaves idle and never delays it. The goroutine stays on this thread
// (LockOSThread) so that the priority follows it, and the thread ends with
// the goroutine.
func yieldThread() {
	runtime.LockOSThread()
	_ = syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), 19)
}
