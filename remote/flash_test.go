package remote_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
	"github.com/jumpstarter-dev/jumpstarter-go/remote"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/exporter"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/gen/dutv1"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/wire"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/simimage"
)

// diskSize is what the flash tests grow a sim device's disk to (sparse), so
// that images bigger than the sim image fit it.
const diskSize = 128 << 20

// flashLab serves one sim device and opens it; its disk is grown to
// diskSize. It returns the remote device and the sim device behind it.
func flashLab(t *testing.T) (*lab, *remote.Device, *sim.Device) {
	t.Helper()
	l := newLab(t, 1)
	dev := l.open(t, "sim-0")
	sd := l.sims.device("sim-0")
	require.NotNil(t, sd)
	require.NoError(t, os.Truncate(sd.DiskPath(), diskSize))
	return l, dev, sd
}

// busy powers the device on and puts its storage on the DUT, so that a
// flash that leaves it off and its storage off is seen to have done so.
func busy(t *testing.T, dev *remote.Device, sd *sim.Device) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, dev.SetStorage(ctx, driver.StorageDUT))
	require.NoError(t, dev.PowerOn(ctx))
	require.Equal(t, sim.PowerStateOn, sd.PowerState())
	require.Equal(t, driver.StorageDUT, sd.StorageState())
}

// requireSettled checks the truth behind the exporter: the device is off
// and its storage off.
func requireSettled(t *testing.T, sd *sim.Device) {
	t.Helper()
	assert.Equal(t, sim.PowerStateOff, sd.PowerState(), "the flash left the DUT powered")
	assert.Equal(t, driver.StorageOff, sd.StorageState(), "the flash left the storage switched")
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// requireDiskHolds checks the sim device's disk starts with want.
func requireDiskHolds(t *testing.T, sd *sim.Device, want []byte) {
	t.Helper()
	f, err := os.Open(sd.DiskPath())
	require.NoError(t, err)
	defer f.Close()
	got := make([]byte, len(want))
	_, err = io.ReadFull(f, got)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "the DUT's disk does not hold the image")
}

// requireReport checks what every successful remote flash reports.
func requireReport(t *testing.T, rep flash.Report, path string) {
	t.Helper()
	assert.True(t, rep.Verified, "not verified: %+v", rep)
	assert.Equal(t, fileSHA(t, path), rep.SHA256)
	assert.Equal(t, path, rep.Image)
	assert.Regexp(t, `^test-lab:.+sim-0\.disk$`, rep.Target)
}

// randomBytes returns n bytes no compressor shrinks.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n+8)
	r := rand.New(rand.NewPCG(seed, seed+1))
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n]
}

// sparseFile writes a raw image of size bytes with random data at the
// given ranges and holes elsewhere, and returns its bytes. It skips the
// test when the file system does not report the holes.
func sparseFile(t *testing.T, path string, size int64, data [][2]int64) []byte {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, f.Truncate(size))
	want := make([]byte, size)
	for i, d := range data {
		copy(want[d[0]:d[1]], randomBytes(int(d[1]-d[0]), uint64(i)+10))
		_, err := f.WriteAt(want[d[0]:d[1]], d[0])
		require.NoError(t, err)
	}
	require.NoError(t, f.Sync())
	hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
	if err != nil || hole >= size {
		t.Skipf("the file system of %s does not report holes (SEEK_HOLE: %d, %v)", path, hole, err)
	}
	return want
}

// TestARemoteFlashSendsOnlyWhatTheExporterLacks flashes an image twice: the
// first time it travels whole and lands on the DUT's disk, the second time
// nothing travels; both reports are the exporter engine's, and the DUT ends
// off with its storage off.
func TestARemoteFlashSendsOnlyWhatTheExporterLacks(t *testing.T) {
	t.Parallel()
	l, dev, sd := flashLab(t)
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "os-2.0.img")
	require.NoError(t, simimage.WriteFile(img, simimage.Spec{Version: "2.0.0"}))
	want, err := os.ReadFile(img)
	require.NoError(t, err)

	busy(t, dev, sd)
	rep, sent, err := dev.Flash(ctx, img, flash.Options{})
	require.NoError(t, err)
	assert.Equal(t, int64(len(want)), sent.ImageBytes, "the first flash must send the whole file")
	assert.Zero(t, sent.BmapBytes)
	requireReport(t, rep, img)
	assert.Equal(t, flash.ModeFull, rep.Mode)
	assert.Equal(t, int64(len(want)), rep.Bytes)
	requireDiskHolds(t, sd, want)
	requireSettled(t, sd)
	got, err := simimage.ReadFile(sd.DiskPath())
	require.NoError(t, err)
	assert.Equal(t, "2.0.0", got.Version)
	assert.Equal(t, 1, l.cache.Len())

	// Scribble over the disk: the second flash must write it again, from
	// the exporter's cache.
	require.NoError(t, simimage.WriteFile(sd.DiskPath(), simimage.Spec{Version: "1.0.0"}))
	require.NoError(t, os.Truncate(sd.DiskPath(), diskSize))
	busy(t, dev, sd)
	rep, sent, err = dev.Flash(ctx, img, flash.Options{})
	require.NoError(t, err)
	assert.Zero(t, sent.ImageBytes, "the exporter had the image: nothing should travel")
	requireReport(t, rep, img)
	requireDiskHolds(t, sd, want)
	requireSettled(t, sd)
	assert.Equal(t, 1, l.cache.Len())

	// FlashImage (the harness's flash.Flasher) is the same flash.
	var _ flash.Flasher = dev
	rep, err = dev.FlashImage(ctx, img, flash.Options{})
	require.NoError(t, err)
	requireReport(t, rep, img)
}

// TestOfASparseImageOnlyTheDataTravels flashes a 64 MiB raw image holding
// 2 MiB of data: 2 MiB travel, and the disk holds the image, holes as
// zeros.
func TestOfASparseImageOnlyTheDataTravels(t *testing.T) {
	t.Parallel()
	_, dev, sd := flashLab(t)
	img := filepath.Join(t.TempDir(), "sparse.img")
	want := sparseFile(t, img, 64<<20, [][2]int64{{0, 1 << 20}, {40 << 20, 41 << 20}})
	// The disk's bytes under the image's holes are not zero before.
	f, err := os.OpenFile(sd.DiskPath(), os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(bytes.Repeat([]byte{0xaa}, 1<<20), 20<<20)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	rep, sent, err := dev.Flash(context.Background(), img, flash.Options{})
	require.NoError(t, err)
	assert.Equal(t, int64(2<<20), sent.ImageBytes, "only the data ranges must travel, not the file's size")
	requireReport(t, rep, img)
	assert.Equal(t, int64(64<<20), rep.Bytes)
	requireDiskHolds(t, sd, want)
	requireSettled(t, sd)
}

// TestABmapTravelsWithItsImage flashes a sparse image with the bmap
// bmaptool made for it: the bmap is sent too, and the exporter's engine
// flashes in bmap mode.
func TestABmapTravelsWithItsImage(t *testing.T) {
	t.Parallel()
	bmaptool, err := exec.LookPath("bmaptool")
	if err != nil {
		t.Skip("bmaptool is not installed")
	}
	l, dev, sd := flashLab(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "os.img")
	want := sparseFile(t, img, 16<<20, [][2]int64{{0, 256 << 10}, {8 << 20, 9 << 20}})
	bmap := img + ".bmap"
	out, err := exec.Command(bmaptool, "create", "-o", bmap, img).CombinedOutput()
	require.NoError(t, err, "%s", out)
	st, err := os.Stat(bmap)
	require.NoError(t, err)

	busy(t, dev, sd)
	rep, sent, err := dev.Flash(context.Background(), img, flash.Options{})
	require.NoError(t, err)
	assert.Equal(t, flash.ModeBmap, rep.Mode)
	assert.Equal(t, bmap, rep.Bmap, "the report names the local bmap")
	assert.Equal(t, st.Size(), sent.BmapBytes, "the bmap must travel")
	assert.Equal(t, int64(256<<10+1<<20), sent.ImageBytes)
	assert.Equal(t, int64(256<<10+1<<20), rep.MappedBytes)
	requireReport(t, rep, img)
	requireSettled(t, sd)
	// What bmap mode promises: the mapped ranges are the image's (the rest
	// of the disk is left as it was).
	disk, err := os.ReadFile(sd.DiskPath())
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want[:256<<10], disk[:256<<10]))
	assert.True(t, bytes.Equal(want[8<<20:9<<20], disk[8<<20:9<<20]))
	has, err := l.clients("").flash.HasImage(context.Background(), connect.NewRequest(&dutv1.HasImageRequest{Sha256: fileSHA(t, bmap)}))
	require.NoError(t, err)
	assert.True(t, has.Msg.GetPresent(), "the exporter's cache lacks the bmap")

	// NoBmap: the bmap stays home.
	rep, sent, err = dev.Flash(context.Background(), img, flash.Options{NoBmap: true})
	require.NoError(t, err)
	assert.NotEqual(t, flash.ModeBmap, rep.Mode)
	assert.Empty(t, rep.Bmap)
	assert.Zero(t, sent.BmapBytes+sent.ImageBytes)
	requireDiskHolds(t, sd, want)
}

// zstdFile compresses data into path.
func zstdFile(t *testing.T, path string, data []byte) {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, enc.EncodeAll(data, nil), 0o644))
}

// TestACompressedImageTravelsCompressed flashes a .zst image: the
// compressed file travels, and the exporter unpacks it onto the disk.
func TestACompressedImageTravelsCompressed(t *testing.T) {
	t.Parallel()
	_, dev, sd := flashLab(t)
	img := filepath.Join(t.TempDir(), "os.img.zst")
	want := append(randomBytes(1<<20, 3), make([]byte, 7<<20)...) // 8 MiB, mostly zeros
	zstdFile(t, img, want)
	st, err := os.Stat(img)
	require.NoError(t, err)
	require.Less(t, st.Size(), int64(2<<20))

	busy(t, dev, sd)
	rep, sent, err := dev.Flash(context.Background(), img, flash.Options{})
	require.NoError(t, err)
	assert.Equal(t, st.Size(), sent.ImageBytes, "the image must travel compressed")
	assert.Equal(t, flash.Format("zstd"), rep.Format)
	assert.Equal(t, int64(len(want)), rep.Bytes)
	requireReport(t, rep, img)
	requireDiskHolds(t, sd, want)
	requireSettled(t, sd)
}

// TestARemoteFlashReportsProgress: the exporter's progress reaches the
// caller's callback while it writes, Done rising to the image's size. The
// image (12 MiB of random data) travels in full-size chunks.
func TestARemoteFlashReportsProgress(t *testing.T) {
	t.Parallel()
	_, dev, sd := flashLab(t)
	img := filepath.Join(t.TempDir(), "big.img")
	want := randomBytes(12<<20, 7)
	require.NoError(t, os.WriteFile(img, want, 0o644))
	var got []flash.Progress
	rep, sent, err := dev.Flash(context.Background(), img, flash.Options{
		ProgressEvery: 1 << 20,
		Progress:      func(p flash.Progress) { got = append(got, p) },
	})
	require.NoError(t, err)
	assert.Equal(t, int64(len(want)), sent.ImageBytes)
	requireReport(t, rep, img)
	requireDiskHolds(t, sd, want)
	require.GreaterOrEqual(t, len(got), 3, "progress: %+v", got)
	for i := 1; i < len(got); i++ {
		assert.GreaterOrEqual(t, got[i].Done, got[i-1].Done, "progress went back: %+v", got)
		assert.GreaterOrEqual(t, got[i].Elapsed, got[i-1].Elapsed)
	}
	assert.Less(t, got[0].Done, got[len(got)-1].Done, "Done never rose")
	assert.Equal(t, int64(len(want)), got[len(got)-1].Done)
	assert.Equal(t, int64(len(want)), got[len(got)-1].Total)
	assert.InDelta(t, 1.0, got[len(got)-1].Fraction, 1e-9)
}

// TestACorruptImageIsTheCallersFault flashes a truncated .zst: the exporter
// refuses it with the sentinel a local flash gives (flash.ErrImage), as
// the caller's fault; the DUT ends off with its storage off.
func TestACorruptImageIsTheCallersFault(t *testing.T) {
	t.Parallel()
	_, dev, sd := flashLab(t)
	dir := t.TempDir()
	whole := filepath.Join(dir, "whole.img.zst")
	zstdFile(t, whole, randomBytes(4<<20, 9))
	b, err := os.ReadFile(whole)
	require.NoError(t, err)
	img := filepath.Join(dir, "truncated.img.zst")
	require.NoError(t, os.WriteFile(img, b[:len(b)/2], 0o644))

	// The local engine's verdict on the same file.
	target := filepath.Join(dir, "local.disk")
	require.NoError(t, os.Truncate(sdTarget(t, target), diskSize))
	_, lerr := flash.Write(context.Background(), img, target, flash.Options{})
	require.Error(t, lerr)
	require.ErrorIs(t, lerr, flash.ErrImage, "the local flash's verdict changed: %v", lerr)

	busy(t, dev, sd)
	rep, sent, err := dev.Flash(context.Background(), img, flash.Options{})
	require.Error(t, err)
	assert.Equal(t, int64(len(b)/2), sent.ImageBytes)
	assert.ErrorIs(t, err, flash.ErrImage, "%v", err)
	var we *wire.Error
	require.True(t, errors.As(err, &we), "the error did not come from the exporter: %v", err)
	assert.Equal(t, wire.FaultCaller, wire.FaultOf(err), "%v", err)
	assert.Equal(t, connect.CodeInvalidArgument, connect.CodeOf(err), "%v", err)
	assert.Equal(t, img, rep.Image)
	assert.False(t, rep.Verified)
	requireSettled(t, sd)
}

// sdTarget creates an empty file at path and returns path.
func sdTarget(t *testing.T, path string) string {
	t.Helper()
	require.NoError(t, os.WriteFile(path, nil, 0o644))
	return path
}

// TestAFlashOfAClosedDeviceIsRefused: once the device is closed, Flash
// fails with driver.ErrClosed and sends nothing.
func TestAFlashOfAClosedDeviceIsRefused(t *testing.T) {
	t.Parallel()
	l, dev, _ := flashLab(t)
	img := filepath.Join(t.TempDir(), "os.img")
	require.NoError(t, simimage.WriteFile(img, simimage.Spec{Version: "2.0.0"}))
	require.NoError(t, dev.Close())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, sent, err := dev.Flash(ctx, img, flash.Options{})
	assert.ErrorIs(t, err, driver.ErrClosed)
	assert.Zero(t, sent.ImageBytes)
	assert.Zero(t, l.cache.Len(), "a refused flash uploaded its image")
}

// TestACancelledFlashLeavesTheStorageOff cancels a flash while the exporter
// writes: the caller gets its context's error, and the exporter still
// switches the storage off and leaves the DUT off.
func TestACancelledFlashLeavesTheStorageOff(t *testing.T) {
	t.Parallel()
	_, dev, sd := flashLab(t)
	img := filepath.Join(t.TempDir(), "big.img")
	// 64 MiB: the engine writes 8 MiB at a time, so most of the write is
	// still to come when the first progress arrives.
	require.NoError(t, os.WriteFile(img, bytes.Repeat(randomBytes(1<<20, 8), 64), 0o644))
	busy(t, dev, sd)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, _, err := dev.Flash(ctx, img, flash.Options{
		ProgressEvery: 1 << 20, NoDirect: true,
		Progress: func(p flash.Progress) {
			if p.Done < p.Total {
				cancel()
			}
		},
	})
	require.Error(t, err)
	assert.ErrorIs(t, err, context.Canceled)
	// A call on the lease waits for the exporter's flash to end.
	s, err := dev.PowerState(context.Background())
	require.NoError(t, err)
	assert.Equal(t, dutv1.PowerState_POWER_STATE_OFF, s)
	requireSettled(t, sd)
	// The device is still usable: the next flash succeeds (from the cache).
	rep, sent, err := dev.Flash(context.Background(), img, flash.Options{})
	require.NoError(t, err)
	assert.Zero(t, sent.ImageBytes)
	requireReport(t, rep, img)
}

// TestTwoDevicesFlashANewImageAtOnce: two clients send the same image the
// exporter lacks at the same time; both flashes succeed and the cache holds
// it once.
func TestTwoDevicesFlashANewImageAtOnce(t *testing.T) {
	t.Parallel()
	l := newLab(t, 2)
	img := filepath.Join(t.TempDir(), "os.img")
	want := randomBytes(6<<20, 11)
	require.NoError(t, os.WriteFile(img, want, 0o644))
	devs := []*remote.Device{l.open(t, "sim-0"), l.open(t, "sim-1")}
	errs := make([]error, 2)
	sents := make([]remote.Sent, 2)
	start := make(chan struct{})
	done := make(chan struct{})
	for i, dev := range devs {
		require.NoError(t, os.Truncate(l.sims.device(dev.Name()).DiskPath(), diskSize))
		go func() {
			defer func() { done <- struct{}{} }()
			<-start
			_, sents[i], errs[i] = dev.Flash(context.Background(), img, flash.Options{})
		}()
	}
	close(start)
	<-done
	<-done
	for i, dev := range devs {
		require.NoError(t, errs[i], dev.Name())
		requireDiskHolds(t, l.sims.device(dev.Name()), want)
	}
	assert.Equal(t, 1, l.cache.Len())
	assert.Equal(t, int64(len(want)), l.cache.Bytes())
	assert.LessOrEqual(t, sents[0].ImageBytes+sents[1].ImageBytes, 2*int64(len(want)))
	assert.GreaterOrEqual(t, sents[0].ImageBytes+sents[1].ImageBytes, int64(len(want)))
}

// TestAnImageTooBigIsTheCallersFault: an image bigger than the DUT's disk
// fails as a local flash does (flash.ErrTooBig, with flash.ErrImage), the
// caller's fault, and one bigger than the exporter's whole cache is refused
// before anything travels; the DUT ends off with its storage off.
func TestAnImageTooBigIsTheCallersFault(t *testing.T) {
	t.Parallel()
	l, dev, sd := flashLab(t)
	require.NoError(t, os.Truncate(sd.DiskPath(), 1<<20))
	img := filepath.Join(t.TempDir(), "os.img")
	require.NoError(t, os.WriteFile(img, randomBytes(2<<20, 12), 0o644))
	busy(t, dev, sd)
	rep, _, err := dev.Flash(context.Background(), img, flash.Options{})
	require.Error(t, err)
	assert.ErrorIs(t, err, flash.ErrTooBig)
	assert.ErrorIs(t, err, flash.ErrImage)
	assert.Equal(t, wire.FaultCaller, wire.FaultOf(err))
	assert.Equal(t, img, rep.Image)
	requireSettled(t, sd)
	assert.Equal(t, int64(1<<20), fileSize(t, sd.DiskPath()), "the too big image grew the disk")

	huge := filepath.Join(t.TempDir(), "huge.img")
	require.NoError(t, os.Truncate(sdTarget(t, huge), l.cache.MaxBytes()+1))
	busy(t, dev, sd)
	_, sent, err := dev.Flash(context.Background(), huge, flash.Options{})
	require.Error(t, err)
	assert.ErrorIs(t, err, driver.ErrInvalidArgument)
	assert.ErrorContains(t, err, "larger cache")
	assert.Zero(t, sent.ImageBytes)
	assert.Equal(t, 1, l.cache.Len())
	// The refused upload did not touch the DUT either.
	assert.Equal(t, sim.PowerStateOn, sd.PowerState())
	assert.Equal(t, driver.StorageDUT, sd.StorageState())
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	require.NoError(t, err)
	return st.Size()
}

// TestAFlashBesideAnotherOfTheSameImage: while one device flashes a cached
// image, another flashes the same image from the cache; both succeed (the
// cache's use of a file must not change it, not even its modification
// time, which the flash engine checks).
func TestAFlashBesideAnotherOfTheSameImage(t *testing.T) {
	t.Parallel()
	l := newLab(t, 2)
	img := filepath.Join(t.TempDir(), "os.img")
	want := randomBytes(32<<20, 13) // the engine writes 8 MiB at a time
	require.NoError(t, os.WriteFile(img, want, 0o644))
	first, second := l.open(t, "sim-0"), l.open(t, "sim-1")
	for _, n := range []string{"sim-0", "sim-1"} {
		require.NoError(t, os.Truncate(l.sims.device(n).DiskPath(), diskSize))
	}
	var secondErr error
	var secondRan bool
	rep, _, err := first.Flash(context.Background(), img, flash.Options{
		ProgressEvery: 1 << 20,
		Progress: func(p flash.Progress) {
			// The first flash is under way on the exporter: the second
			// device flashes the same image, which the cache holds now.
			if !secondRan && p.Done < p.Total {
				secondRan = true
				var sent remote.Sent
				_, sent, secondErr = second.Flash(context.Background(), img, flash.Options{})
				assert.Zero(t, sent.ImageBytes)
			}
		},
	})
	require.True(t, secondRan, "the first flash reported no progress before its end (%v)", err)
	require.NoError(t, secondErr, "the second flash")
	require.NoError(t, err, "the first flash, while the second flashed the same image")
	requireReport(t, rep, img)
	requireDiskHolds(t, l.sims.device("sim-0"), want)
	requireDiskHolds(t, l.sims.device("sim-1"), want)
}

// TestAnExporterWithoutACacheCannotFlash: an exporter that keeps no image
// cache refuses a flash as unsupported, and the DUT is untouched.
func TestAnExporterWithoutACacheCannotFlash(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1, func(c *exporter.Config) { c.Images = nil })
	dev := l.open(t, "sim-0")
	sd := l.sims.device("sim-0")
	img := filepath.Join(t.TempDir(), "os.img")
	require.NoError(t, simimage.WriteFile(img, simimage.Spec{Version: "2.0.0"}))
	disk := diskSum(t, sd)
	busy(t, dev, sd)
	_, sent, err := dev.Flash(context.Background(), img, flash.Options{})
	require.Error(t, err)
	assert.ErrorIs(t, err, driver.ErrUnsupported)
	assert.ErrorContains(t, err, "keeps no image cache")
	assert.Zero(t, sent.ImageBytes)
	assert.Equal(t, sim.PowerStateOn, sd.PowerState())
	assert.Equal(t, driver.StorageDUT, sd.StorageState())
	assert.Equal(t, disk, diskSum(t, sd))
}
