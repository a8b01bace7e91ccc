package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestQMPDeadlineIsTheContexts: a command whose write runs into the
// connection's write deadline, which is its context's, fails with an error
// wrapping context.DeadlineExceeded (found by drivertest: a PowerOn with a
// 5 ms deadline failed with a bare "i/o timeout" from QMP cont).
func TestQMPDeadlineIsTheContexts(t *testing.T) {
	s := newQMPServer(t, func(cmd string, args json.RawMessage, w func(string)) { w(`{"return": {}}`) })
	q, err := dialQMP(t, s, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	_, err = q.Execute(ctx, "cont", nil)
	require.Error(t, err)
	require.True(t, errors.Is(err, context.DeadlineExceeded), "%v", err)
}
