//go:build linux

package flash

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// loopDevice attaches a loop block device over a new file of size bytes of
// fillByte and returns the device and the file; it skips unless root can.
func loopDevice(t *testing.T, size int) (dev, backing string) {
	t.Helper()
	losetup, err := exec.LookPath("losetup")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and losetup for a loop block device")
	}
	backing = prefilled(t, filepath.Join(t.TempDir(), "backing"), size)
	// The device's name is on stdout; a warning (a file under 512 bytes)
	// goes to stderr.
	var stderr strings.Builder
	cmd := exec.Command(losetup, "--find", "--show", backing)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("cannot attach a loop device: %v: %s%s", err, out, stderr.String())
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev, backing
}

func TestWriteToABlockDevice(t *testing.T) {
	img, ranges := mappedImage()
	dev, backing := loopDevice(t, 2<<20)
	dir := t.TempDir()
	path := writeFile(t, filepath.Join(dir, "os.img.zst"), compress(t, Zstd, img))
	writeFile(t, filepath.Join(dir, "os.img.bmap"), []byte(bmapDoc(img, 4096, ranges, "2.0", "")))
	rep, err := Write(context.Background(), path, dev, Options{BufferSize: 64 << 10})
	require.NoError(t, err)
	assert.True(t, rep.Direct, "a block device takes O_DIRECT")
	assert.True(t, rep.Verified)
	checkMapped(t, backing, img, ranges)

	// Too small: refused before writing; the image does not fit this disk.
	big := writeFile(t, filepath.Join(dir, "big.img"), bytes.Repeat([]byte{1}, 3<<20))
	_, err = Write(context.Background(), big, dev, Options{})
	require.ErrorIs(t, err, ErrImage)
	require.ErrorIs(t, err, ErrTooBig)
	require.NotErrorIs(t, err, ErrTarget)
	assert.Contains(t, err.Error(), "holds 2097152 bytes")

	// Claimed by someone else (as the kernel claims a mounted disk): refused.
	claim, err := os.OpenFile(dev, os.O_RDONLY|os.O_EXCL, 0)
	require.NoError(t, err)
	defer claim.Close()
	_, err = Write(context.Background(), path, dev, Options{})
	require.ErrorIs(t, err, ErrTarget)
	assert.Contains(t, err.Error(), "in use by the system")
}

func TestWriteRefusesAMountedBlockDevice(t *testing.T) {
	dev, _ := loopDevice(t, 8<<20)
	mkfs, err1 := exec.LookPath("mkfs.ext4")
	mount, err2 := exec.LookPath("mount")
	if err1 != nil || err2 != nil {
		t.Skip("needs mkfs.ext4 and mount")
	}
	if out, err := exec.Command(mkfs, "-q", "-F", dev).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4: %v: %s", err, out)
	}
	mnt := t.TempDir()
	// Read-only, so the file system (ext4's lazy init) writes nothing
	// behind the test's back.
	if out, err := exec.Command(mount, "-o", "ro", dev, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount here: %v: %s", err, out)
	}
	defer func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	}()
	before, err := os.ReadFile(dev)
	require.NoError(t, err)
	img := writeFile(t, filepath.Join(t.TempDir(), "os.img"), bytes.Repeat([]byte{1}, 1<<20))
	_, err = Write(context.Background(), img, dev, Options{})
	require.ErrorIs(t, err, ErrTarget)
	assert.Contains(t, err.Error(), "is mounted at "+mnt)
	after, err := os.ReadFile(dev)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(before, after), "the mounted disk is untouched")
}

// fillDevice overwrites the whole block device dev with b and syncs it.
func fillDevice(t *testing.T, dev string, n int, b byte) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteAt(bytes.Repeat([]byte{b}, n), 0)
	require.NoError(t, err)
	require.NoError(t, f.Sync())
}

// The case on a block device: the hole is zeroed with BLKZEROOUT
// (an unaligned last hole is written), and the device reads back as the
// image.
func TestWriteWithoutBmapMakesABlockDeviceTheImage(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name     string
		tail     int64
		o        Options
		zeroedBy string
	}{
		{"aligned", 0, Options{}, "blkzeroout"},
		{"unaligned end", 1000, Options{}, "blkzeroout+write"},
		{"NoDirect", 0, Options{NoDirect: true}, "blkzeroout"},
		{"no BLKZEROOUT", 0, Options{}, "write"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dev, _ := loopDevice(t, 4<<20)
			fillDevice(t, dev, 4<<20, 0xff)
			path, img := holeyImage(t, t.TempDir(), c.tail)
			o := c.o
			if c.zeroedBy == "write" {
				o.faults = &faults{refuseZero: func(m zeroMethod) bool { return m == zeroBlk }}
			}
			rep, err := Write(context.Background(), path, dev, o)
			require.NoError(t, err)
			requireImage(t, dev, img, 0xff)
			assert.Equal(t, ModeFull, rep.Mode)
			assert.Equal(t, c.zeroedBy, rep.ZeroedBy)
			assert.Equal(t, int64(len(img)), rep.MappedBytes+rep.ZeroedBytes)
			assert.Equal(t, int64(2<<20), rep.MappedBytes)
			assert.True(t, rep.Verified)
		})
	}
	t.Run("SkipHoles", func(t *testing.T) {
		t.Parallel()
		dev, _ := loopDevice(t, 4<<20)
		fillDevice(t, dev, 4<<20, 0xff)
		path, img := holeyImage(t, t.TempDir(), 0)
		rep, err := Write(context.Background(), path, dev, Options{SkipHoles: true})
		require.NoError(t, err)
		copy(img[1<<20:2<<20], bytes.Repeat([]byte{0xff}, 1<<20))
		requireImage(t, dev, img, 0xff)
		assert.Equal(t, ModeSkipHoles, rep.Mode)
	})
	t.Run("a device that does not zero", func(t *testing.T) {
		t.Parallel()
		dev, _ := loopDevice(t, 4<<20)
		fillDevice(t, dev, 4<<20, 0xff)
		path, _ := holeyImage(t, t.TempDir(), 0)
		lie := &faults{zero: func(off, n int64) (bool, error) { return true, nil }}
		_, err := Write(context.Background(), path, dev, Options{faults: lie})
		require.ErrorIs(t, err, ErrVerify)
		assert.Contains(t, err.Error(), "byte 1048576 reads back as 0xff")
	})
}

// blockClassCases are the classification cases that need a block device.
func blockClassCases() []classCase {
	img := func(t *testing.T, dir string, n int) string {
		return writeFile(t, filepath.Join(dir, "os.img"), bytes.Repeat([]byte{1}, n))
	}
	return []classCase{
		{"block device too small", imageClass, "too big for this DUT's disk", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			dev, _ := loopDevice(t, 1<<20)
			return img(t, dir, 2<<20), dev, Options{}
		}},
		{"block device without its medium (0 bytes)", targetClass, "no medium in the reader", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			dev, _ := loopDevice(t, 0)
			return img(t, dir, 1<<20), dev, Options{}
		}},
		{"block device claimed by the kernel", targetClass, "in use by the system", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			dev, _ := loopDevice(t, 2<<20)
			claim, err := os.OpenFile(dev, os.O_RDONLY|os.O_EXCL, 0)
			require.NoError(t, err)
			t.Cleanup(func() { claim.Close() })
			return img(t, dir, 1<<20), dev, Options{}
		}},
	}
}
