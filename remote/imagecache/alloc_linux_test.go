package imagecache

import (
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// allocated returns the bytes the file at path takes on disk (st_blocks).
func allocated(t testing.TB, path string) (int64, bool) {
	t.Helper()
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(path, &st))
	return st.Blocks * 512, true
}
