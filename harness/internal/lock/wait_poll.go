//go:build darwin || dragonfly || freebsd || netbsd || openbsd

package lock

import "context"

// newWaiter returns a polling waiter: these systems have no inotify.
func newWaiter(_ context.Context, _, _ string, _ []string) waiter {
	return newPollWaiter()
}
