package lock

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// waitReturns runs w.wait(ctx) and reports whether it returned within d.
func waitReturns(w waiter, ctx context.Context, d time.Duration) (started chan struct{}, returned func() bool) {
	started = make(chan struct{})
	done := make(chan struct{})
	go func() {
		close(started)
		w.wait(ctx)
		close(done)
	}()
	return started, func() bool {
		select {
		case <-done:
			return true
		case <-time.After(d):
			return false
		}
	}
}

func TestInotifyWaiter(t *testing.T) {
	retryOverride.Store(int64(time.Minute)) // only events can wake the waiter
	t.Cleanup(func() { retryOverride.Store(0) })

	dir := t.TempDir()
	qdir := filepath.Join(dir, queueDirName)
	require.NoError(t, os.Mkdir(qdir, 0o777))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newWaiter(ctx, dir, qdir, []string{"sim_sim-0"})
	defer w.close()
	iw, ok := w.(*inotifyWaiter)
	require.True(t, ok, "Linux waits with inotify, got %T", w)

	// An unrelated file changing is not a reason to wake up; the candidate's
	// lock file being closed after writing is.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "other.lock"), nil, 0o666))
	started, returned := waitReturns(w, ctx, deadline)
	<-started
	f, err := os.OpenFile(filepath.Join(dir, "sim_sim-0.lock"), os.O_RDWR|os.O_CREATE, 0o666)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.True(t, returned(), "closing the lock file did not wake the waiter")
	assert.Zero(t, iw.step, "an event schedules the quick rechecks")

	// The rechecks after the event time out on their own.
	for range recheck {
		_, returned = waitReturns(w, ctx, deadline)
		require.True(t, returned())
	}
	assert.Equal(t, len(recheck), iw.step)

	// A new ticket in the queue wakes it.
	_, returned = waitReturns(w, ctx, deadline)
	require.NoError(t, os.WriteFile(filepath.Join(qdir, "1-2-3"+ticketSuffix), nil, 0o644))
	require.True(t, returned(), "a queue change did not wake the waiter")
	assert.Nil(t, iw.poll, "inotify still in use")

	// Cancelling the context interrupts a wait at once.
	iw.step = len(recheck)
	_, returned = waitReturns(w, ctx, deadline)
	cancel()
	require.True(t, returned(), "cancelling did not interrupt the wait")
}

func TestIrrelevantEventsDoNotWake(t *testing.T) {
	w := &inotifyWaiter{dirWD: 1, names: map[string]bool{"a.lock": true}}
	ev := func(wd int32, mask uint32, name string) []byte {
		b := make([]byte, 16, 16+32)
		nameLen := (len(name)/16 + 1) * 16
		putU32 := func(off int, v uint32) {
			b[off], b[off+1], b[off+2], b[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
		}
		putU32(0, uint32(wd))
		putU32(4, mask)
		putU32(12, uint32(nameLen))
		b = append(b, name...)
		return append(b, make([]byte, nameLen-len(name))...)
	}
	const closeWrite = 0x8
	assert.False(t, w.relevant(ev(1, closeWrite, "b.lock")))
	assert.False(t, w.relevant(ev(2, closeWrite, ".tmp-1-2-3")))
	assert.True(t, w.relevant(ev(1, closeWrite, "a.lock")))
	assert.True(t, w.relevant(append(ev(1, closeWrite, "b.lock"), ev(2, closeWrite, "1-2-3.ticket")...)))
	assert.Nil(t, w.poll)
	assert.True(t, w.relevant(ev(2, 0x8000, ""))) // IN_IGNORED: the queue dir went away
	assert.NotNil(t, w.poll, "falls back to polling once a watch is gone")
}
