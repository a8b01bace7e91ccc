package flash

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// needTool returns the path of a command the test needs: it skips without
// it, but fails in CI (CI=true), where .ci/run installs it.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed in CI (apt-get install %s)", name, pkg)
		}
		t.Skipf("%s not installed (apt-get install %s)", name, pkg)
	}
	return p
}

// TestImagesFromRealToolsFlashLikeBmaptoolCopy flashes a sparse image
// mapped by `bmaptool create` and packed by gzip, xz, zstd and bzip2 (the
// real commands), with our engine and with `bmaptool copy`, onto targets
// filled with a pattern: both must hold the image on the mapped ranges, and
// ours must have left everything else as it was.
func TestImagesFromRealToolsFlashLikeBmaptoolCopy(t *testing.T) {
	bmaptool := needTool(t, "bmaptool", "bmap-tools")
	dir := t.TempDir()
	raw := filepath.Join(dir, "os.img")
	// Data at block-aligned and unaligned places, and a partial last block.
	const size = 8<<20 + 1234
	img := sparseImage(t, raw, size, [][2]int64{{0, 5000}, {16384, 20480}, {1 << 20, 3<<20 + 17}, {6 << 20, 6<<20 + 1}, {size - 100, size}})
	bmap := raw + ".bmap"
	out, err := exec.Command(bmaptool, "create", "-o", bmap, raw).CombinedOutput()
	require.NoError(t, err, "%s", out)
	b, err := ParseBmap(mustRead(t, bmap))
	require.NoError(t, err)

	packers := []struct {
		name, tool, pkg, ext string
		args                 []string
	}{
		{"raw", "", "", "", nil},
		{"gzip", "gzip", "gzip", ".gz", []string{"-k", "-f"}},
		{"xz", "xz", "xz-utils", ".xz", []string{"-k", "-f", "-T0"}},
		{"zstd", "zstd", "zstd", ".zst", []string{"-q", "-k", "-f"}},
		{"bzip2", "bzip2", "bzip2", ".bz2", []string{"-k", "-f"}},
	}
	for _, p := range packers {
		t.Run(p.name, func(t *testing.T) {
			path := raw + p.ext
			if p.tool != "" {
				tool := needTool(t, p.tool, p.pkg)
				out, err := exec.Command(tool, append(p.args, raw)...).CombinedOutput()
				require.NoError(t, err, "%s", out)
			}
			theirs := prefilled(t, filepath.Join(dir, p.name+".theirs"), size)
			mine := prefilled(t, filepath.Join(dir, p.name+".mine"), size)
			out, err := exec.Command(bmaptool, "copy", "--bmap", bmap, path, theirs).CombinedOutput()
			require.NoError(t, err, "bmaptool copy: %s", out)
			// Ours finds os.img.bmap beside os.img.gz by itself.
			rep, err := Write(context.Background(), path, mine, Options{BufferSize: 1 << 20})
			require.NoError(t, err)
			assert.Equal(t, bmap, rep.Bmap)
			assert.True(t, rep.Verified)
			assert.Equal(t, int64(size), rep.Bytes)

			t1, t2 := mustRead(t, theirs), mustRead(t, mine)
			var mapped int64
			for _, r := range b.Ranges {
				s, e := b.Bytes(r)
				mapped += e - s
				require.True(t, bytes.Equal(t1[s:e], t2[s:e]), "range %d-%d differs from bmaptool's", r.First, r.Last)
				require.True(t, bytes.Equal(img[s:e], t2[s:e]), "range %d-%d differs from the image", r.First, r.Last)
			}
			assert.Equal(t, mapped, rep.MappedBytes)
			ranges := make([][2]int64, len(b.Ranges))
			for i, r := range b.Ranges {
				ranges[i] = [2]int64{r.First, r.Last}
			}
			checkMapped(t, mine, img, ranges) // and the pattern everywhere else
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// TestNoBmapFlashesLikeBmaptoolCopyNobmap flashes a sparse image without
// its bmap with our engine (the holes zeroed) and with `bmaptool copy
// --nobmap` (every byte written) onto targets full of a pattern: both
// must end byte-identical to the image.
func TestNoBmapFlashesLikeBmaptoolCopyNobmap(t *testing.T) {
	bmaptool := needTool(t, "bmaptool", "bmap-tools")
	dir := t.TempDir()
	raw := filepath.Join(dir, "os.img")
	const size = 8<<20 + 1234
	img := sparseImage(t, raw, size, [][2]int64{{0, 5000}, {1 << 20, 3<<20 + 17}, {6 << 20, 6<<20 + 1}})
	holesSupported(t, raw)
	// A bmap beside the image, which both are told to refuse.
	out, err := exec.Command(bmaptool, "create", "-o", raw+".bmap", raw).CombinedOutput()
	require.NoError(t, err, "%s", out)
	theirs := filled(t, filepath.Join(dir, "theirs"), size, 0xa5)
	mine := filled(t, filepath.Join(dir, "mine"), size, 0xa5)
	out, err = exec.Command(bmaptool, "copy", "--nobmap", raw, theirs).CombinedOutput()
	require.NoError(t, err, "bmaptool copy: %s", out)
	rep, err := Write(context.Background(), raw, mine, Options{NoBmap: true})
	require.NoError(t, err)
	assert.Equal(t, ModeFull, rep.Mode)
	assert.Positive(t, rep.ZeroedBytes)
	requireImage(t, theirs, img, 0)
	requireImage(t, mine, img, 0)
}
