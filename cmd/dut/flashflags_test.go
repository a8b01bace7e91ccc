package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

const (
	sparseSize = 1 << 20  // the sparse image's size
	sparseData = 64 << 10 // random data at its start and at its end; a hole between
)

// sparseImage writes a 1 MiB raw image with random data in its first and
// last 64 KiB and a hole between them. It skips the test when the file
// system does not report the hole (SEEK_DATA/SEEK_HOLE).
func sparseImage(t *testing.T) (path string, data []byte) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "sparse.img")
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	data = make([]byte, sparseSize)
	_, _ = rand.Read(data[:sparseData])
	_, _ = rand.Read(data[sparseSize-sparseData:])
	_, err = f.WriteAt(data[:sparseData], 0)
	require.NoError(t, err)
	_, err = f.WriteAt(data[sparseSize-sparseData:], sparseSize-sparseData)
	require.NoError(t, err)
	hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
	if err != nil || hole >= sparseSize-sparseData {
		t.Skipf("the file system of %s does not report holes (SEEK_HOLE: %d, %v)", path, hole, err)
	}
	return path, data
}

// writeBmap writes a bmap for img (of size bytes, 4 KiB blocks) mapping
// its first blocks blocks, at path.
func writeBmap(t *testing.T, path string, img []byte, blocks int) {
	t.Helper()
	sum := sha256.Sum256(img[:blocks*4096])
	const zero = "0000000000000000000000000000000000000000000000000000000000000000"
	text := fmt.Sprintf(`<?xml version="1.0" ?>
<bmap version="2.0">
    <ImageSize> %d </ImageSize>
    <BlockSize> 4096 </BlockSize>
    <BlocksCount> %d </BlocksCount>
    <MappedBlocksCount> %d </MappedBlocksCount>
    <ChecksumType> sha256 </ChecksumType>
    <BmapFileChecksum> %s </BmapFileChecksum>
    <BlockMap>
        <Range chksum="%x"> 0-%d </Range>
    </BlockMap>
</bmap>
`, len(img), len(img)/4096, blocks, zero, sum, blocks-1)
	// The bmap's own checksum is taken with its field zeroed.
	own := sha256.Sum256([]byte(text))
	text = strings.Replace(text, zero, hex.EncodeToString(own[:]), 1)
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
}

// scribble fills the first n bytes of the disk file at path with 0xAA: what
// an earlier flash left there.
func scribble(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteAt(bytes.Repeat([]byte{0xaa}, n), 0)
	require.NoError(t, err)
}

// diskHead reads the first n bytes of the disk file at path.
func diskHead(t *testing.T, path string, n int) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(b), n)
	return b[:n]
}

// TestFlashHoles: without a bmap the storage ends byte-identical to a
// sparse image, its hole zeroed; --skip-holes leaves the old bytes under
// the hole.
func TestFlashHoles(t *testing.T) {
	env(t)
	img, data := sparseImage(t)
	disk := simDevice(t, "sim-0").DiskPath()
	hole := data[sparseData : sparseSize-sparseData]

	scribble(t, disk, sparseSize)
	r := dut(t, "flash", "sim-0", img)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, data, diskHead(t, disk, sparseSize), "byte-identical to the image")
	assert.Regexp(t, `(?m)^  zeroed   \d+ \(\d+ KiB, the image's holes, by \S+\)$`, r.stdout)
	assert.Contains(t, r.stdout, "\n  storage  byte-identical to the image\n")

	scribble(t, disk, sparseSize)
	r = dut(t, "flash", "sim-0", img, "--skip-holes")
	require.Equal(t, exitOK, r.code, r.stderr)
	got := diskHead(t, disk, sparseSize)
	assert.Equal(t, data[:sparseData], got[:sparseData], "the data is written")
	assert.Equal(t, data[sparseSize-sparseData:], got[sparseSize-sparseData:])
	assert.NotEqual(t, hole, got[sparseData:sparseSize-sparseData], "the hole is left as it was")
	assert.Equal(t, bytes.Repeat([]byte{0xaa}, 4096), got[sparseSize/2:sparseSize/2+4096], "the old bytes under the hole")
	assert.Contains(t, r.stdout, ", holes skipped)\n")
	assert.Contains(t, r.stdout, "\n  storage  the image's data; under its holes left as it was (--skip-holes)\n")
	assert.NotContains(t, r.stdout, "zeroed")
}

// TestFlashNoBmap: a bmap beside the image is used unless --nobmap, which
// writes all of the image.
func TestFlashNoBmap(t *testing.T) {
	env(t)
	img := writeImage(t, 1<<20)
	data, err := os.ReadFile(img)
	require.NoError(t, err)
	writeBmap(t, img+".bmap", data, 16) // the first 64 KiB
	disk := simDevice(t, "sim-0").DiskPath()

	scribble(t, disk, len(data))
	r := dut(t, "flash", "sim-0", img)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "  written  65536 (6% of the image, bmap "+img+".bmap)\n", "the bmap beside the image is found")
	assert.Contains(t, r.stdout, "\n  storage  the bmap's mapped ranges; the rest left as it was (--nobmap: all of the image)\n")
	got := diskHead(t, disk, len(data))
	assert.Equal(t, data[:64<<10], got[:64<<10])
	assert.Equal(t, bytes.Repeat([]byte{0xaa}, 4096), got[1<<19:1<<19+4096], "unmapped: left as it was")

	scribble(t, disk, len(data))
	r = dut(t, "flash", "sim-0", img, "--nobmap")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "  written  1048576 (100% of the image)\n")
	assert.NotContains(t, r.stdout, "bmap")
	assert.Contains(t, r.stdout, "\n  storage  byte-identical to the image\n")
	assert.Equal(t, data, diskHead(t, disk, len(data)))

	r = dut(t, "flash", "--help")
	require.Equal(t, exitOK, r.code)
	for _, flag := range []string{"--nobmap", "--skip-holes"} {
		assert.Regexp(t, `(?m)^\s+`+flag+`\s+\S`, r.stdout, "the flag has a help line")
		assert.Contains(t, strings.SplitN(r.stdout, "Usage:", 2)[0], "  - "+flag+" ", "the long help explains it")
	}
}

// TestFlashEnvDefaults: DUT_BMAP and DUT_FLASH_SKIP_HOLES stand in for the
// flags, as they do for a test's Flash; a flag given wins.
func TestFlashEnvDefaults(t *testing.T) {
	env(t)
	img := writeImage(t, 1<<20)
	data, err := os.ReadFile(img)
	require.NoError(t, err)
	beside := img + ".bmap"
	writeBmap(t, beside, data, 16) // the first 64 KiB
	other := filepath.Join(t.TempDir(), "other.bmap")
	writeBmap(t, other, data, 32) // the first 128 KiB

	t.Setenv("DUT_BMAP", "none")
	r := dut(t, "flash", "sim-0", img)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "  written  1048576 (100% of the image)\n", "DUT_BMAP=none is --nobmap")
	r = dut(t, "flash", "sim-0", img, "--bmap", beside)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "  written  65536 (6% of the image, bmap "+beside+")\n", "--bmap wins over DUT_BMAP")

	t.Setenv("DUT_BMAP", other)
	r = dut(t, "flash", "sim-0", img)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "  written  131072 (12% of the image, bmap "+other+")\n", "DUT_BMAP names the bmap")
	r = dut(t, "flash", "sim-0", img, "--nobmap")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "  written  1048576 (100% of the image)\n", "--nobmap wins over DUT_BMAP")

	t.Setenv("DUT_BMAP", filepath.Join(t.TempDir(), "missing.bmap"))
	r = dut(t, "flash", "sim-0", img)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "dut: DUT_BMAP: ")
	assert.Contains(t, r.stderr, "missing.bmap")

	t.Setenv("DUT_BMAP", "")
	sparse, _ := sparseImage(t)
	t.Setenv("DUT_FLASH_SKIP_HOLES", "1")
	r = dut(t, "flash", "sim-0", sparse)
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "(--skip-holes)\n", "DUT_FLASH_SKIP_HOLES=1 is --skip-holes")
	r = dut(t, "flash", "sim-0", sparse, "--skip-holes=false")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "\n  storage  byte-identical to the image\n", "the flag wins")

	t.Setenv("DUT_FLASH_SKIP_HOLES", "maybe")
	r = dut(t, "flash", "sim-0", sparse)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, `DUT_FLASH_SKIP_HOLES="maybe"`)
}
