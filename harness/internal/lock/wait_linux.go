//go:build linux

package lock

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// defaultRetry is how long a Linux waiter waits without any event before it
// tries again anyway: a safety net for events it could not see.
const defaultRetry = time.Second

// retryOverride, when positive, replaces defaultRetry (in tests).
var retryOverride atomic.Int64

func retryInterval() time.Duration {
	if d := time.Duration(retryOverride.Load()); d > 0 {
		return d
	}
	return defaultRetry
}

// recheck are the delays of the extra tries after an event. The kernel
// reports the close of a dying holder's lock file before it drops the lock,
// so the try right after the event may still fail.
var recheck = [...]time.Duration{5 * time.Millisecond, 25 * time.Millisecond, 100 * time.Millisecond}

// watchMask selects the events that may mean a lease or a queue place was
// given up. A holder that dies closes its O_RDWR lock file, which the kernel
// reports as IN_CLOSE_WRITE.
const watchMask = syscall.IN_CLOSE_WRITE | syscall.IN_DELETE | syscall.IN_MOVED_TO |
	syscall.IN_CREATE | syscall.IN_ONLYDIR

// inotifyWaiter waits for inotify events on the lock and queue directories.
// Its descriptor is non-blocking and read through Go's poller, so a read is
// bounded by a deadline and cut short when the context ends.
type inotifyWaiter struct {
	f     *os.File
	stop  func() bool
	dirWD int32
	names map[string]bool // base names of the candidate lock files
	buf   []byte
	step  int         // next index into recheck; len(recheck) when none is due
	poll  *pollWaiter // non-nil once inotify failed: poll instead
}

// newWaiter returns an inotify waiter watching dir and qdir for changes to
// the lock files called names (without suffix) and to queue tickets. It falls
// back to polling when inotify cannot be used.
func newWaiter(ctx context.Context, dir, qdir string, names []string) waiter {
	w, err := newInotifyWaiter(ctx, dir, qdir, names)
	if err != nil {
		return newPollWaiter()
	}
	return w
}

func newInotifyWaiter(ctx context.Context, dir, qdir string, names []string) (*inotifyWaiter, error) {
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	if err := f.SetReadDeadline(time.Time{}); err != nil { // not pollable
		f.Close()
		return nil, err
	}
	dirWD, err := syscall.InotifyAddWatch(fd, dir, watchMask)
	if err == nil {
		_, err = syscall.InotifyAddWatch(fd, qdir, watchMask)
	}
	if err != nil {
		f.Close()
		return nil, os.NewSyscallError("inotify_add_watch", err)
	}
	w := &inotifyWaiter{
		f:     f,
		dirWD: int32(dirWD),
		names: make(map[string]bool, len(names)),
		buf:   make([]byte, 16<<10),
		step:  len(recheck),
	}
	for _, n := range names {
		w.names[n+lockSuffix] = true
	}
	// Cut a pending read short when ctx ends.
	w.stop = context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Unix(1, 0)) })
	return w, nil
}

func (w *inotifyWaiter) wait(ctx context.Context) {
	if w.poll != nil {
		w.poll.wait(ctx)
		return
	}
	d := retryInterval()
	if w.step < len(recheck) {
		d = recheck[w.step]
	}
	if err := w.f.SetReadDeadline(time.Now().Add(d)); err != nil {
		w.poll = newPollWaiter()
		return
	}
	if ctx.Err() != nil {
		return // ctx ended before the deadline above replaced the one it set
	}
	for {
		n, err := w.f.Read(w.buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			w.step = min(w.step+1, len(recheck))
			return
		}
		if err != nil {
			w.poll = newPollWaiter()
			return
		}
		if w.relevant(w.buf[:n]) {
			w.step = 0
			return
		}
	}
}

// relevant reports whether the events in buf concern a candidate lock file
// or a queue ticket.
func (w *inotifyWaiter) relevant(buf []byte) bool {
	rel := false
	for len(buf) >= syscall.SizeofInotifyEvent {
		wd := int32(binary.NativeEndian.Uint32(buf[0:4]))
		mask := binary.NativeEndian.Uint32(buf[4:8])
		end := syscall.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(buf[12:16]))
		if end > len(buf) {
			return true // cannot happen; be safe
		}
		name := strings.TrimRight(string(buf[syscall.SizeofInotifyEvent:end]), "\x00")
		buf = buf[end:]
		switch {
		case mask&syscall.IN_Q_OVERFLOW != 0:
			rel = true
		case mask&syscall.IN_IGNORED != 0:
			// A watched directory went away: events can no longer be
			// trusted to arrive.
			w.poll = newPollWaiter()
			rel = true
		case wd == w.dirWD:
			rel = rel || w.names[name]
		default:
			rel = rel || strings.HasSuffix(name, ticketSuffix)
		}
	}
	return rel
}

func (w *inotifyWaiter) close() {
	w.stop()
	w.f.Close()
}
