//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package lock

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	ticketSuffix = ".ticket"
	tmpPrefix    = ".tmp-"
	// staleTmpAge is how old an unlocked temporary ticket must be before it
	// is removed. A live waiter locks its temporary ticket right after
	// creating it; an old unlocked one was left by a waiter that died
	// between creating and renaming it.
	staleTmpAge = time.Minute
	// maxMetadata bounds how much of a lease file or ticket is read.
	maxMetadata = 64 << 10
)

// acquire implements Acquire on systems with flock(2).
func acquire(ctx context.Context, dir string, keys, names []string, who Holder) (*Lease, error) {
	start := time.Now()
	qdir := filepath.Join(dir, queueDirName)
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	if err := ensureDir(qdir); err != nil {
		return nil, err
	}

	// Watch before the first try, so that no release between a failed try
	// and the wait goes unnoticed.
	w := newWaiter(ctx, dir, qdir, names)
	defer w.close()

	// The lease files stay open for the whole wait and are only tried with
	// LOCK_NB, so waiting produces no close events that would wake the
	// other waiters.
	files := make([]*os.File, len(names))
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	for i, n := range names {
		f, err := openLeaseFile(leasePath(dir, n))
		if err != nil {
			return nil, err
		}
		files[i] = f
	}

	var tk *ticket // nil until this call has to queue
	defer func() { tk.remove() }()
	for {
		blocked, err := scanQueue(qdir, tk)
		if err != nil {
			return nil, err
		}
		for i := range files {
			if blocked[names[i]] {
				continue
			}
			ok, err := lockCandidate(&files[i])
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			f := files[i]
			files[i] = nil
			l, err := newLease(f, keys[i], who)
			if err != nil {
				return nil, err
			}
			// Leave the queue before the other lease files are closed, so
			// that the waiters their close wakes no longer see this ticket.
			tk.remove()
			tk = nil
			return l, nil
		}
		if ctx.Err() != nil {
			break
		}
		if tk == nil {
			if tk, err = newTicket(qdir, keys, who.Test); err != nil {
				return nil, err
			}
			continue // try again as a queued waiter before sleeping
		}
		w.wait(ctx)
	}

	te := &TimeoutError{
		Keys:    keys,
		Holders: make([]Holder, len(keys)),
		Waited:  time.Since(start),
		Err:     ctx.Err(),
		free:    make([]bool, len(keys)),
	}
	for i, f := range files {
		h, held, err := readHolderFile(f)
		te.Holders[i] = h
		te.free[i] = err == nil && !held
	}
	return nil, te
}

// lockCandidate tries to lock the lease file *fp without blocking. Should the
// file have been removed or replaced behind this package's back, it switches
// *fp to the file now at that path, so that everybody locks the same inode.
func lockCandidate(fp **os.File) (bool, error) {
	for {
		f := *fp
		ok, err := tryLock(f)
		if err != nil {
			return false, fmt.Errorf("lock: lock %s: %w", f.Name(), err)
		}
		if !ok {
			return false, nil
		}
		cur, err1 := os.Stat(f.Name())
		fi, err2 := f.Stat()
		if err1 == nil && err2 == nil && os.SameFile(cur, fi) {
			return true, nil
		}
		_ = unlockFile(f)
		f.Close()
		*fp = nil
		if *fp, err = openLeaseFile(f.Name()); err != nil {
			return false, err
		}
	}
}

// newLease turns f, just locked, into a lease: it records who in the file.
// On failure it unlocks f and closes it.
func newLease(f *os.File, key string, who Holder) (*Lease, error) {
	if who.Since.IsZero() {
		who.Since = time.Now().UTC()
	}
	l := &Lease{key: key, path: f.Name(), holder: who, f: f}
	data, err := json.Marshal(who)
	if err == nil {
		data = append(data, '\n')
		if err = f.Truncate(0); err == nil {
			_, err = f.WriteAt(data, 0)
		}
	}
	if err != nil {
		err = fmt.Errorf("lock: record holder in %s: %w", f.Name(), err)
		return nil, errors.Join(err, l.Release())
	}
	return l, nil
}

// ensureDir creates dir with mode 01777 when it is missing. Failing to set
// the mode is tolerated: the directory may belong to someone else.
func ensureDir(dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("lock: %s is not a directory", dir)
		}
		return nil
	}
	if err := os.MkdirAll(dir, 0o777|os.ModeSticky); err != nil {
		return fmt.Errorf("lock: create lock directory: %w", err)
	}
	_ = os.Chmod(dir, 0o777|os.ModeSticky) // undo the umask; may belong to another user
	return nil
}

// openLeaseFile opens (creating if needed) a lease file for reading and
// writing. A file it creates gets mode 0666 whatever the umask, so that other
// users of the host can lock it too.
func openLeaseFile(path string) (*os.File, error) {
	const flags = os.O_RDWR | syscall.O_CLOEXEC
	f, err := os.OpenFile(path, flags|os.O_CREATE|os.O_EXCL, 0o666)
	if err == nil {
		_ = f.Chmod(0o666)
		return f, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("lock: open lease file: %w", err)
	}
	f, err = os.OpenFile(path, flags|os.O_CREATE, 0o666)
	if err != nil {
		return nil, fmt.Errorf("lock: open lease file: %w", err)
	}
	return f, nil
}

// flock applies flock(2) to f, retrying when interrupted.
func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = syscall.Flock(int(fd), how)
			if ferr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return ferr
}

// tryLock tries to lock f exclusively without blocking. It reports false
// when someone else holds a lock on the file.
func tryLock(f *os.File) (bool, error) {
	err := flock(f, syscall.LOCK_EX|syscall.LOCK_NB)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, syscall.EWOULDBLOCK):
		return false, nil
	default:
		return false, err
	}
}

// probeFree reports whether nobody holds an exclusive lock on f, by taking
// and dropping a shared lock.
func probeFree(f *os.File) (bool, error) {
	err := flock(f, syscall.LOCK_SH|syscall.LOCK_NB)
	switch {
	case err == nil:
		return true, flock(f, syscall.LOCK_UN)
	case errors.Is(err, syscall.EWOULDBLOCK):
		return false, nil
	default:
		return false, err
	}
}

func unlockFile(f *os.File) error {
	return flock(f, syscall.LOCK_UN)
}

// readHolder implements ReadHolder.
func readHolder(path string) (Holder, bool, error) {
	// Open for writing when allowed: if the probe below makes someone's
	// try-lock fail, the close then wakes them (IN_CLOSE_WRITE).
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_CLOEXEC, 0)
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		f, err = os.OpenFile(path, os.O_RDONLY|syscall.O_CLOEXEC, 0)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return Holder{}, false, nil
	}
	if err != nil {
		return Holder{}, false, fmt.Errorf("lock: open lease file: %w", err)
	}
	defer f.Close()
	return readHolderFile(f)
}

// readHolderFile reads the holder recorded in the lease file f, which the
// caller does not hold. The record counts only while someone holds the lock.
func readHolderFile(f *os.File) (Holder, bool, error) {
	free, err := probeFree(f)
	if err != nil {
		return Holder{}, false, fmt.Errorf("lock: probe %s: %w", f.Name(), err)
	}
	if free {
		return Holder{}, false, nil
	}
	data, err := io.ReadAll(io.NewSectionReader(f, 0, maxMetadata))
	if err != nil {
		return Holder{}, true, fmt.Errorf("lock: read holder from %s: %w", f.Name(), err)
	}
	var h Holder
	if len(bytes.TrimSpace(data)) == 0 || json.Unmarshal(data, &h) != nil {
		// Just acquired and not yet recorded, or not written by us.
		return Holder{}, true, nil
	}
	return h, true, nil
}

// ticket is this process's place in the queue of waiters. Its file stays
// open and locked until the ticket is removed.
type ticket struct {
	name string // base name in the queue directory
	path string
	seq  int64
	f    *os.File
}

// ticketData is the JSON content of a ticket.
type ticketData struct {
	Seq  int64    `json:"seq"`
	PID  int      `json:"pid"`
	Keys []string `json:"keys"`
	Test string   `json:"test,omitempty"`
}

// lastSeq makes the sequence numbers of one process strictly increasing even
// when the clock does not move between two calls.
var lastSeq atomic.Int64

func nextSeq() int64 {
	for {
		last := lastSeq.Load()
		seq := time.Now().UnixNano()
		if seq <= last {
			seq = last + 1
		}
		if lastSeq.CompareAndSwap(last, seq) {
			return seq
		}
	}
}

// newTicket queues a ticket for keys in qdir.
func newTicket(qdir string, keys []string, test string) (*ticket, error) {
	pid := os.Getpid()
	for attempt := 0; ; attempt++ {
		var rnd [6]byte
		_, _ = rand.Read(rnd[:]) // never fails
		seq := nextSeq()
		base := fmt.Sprintf("%d-%d-%s", seq, pid, hex.EncodeToString(rnd[:]))
		tmp := filepath.Join(qdir, tmpPrefix+base)
		f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_CLOEXEC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("lock: create queue ticket: %w", err)
		}
		// Readable by every user whatever the umask: other users' waiters
		// must see where this one stands.
		_ = f.Chmod(0o644)
		data, err := json.Marshal(ticketData{Seq: seq, PID: pid, Keys: keys, Test: test})
		if err == nil {
			if err = flock(f, syscall.LOCK_EX); err == nil {
				_, err = f.Write(data)
			}
		}
		if err != nil {
			f.Close()
			os.Remove(tmp)
			return nil, fmt.Errorf("lock: write queue ticket %s: %w", tmp, err)
		}
		name := base + ticketSuffix
		path := filepath.Join(qdir, name)
		if err := os.Rename(tmp, path); err != nil {
			f.Close()
			if errors.Is(err, fs.ErrNotExist) && attempt < 3 {
				continue // removed as stale by someone else: try a new one
			}
			os.Remove(tmp)
			return nil, fmt.Errorf("lock: queue ticket: %w", err)
		}
		return &ticket{name: name, path: path, seq: seq, f: f}, nil
	}
}

// remove leaves the queue. Failing to remove the file is harmless: once its
// descriptor is closed the ticket is stale and others ignore and remove it.
func (t *ticket) remove() {
	if t == nil || t.f == nil {
		return
	}
	os.Remove(t.path)
	t.f.Close()
	t.f = nil
}

// olderThan reports whether the ticket (seq, name) arrived before t.
func (t *ticket) olderThan(seq int64, name string) bool {
	return seq < t.seq || seq == t.seq && name < t.name
}

// ticketSeq parses the sequence number from a ticket's name.
func ticketSeq(name string) (int64, bool) {
	s, _, ok := strings.Cut(name, "-")
	if !ok {
		return 0, false
	}
	seq, err := strconv.ParseInt(s, 10, 64)
	return seq, err == nil
}

// scanQueue returns the lease file names wanted by live tickets older than
// own (by all live tickets when own is nil). It removes the stale tickets it
// comes across.
func scanQueue(qdir string, own *ticket) (map[string]bool, error) {
	entries, err := os.ReadDir(qdir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lock: read queue: %w", err)
	}
	var blocked map[string]bool
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(qdir, name)
		if strings.HasPrefix(name, tmpPrefix) {
			removeStaleTmp(path)
			continue
		}
		if !strings.HasSuffix(name, ticketSuffix) || own != nil && name == own.name {
			continue
		}
		seq, ok := ticketSeq(name)
		if !ok || own != nil && !own.olderThan(seq, name) {
			continue
		}
		td, live, err := readTicket(path)
		if err != nil {
			return nil, err
		}
		if !live {
			continue
		}
		if blocked == nil {
			blocked = make(map[string]bool)
		}
		for _, k := range td.Keys {
			blocked[fileName(k)] = true
		}
	}
	return blocked, nil
}

// readTicket reads a ticket and reports whether its waiter is alive, removing
// it if not.
func readTicket(path string) (ticketData, bool, error) {
	// Read-only: closing it must not look like a lease file being released.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_CLOEXEC, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return ticketData{}, false, nil // its waiter is done
	}
	if errors.Is(err, fs.ErrPermission) {
		return ticketData{}, false, nil // unreadable: cannot tell what it wants
	}
	if err != nil {
		return ticketData{}, false, fmt.Errorf("lock: open queue ticket: %w", err)
	}
	defer f.Close()
	free, err := probeFree(f)
	if err != nil {
		return ticketData{}, false, fmt.Errorf("lock: probe queue ticket %s: %w", path, err)
	}
	if free {
		// Its waiter died. Removing it may fail (another user's ticket in a
		// sticky directory), which is fine: it is ignored either way.
		os.Remove(path)
		return ticketData{}, false, nil
	}
	data, err := io.ReadAll(io.LimitReader(f, maxMetadata))
	if err != nil {
		return ticketData{}, false, fmt.Errorf("lock: read queue ticket %s: %w", path, err)
	}
	var td ticketData
	if err := json.Unmarshal(data, &td); err != nil {
		return ticketData{}, true, nil // not ours; it wants nothing we know of
	}
	return td, true, nil
}

// removeStaleTmp removes a temporary ticket left by a waiter that died before
// renaming it.
func removeStaleTmp(path string) {
	fi, err := os.Stat(path)
	if err != nil || time.Since(fi.ModTime()) < staleTmpAge {
		return
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer f.Close()
	if free, err := probeFree(f); err == nil && free {
		os.Remove(path)
	}
}
