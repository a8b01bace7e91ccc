package flash

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
)

// benchImage writes a 512 MiB raw image (an eighth random, the rest zeros,
// not sparse) and, when zst, its zstd-compressed form; it returns the path.
func benchImage(b *testing.B, dir string, zst bool) string {
	b.Helper()
	const size = 512 << 20
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < size; i += 4096 {
		if i%32768 == 0 {
			for j := i; j < i+4096; j += 8 {
				v := r.Uint64()
				for k := range 8 {
					data[j+k] = byte(v >> (8 * k))
				}
			}
		}
	}
	path := filepath.Join(dir, "bench.img")
	if !zst {
		require.NoError(b, os.WriteFile(path, data, 0o644))
		return path
	}
	path += ".zst"
	f, err := os.Create(path)
	require.NoError(b, err)
	w, err := zstd.NewWriter(f, zstd.WithEncoderLevel(zstd.SpeedFastest))
	require.NoError(b, err)
	_, err = w.Write(data)
	require.NoError(b, err)
	require.NoError(b, w.Close())
	require.NoError(b, f.Close())
	return path
}

// BenchmarkWrite512MiB flashes a 512 MiB image to a regular file on the
// test's temporary directory, with read-back verification:
//
//	go test -run X -bench Write512MiB -benchtime 3x ./harness/flash/
func BenchmarkWrite512MiB(b *testing.B) {
	for _, c := range []struct {
		name string
		zst  bool
		o    Options
	}{
		{"raw", false, Options{}},
		{"raw-noverify", false, Options{NoVerify: true}},
		{"raw-nodirect", false, Options{NoDirect: true}},
		{"zstd", true, Options{}},
	} {
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			img := benchImage(b, dir, c.zst)
			target := filepath.Join(dir, "disk")
			require.NoError(b, os.WriteFile(target, nil, 0o644))
			require.NoError(b, os.Truncate(target, 512<<20))
			b.SetBytes(512 << 20)
			b.ResetTimer()
			for b.Loop() {
				rep, err := Write(context.Background(), img, target, c.o)
				require.NoError(b, err)
				b.ReportMetric(rep.MBps(), "flashMB/s")
				b.ReportMetric(rep.VerifyDuration.Seconds(), "verify-s")
			}
		})
	}
}
