//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package lock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// AcquireAll leases one key of every candidate set at once, all or none: a
// test that needs several devices (a client board and a server board) never
// holds some of them while it waits for the rest, so two tests that want the
// same devices in opposite orders cannot deadlock. A set's key is the first
// one, in its order, that is free, that no earlier set of this call took and
// that no older queued waiter wants. When some set cannot be served, every
// key taken for the others is given back and AcquireAll waits for a release,
// until ctx is done; then it returns a [*TimeoutError] over all the keys.
//
// Unlike [Acquire], AcquireAll queues no ticket of its own: it yields to the
// queued single-device waiters rather than jump ahead of them.
func AcquireAll(ctx context.Context, dir string, sets [][]string, who Holder) ([]*Lease, error) {
	if dir == "" {
		return nil, errors.New("lock: no lock directory")
	}
	if len(sets) == 0 {
		return nil, nil
	}
	keySets := make([][]string, len(sets))
	nameSets := make([][]string, len(sets))
	var allKeys, allNames []string
	for i, s := range sets {
		keys, names, err := cleanKeys(s)
		if err != nil {
			return nil, err
		}
		keySets[i], nameSets[i] = keys, names
		for j, n := range names {
			if !slices.Contains(allNames, n) {
				allNames = append(allNames, n)
				allKeys = append(allKeys, keys[j])
			}
		}
	}
	who = fillHolder(who)
	start := time.Now()
	qdir := filepath.Join(dir, queueDirName)
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	if err := ensureDir(qdir); err != nil {
		return nil, err
	}
	w := newWaiter(ctx, dir, qdir, allNames)
	defer w.close()

	// As in acquire, the lease files stay open for the whole wait, so that
	// tries make no close events that would wake the other waiters.
	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	for _, n := range allNames {
		f, err := openLeaseFile(leasePath(dir, n))
		if err != nil {
			return nil, err
		}
		files[n] = f
	}
	for {
		leases, err := tryAll(qdir, keySets, nameSets, files, who)
		if err != nil || leases != nil {
			return leases, err
		}
		if ctx.Err() != nil {
			break
		}
		w.wait(ctx)
	}
	te := &TimeoutError{Keys: allKeys, Holders: make([]Holder, len(allKeys)), Waited: time.Since(start), Err: ctx.Err(), free: make([]bool, len(allKeys))}
	for i, n := range allNames {
		h, held, err := readHolderFile(files[n])
		te.Holders[i] = h
		te.free[i] = err == nil && !held
	}
	return nil, te
}

// tryAll makes one all-or-nothing try: it locks one free file of every set,
// and unlocks them all again (keeping them open) when some set has none.
// On success it returns the leases, one per set, and takes their files out
// of files.
func tryAll(qdir string, keySets, nameSets [][]string, files map[string]*os.File, who Holder) ([]*Lease, error) {
	blocked, err := scanQueue(qdir, nil)
	if err != nil {
		return nil, err
	}
	taken := make([]string, len(nameSets)) // the file name each set locked
	undo := func() {
		for _, n := range taken {
			if n != "" {
				_ = unlockFile(files[n])
			}
		}
	}
	for i, names := range nameSets {
		for _, n := range names {
			if blocked[n] || slices.Contains(taken, n) {
				continue
			}
			f := files[n]
			ok, err := lockCandidate(&f)
			files[n] = f
			if err != nil {
				undo()
				return nil, err
			}
			if ok {
				taken[i] = n
				break
			}
		}
		if taken[i] == "" {
			undo()
			return nil, nil
		}
	}
	leases := make([]*Lease, 0, len(taken))
	for i, n := range taken {
		f := files[n]
		delete(files, n)
		l, err := newLease(f, keySets[i][slices.Index(nameSets[i], n)], who)
		if err != nil {
			for _, done := range leases {
				_ = done.Release()
			}
			for _, m := range taken[i+1:] {
				_ = unlockFile(files[m])
			}
			return nil, err
		}
		leases = append(leases, l)
	}
	return leases, nil
}
