//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package lock

import (
	"context"
	"time"
)

// waiter blocks a waiting Acquire until trying again may succeed.
type waiter interface {
	// wait returns when a lease may have been released, after a while in
	// any case, or when ctx is done.
	wait(ctx context.Context)
	// close frees the waiter's resources.
	close()
}

// Polling intervals: the first wait is minPoll, each further one twice as
// long, up to maxPoll.
const (
	minPoll = 10 * time.Millisecond
	maxPoll = 250 * time.Millisecond
)

// pollWaiter waits by sleeping, with a backoff from minPoll to maxPoll.
type pollWaiter struct {
	next time.Duration
}

func newPollWaiter() *pollWaiter { return &pollWaiter{next: minPoll} }

func (p *pollWaiter) wait(ctx context.Context) {
	t := time.NewTimer(p.next)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	p.next = min(2*p.next, maxPoll)
}

func (p *pollWaiter) close() {}
