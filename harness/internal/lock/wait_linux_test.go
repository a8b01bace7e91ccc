package lock

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// waitReturns runs w.wait(ctx) in a goroutine; the function it returns
// reports whether that call returned within d.
// Events that happen after the call are not missed even if the goroutine has
// not started reading yet: the kernel queues them.
func waitReturns(ctx context.Context, w waiter, d time.Duration) (returned func() bool) {
	done := make(chan struct{})
	go func() {
		w.wait(ctx)
		close(done)
	}()
	return func() bool {
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
	returned := waitReturns(ctx, w, deadline)
	f, err := os.OpenFile(filepath.Join(dir, "sim_sim-0.lock"), os.O_RDWR|os.O_CREATE, 0o666)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.True(t, returned(), "closing the lock file did not wake the waiter")
	assert.Zero(t, iw.step, "an event schedules the quick rechecks")

	// The rechecks after the event time out on their own (a later event,
	// such as the close after the create, starts them over).
	for i := 0; iw.step < len(recheck); i++ {
		require.Less(t, i, 10, "rechecks do not end")
		returned = waitReturns(ctx, w, deadline)
		require.True(t, returned())
	}

	// A new ticket in the queue wakes it.
	returned = waitReturns(ctx, w, deadline)
	require.NoError(t, os.WriteFile(filepath.Join(qdir, "1-2-3"+ticketSuffix), nil, 0o644))
	require.True(t, returned(), "a queue change did not wake the waiter")
	assert.Nil(t, iw.poll, "inotify still in use")

	// Cancelling the context interrupts a wait at once.
	iw.step = len(recheck)
	returned = waitReturns(ctx, w, deadline)
	cancel()
	require.True(t, returned(), "cancelling did not interrupt the wait")
}

func TestIrrelevantEventsDoNotWake(t *testing.T) {
	w := &inotifyWaiter{dirWD: 1, names: map[string]bool{"a.lock": true}}
	ev := func(wd int32, mask uint32, name string) []byte {
		b := make([]byte, 16, 16+32)
		nameLen := (len(name)/16 + 1) * 16
		binary.NativeEndian.PutUint32(b[0:], uint32(wd))
		binary.NativeEndian.PutUint32(b[4:], mask)
		binary.NativeEndian.PutUint32(b[12:], uint32(nameLen))
		b = append(b, name...)
		return append(b, make([]byte, nameLen-len(name))...)
	}
	const closeWrite = syscall.IN_CLOSE_WRITE
	assert.False(t, w.relevant(ev(1, closeWrite, "b.lock")))
	assert.False(t, w.relevant(ev(2, closeWrite, ".tmp-1-2-3")))
	assert.True(t, w.relevant(ev(1, closeWrite, "a.lock")))
	assert.True(t, w.relevant(append(ev(1, closeWrite, "b.lock"), ev(2, closeWrite, "1-2-3.ticket")...)))
	assert.Nil(t, w.poll)
	assert.True(t, w.relevant(ev(2, syscall.IN_IGNORED, ""))) // IN_IGNORED: the queue dir went away
	assert.NotNil(t, w.poll, "falls back to polling once a watch is gone")
}
