// Package lock gives a test exclusive use of a device under test (DUT) across
// goroutines, test binaries and users of one lab host.
//
// # Leases
//
// A lease on a device is an advisory flock(2) lock (LOCK_EX) on the device's
// lock file <dir>/<name>.lock, where name is the device key with every
// character outside [A-Za-z0-9._-] replaced by '_': "sim/sim-0" becomes
// "sim_sim-0.lock". Keys that differ only in replaced characters ("a/b",
// "a:b", "a_b") therefore share one lease.
//
// The kernel drops a flock lock when the last descriptor of the open file
// description that holds it is closed, which happens however the process
// ends, SIGKILL and kernel OOM kills included. A lease therefore never
// outlives its holder and there are no stale locks to clean up. Lock files are
// never removed: unlinking a file that another process has opened but not yet
// locked would let two processes lock two different inodes under one name;
// do not remove them by hand while tests may run either.
// They are opened O_RDWR|O_CREATE|O_CLOEXEC with mode 0666 (so that every user
// of a lab host can lock them), in a directory that [Acquire] creates with mode
// 01777 when it is missing.
//
// Linux flock semantics that this package relies on: a lock belongs to the
// open file description, not to the process or the thread, so two goroutines
// of one process that each open the file exclude each other exactly as two
// processes do; descriptors are opened close-on-exec, so children started with
// os/exec do not inherit a lease; flock locks and fcntl (POSIX) record locks
// are independent of each other.
//
// While a lease is held its file holds the holder's [Holder] record as JSON;
// releasing the lease truncates the file to empty before unlocking it. Because
// a holder may die before it can truncate, the content is trusted only while
// the file is actually locked: [ReadHolder] probes with LOCK_SH|LOCK_NB on its
// own descriptor and, when the probe succeeds, reports the key as free whatever
// the file says.
//
// # Waiting
//
// [Acquire] takes the first free key among its candidates, or waits until one
// is free or its context ends. On Linux the wait is event driven: an inotify
// watch on the lock directory reports IN_CLOSE_WRITE when a holder closes its
// lock file, whether it released the lease or died (the kernel closes a dying
// process's descriptors), so a waiter wakes at once. The kernel may report the
// close a moment before it drops the lock, so after each event a waiter checks
// again a few times within about 100 ms, and it retries every second whatever
// happens as a safety net. If inotify is unavailable (for example because the
// per-user limit of inotify instances is reached) and on the other Unix
// systems, Acquire polls instead, every 10 ms at first and backing off to every
// 250 ms. Platforms without flock(2) (Windows, Plan 9, Solaris, AIX, WebAssembly)
// are not supported: Acquire and ReadHolder return an error wrapping
// [errors.ErrUnsupported].
//
// # Fairness
//
// Waiters are served in arrival order, across processes. A waiter that finds
// none of its keys free queues a ticket file in <dir>/queue/: the ticket is
// created under a temporary name, locked with flock(LOCK_EX), filled with JSON
// naming the waiter's arrival time, PID, keys and test, and then renamed to
// queue/<seq>-<pid>-<random>.ticket (the lock follows the inode through the
// rename). A waiter takes a free key only when no older live ticket wants that
// key. A ticket whose lock can be taken with LOCK_SH|LOCK_NB belongs to a
// process that died while waiting; it is ignored and removed by whoever finds
// it. A waiter removes its own ticket as soon as it holds a lease or gives up.
// An Acquire that finds a free key no earlier waiter wants takes it without a
// ticket.
//
// # Where the lock directory must live
//
// The lock directory must be on a local file system shared by everything that
// uses the devices. On NFS, Linux emulates flock with byte-range locks through
// the NFS lock manager, whose locks can outlive a crashed client until lease
// recovery and whose semantics differ from local flock, and inotify does not
// see changes made by other NFS clients; do not put the lock directory there.
// Containers and Kubernetes pods that share the devices of a host must mount
// the same host directory (a hostPath volume in Kubernetes) as their lock
// directory; pods on different nodes cannot share devices through this
// package. A PID recorded in a lease file is the holder's PID in its own PID
// namespace.
package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Holder describes who holds a lease. It is stored as JSON in the lease file.
type Holder struct {
	// Test is the name of the test that holds the lease (t.Name()).
	Test string `json:"test"`
	// PID is the holder's process ID.
	PID int `json:"pid"`
	// Host is the name of the host the holder runs on.
	Host string `json:"host"`
	// Since is when the lease was acquired.
	Since time.Time `json:"since"`
	// Command is the holder's command line.
	Command string `json:"command"`
}

// ErrTimeout is matched (with [errors.Is]) by every [*TimeoutError].
var ErrTimeout = errors.New("lock: timed out waiting for a device")

// ErrInvalidKey is returned (wrapped) when Acquire gets no key, or a key that
// cannot name a lock file: an empty key or one longer than 200 bytes.
var ErrInvalidKey = errors.New("lock: invalid device key")

// TimeoutError is returned by [Acquire] when its context ends before any of
// the candidate keys could be leased. It matches [ErrTimeout] and, through
// Unwrap, the context's error (context.DeadlineExceeded or context.Canceled).
type TimeoutError struct {
	// Keys are the candidate keys Acquire waited for.
	Keys []string
	// Holders[i] is who held Keys[i] when the wait ended, as read from its
	// lease file; the zero Holder when that could not be told.
	Holders []Holder
	// Waited is how long Acquire waited.
	Waited time.Duration
	// Err is the context's error.
	Err error

	// free[i] reports that Keys[i] was not held when the wait ended (it had
	// just been released, or older waiters were queued for it).
	free []bool
}

// Error names the holders of the keys in plain words, e.g. "waited 5s for
// sim-0: held by TestFoo (pid 1234 on host lab1) since
// 2026-11-30T08:00:00Z; raise DUT_ACQUIRE_TIMEOUT or wait for that test to
// finish".
func (e *TimeoutError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "waited %s for %s: ", roundWait(e.Waited), strings.Join(e.Keys, ", "))
	held, known := 0, 0
	for i, k := range e.Keys {
		if i > 0 {
			b.WriteString("; ")
		}
		if len(e.Keys) > 1 {
			b.WriteString(k + " ")
		}
		var h Holder
		if i < len(e.Holders) {
			h = e.Holders[i]
		}
		switch {
		case i < len(e.free) && e.free[i]:
			b.WriteString("was free when the wait ended, but earlier waiters were queued for it")
			continue
		case !identified(h):
			b.WriteString("held by an unknown process")
		default:
			b.WriteString("held by " + describe(h))
			known++
		}
		held++
	}
	who := "the earlier waiters"
	switch {
	case held == 1 && known == 1:
		who = "that test"
	case held > 1 && known == held:
		who = "those tests"
	case held == 1:
		who = "the holder"
	case held > 1:
		who = "the holders"
	}
	b.WriteString("; raise DUT_ACQUIRE_TIMEOUT or wait for " + who + " to finish")
	return b.String()
}

// Unwrap returns the context's error.
func (e *TimeoutError) Unwrap() error { return e.Err }

// Is reports whether target is [ErrTimeout].
func (e *TimeoutError) Is(target error) bool { return target == ErrTimeout }

// identified reports whether h says anything about who the holder is.
func identified(h Holder) bool {
	return h.Test != "" || h.PID != 0 || h.Command != ""
}

// describe names a holder, e.g. "TestFoo (pid 1234 on host lab1) since
// 2026-11-30T08:00:00Z".
func describe(h Holder) string {
	name := h.Test
	if args := strings.Fields(h.Command); name == "" && len(args) > 0 {
		name = filepath.Base(args[0])
	}
	var where []string
	if h.PID != 0 {
		where = append(where, fmt.Sprintf("pid %d", h.PID))
	}
	if h.Host != "" {
		where = append(where, "on host "+h.Host)
	}
	s := name
	switch {
	case name == "" && len(where) == 0:
		s = "an unnamed process"
	case name == "":
		s = "a process (" + strings.Join(where, " ") + ")"
	case len(where) > 0:
		s += " (" + strings.Join(where, " ") + ")"
	}
	if !h.Since.IsZero() {
		s += " since " + h.Since.UTC().Format(time.RFC3339)
	}
	return s
}

func roundWait(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// Lease is a held device lease. Its methods may be called from any goroutine.
type Lease struct {
	key    string
	path   string
	holder Holder

	mu sync.Mutex
	f  *os.File // nil once released
}

// Key returns the candidate key that was leased, as passed to [Acquire].
func (l *Lease) Key() string { return l.key }

// Holder returns the holder record written to the lease file.
func (l *Lease) Holder() Holder { return l.holder }

// Path returns the lease's lock file.
func (l *Lease) Path() string { return l.path }

// Release gives the lease up: it truncates the lock file to empty, unlocks it
// and closes it. Calling it again does nothing and returns nil. The lease is
// given up even when Release returns an error.
func (l *Lease) Release() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	var errs []error
	if err := f.Truncate(0); err != nil {
		errs = append(errs, fmt.Errorf("lock: clear holder of %s: %w", l.key, err))
	}
	if err := unlockFile(f); err != nil {
		errs = append(errs, fmt.Errorf("lock: unlock %s: %w", l.path, err))
	}
	if err := f.Close(); err != nil {
		errs = append(errs, fmt.Errorf("lock: close %s: %w", l.path, err))
	}
	return errors.Join(errs...)
}

// Acquire leases one of the candidate keys in dir: the first one, in the given
// order, that is free and that no earlier waiter is queued for. When none is,
// it waits until one is or until ctx is done; in the latter case it returns a
// [*TimeoutError] naming the current holders. It always tries at least once,
// so a free key is leased even with a context that is already done.
//
// Duplicate keys (after mapping to file names, see the package documentation)
// count once. dir and its queue subdirectory are created when missing.
//
// who is recorded in the lease file; Acquire fills in a zero PID, Host, Since
// and Command with the calling process's PID, the host name, the time the
// lease was acquired and the process's command line.
//
// The lease must be given up with [Lease.Release]; it is also given up when
// the process exits.
func Acquire(ctx context.Context, dir string, keys []string, who Holder) (*Lease, error) {
	if dir == "" {
		return nil, errors.New("lock: no lock directory")
	}
	keys, names, err := cleanKeys(keys)
	if err != nil {
		return nil, err
	}
	return acquire(ctx, dir, keys, names, fillHolder(who))
}

// fillHolder fills in who's zero PID, Host and Command from this process.
func fillHolder(who Holder) Holder {
	if who.PID == 0 {
		who.PID = os.Getpid()
	}
	if who.Host == "" {
		who.Host, _ = os.Hostname()
	}
	if who.Command == "" {
		who.Command = strings.Join(os.Args, " ")
	}
	return who
}

// ReadHolder reports whether key is leased in dir and, if so, by whom. A zero
// Holder with held true means the holder has not recorded (or recorded
// unreadable) metadata; it may have just acquired the lease. A key whose lock
// file does not exist is not held. When err is not nil, h and held tell
// nothing.
func ReadHolder(dir, key string) (h Holder, held bool, err error) {
	if err := checkKey(key); err != nil {
		return Holder{}, false, err
	}
	return readHolder(leasePath(dir, fileName(key)))
}

const (
	queueDirName = "queue"
	lockSuffix   = ".lock"
	maxKeyLen    = 200
)

// fileName maps a key to the base name of its lock file (without ".lock"):
// every character outside [A-Za-z0-9._-] becomes '_'.
func fileName(key string) string {
	var b strings.Builder
	b.Grow(len(key))
	for _, r := range key {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

func leasePath(dir, name string) string {
	return filepath.Join(dir, name+lockSuffix)
}

func checkKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("lock: empty key: %w", ErrInvalidKey)
	case len(key) > maxKeyLen:
		return fmt.Errorf("lock: key %.20q... is longer than %d bytes: %w", key, maxKeyLen, ErrInvalidKey)
	}
	return nil
}

// cleanKeys validates keys and drops those whose file name repeats an earlier
// one. It returns the remaining keys and their file names.
func cleanKeys(keys []string) ([]string, []string, error) {
	if len(keys) == 0 {
		return nil, nil, fmt.Errorf("lock: no candidate keys: %w", ErrInvalidKey)
	}
	var outKeys, outNames []string
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			return nil, nil, err
		}
		n := fileName(k)
		if seen[n] {
			continue
		}
		seen[n] = true
		outKeys = append(outKeys, k)
		outNames = append(outNames, n)
	}
	return outKeys, outNames, nil
}
