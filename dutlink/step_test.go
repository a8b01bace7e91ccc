package dutlink_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
)

// TestBoardOperationsGoToLogfWithoutATracer: a program that calls the
// device with a plain context gets each operation in Options.Logf.
func TestBoardOperationsGoToLogfWithoutATracer(t *testing.T) {
	t.Parallel()
	lab := dutlinksim.NewTestLab(t)
	lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.09", Config: map[string]string{"name": "bench-1"}})
	o := lab.Options()
	o.Transport = dutlink.TransportShell
	var mu sync.Mutex
	var lines []string
	o.Logf = func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, strings.TrimSpace(strings.ReplaceAll(format, "%s", args[0].(string))))
	}
	drv := dutlink.New(o)
	ctx := context.Background()
	infos, err := drv.Discover(ctx)
	require.NoError(t, err)
	require.Len(t, infos, 1)
	dev, err := drv.Open(ctx, infos[0])
	require.NoError(t, err)
	defer dev.(driver.Closer).Close()
	require.NoError(t, dev.(driver.Power).PowerOff(ctx))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, lines, 2, "%q", lines)
	assert.Equal(t, "→ bench-1: dutlink power off over=shell", lines[0])
	assert.Regexp(t, `^← bench-1: dutlink power off \(\S+\) ok$`, lines[1])
}
