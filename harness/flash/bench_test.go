package flash

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// BenchmarkWriteSparse flashes a 512 MiB raw image, a fifth of it data
// (1 MiB every 5 MiB), without a bmap onto a file full of old data: the
// byte-identical default (holes zeroed on the target) against SkipHoles:
//
//	go test -run X -bench WriteSparse -benchtime 3x ./harness/flash/
func BenchmarkWriteSparse(b *testing.B) {
	const size = 512 << 20
	dir := b.TempDir()
	img := filepath.Join(dir, "sparse.img")
	f, err := os.Create(img)
	require.NoError(b, err)
	chunk := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(9, 10))
	for off := int64(0); off < size; off += 5 << 20 {
		for i := range chunk {
			chunk[i] = byte(r.IntN(256))
		}
		_, err := f.WriteAt(chunk, off)
		require.NoError(b, err)
	}
	require.NoError(b, f.Truncate(size))
	require.NoError(b, f.Close())
	for _, c := range []struct {
		name string
		o    Options
	}{
		{"full", Options{}},
		{"skip-holes", Options{SkipHoles: true}},
	} {
		b.Run(c.name, func(b *testing.B) {
			target := filepath.Join(dir, "disk")
			require.NoError(b, os.WriteFile(target, nil, 0o644))
			require.NoError(b, os.Truncate(target, size))
			b.SetBytes(size)
			for b.Loop() {
				b.StopTimer()
				// Old data everywhere, so that the holes have something
				// to zero.
				tf, err := os.OpenFile(target, os.O_WRONLY, 0)
				require.NoError(b, err)
				for off := int64(0); off < size; off += int64(len(chunk)) {
					_, err := tf.WriteAt(chunk, off)
					require.NoError(b, err)
				}
				require.NoError(b, tf.Close())
				b.StartTimer()
				rep, err := Write(context.Background(), img, target, c.o)
				require.NoError(b, err)
				b.ReportMetric(rep.MBps(), "flashMB/s")
				b.ReportMetric(float64(rep.ZeroedBytes)/size, "zeroed-fraction")
			}
		})
	}
}

// BenchmarkWriteBzip2 flashes a 64 MiB bzip2 image through each system
// decoder that is installed and the built-in one:
//
//	go test -run X -bench WriteBzip2 -benchtime 3x ./harness/flash/
func BenchmarkWriteBzip2(b *testing.B) {
	const size = 64 << 20
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(11, 12))
	for i := 0; i < size; i += 2 {
		data[i] = byte(r.IntN(16)) // compressible, not trivially
	}
	dir := b.TempDir()
	img := filepath.Join(dir, "os.img.bz2")
	require.NoError(b, os.WriteFile(img, compress(b, Bzip2, data), 0o644))
	target := filepath.Join(dir, "disk")
	for _, dec := range []string{"lbzip2", "pbzip2", "bzip2", "built-in"} {
		b.Run(dec, func(b *testing.B) {
			o := Options{PureGo: dec == "built-in"}
			if !o.PureGo {
				if _, err := exec.LookPath(dec); err != nil {
					b.Skipf("no %s command", dec)
				}
				old := systemDecoders[Bzip2]
				systemDecoders[Bzip2] = slices.DeleteFunc(slices.Clone(old), func(d decoderCmd) bool { return d.name != dec })
				b.Cleanup(func() { systemDecoders[Bzip2] = old })
			}
			require.NoError(b, os.WriteFile(target, nil, 0o644))
			b.SetBytes(size)
			for b.Loop() {
				rep, err := Write(context.Background(), img, target, o)
				require.NoError(b, err)
				b.ReportMetric(rep.MBps(), "flashMB/s")
			}
		})
	}
}
