package diskfile

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEnsureCreatesOnceAndNeverTruncates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev.disk")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { assert.NoError(t, Ensure(path, 1<<20)) })
	}
	wg.Wait()
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, int64(1<<20), st.Size())
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*"))
	assert.Empty(t, leftovers)

	require.NoError(t, os.WriteFile(path, []byte("flashed"), 0o644))
	require.NoError(t, Ensure(path, 1<<20))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "flashed", string(b), "an existing disk is left alone")

	err = Ensure(filepath.Join(t.TempDir(), "missing", "dir", "x.disk"), 1)
	assert.ErrorContains(t, err, "creating disk")
}
