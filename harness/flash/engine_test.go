package flash

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// mappedImage returns a 1 MiB + 100 byte image whose blocks (4 KiB) hold
// random data everywhere, and the block ranges a bmap maps: the unmapped
// blocks' data must not reach the target.
func mappedImage() ([]byte, [][2]int64) {
	r := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, 1<<20+100)
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return b, [][2]int64{{0, 3}, {10, 10}, {100, 200}, {256, 256}}
}

const fillByte = 0xee

func prefilled(t *testing.T, path string, n int) string {
	t.Helper()
	return writeFile(t, path, bytes.Repeat([]byte{fillByte}, n))
}

// checkMapped asserts the target holds the image in the mapped blocks and
// the fill byte everywhere else.
func checkMapped(t *testing.T, target string, img []byte, ranges [][2]int64) {
	t.Helper()
	got, err := os.ReadFile(target)
	require.NoError(t, err)
	want := bytes.Repeat([]byte{fillByte}, len(got))
	for _, r := range ranges {
		s, e := r[0]*4096, min((r[1]+1)*4096, int64(len(img)))
		copy(want[s:e], img[s:e])
	}
	require.Equal(t, len(want), len(got))
	for i := range want {
		if want[i] != got[i] {
			t.Fatalf("target byte %d (block %d) is %#x, want %#x", i, i/4096, got[i], want[i])
		}
	}
}

func TestWriteWithBmapWritesOnlyMappedRanges(t *testing.T) {
	img, ranges := mappedImage()
	var mapped int64
	for _, r := range ranges {
		mapped += min((r[1]+1)*4096, int64(len(img))) - r[0]*4096
	}
	for _, f := range []Format{Raw, Gzip, Zstd, Xz} {
		t.Run(string(f), func(t *testing.T) {
			dir := t.TempDir()
			name := "os.img"
			if f != Raw {
				name += "." + string(f)
			}
			path := writeFile(t, filepath.Join(dir, name), compress(t, f, img))
			// foo.img.bmap serves foo.img and foo.img.zst alike.
			bmapPath := writeFile(t, filepath.Join(dir, "os.img.bmap"), []byte(bmapDoc(img, 4096, ranges, "2.0", "")))
			target := prefilled(t, filepath.Join(dir, "disk"), 2<<20)
			rep, err := Write(context.Background(), path, target, Options{BufferSize: 64 << 10})
			require.NoError(t, err)
			assert.Equal(t, bmapPath, rep.Bmap)
			assert.Equal(t, int64(len(img)), rep.Bytes)
			assert.Equal(t, mapped, rep.MappedBytes)
			assert.InDelta(t, float64(mapped)/float64(len(img)), rep.MappedFraction, 1e-9)
			assert.True(t, rep.Verified)
			assert.Positive(t, rep.VerifyDuration)
			checkMapped(t, target, img, ranges)
		})
	}
}

func TestWriteBmapBesideImageAndOptions(t *testing.T) {
	img, ranges := mappedImage()
	dir := t.TempDir()
	path := writeFile(t, filepath.Join(dir, "os.img"), img)
	doc := bmapDoc(img, 4096, ranges, "1.3", "") // SHA-1 era
	t.Run("IMAGE.bmap", func(t *testing.T) {
		bm := writeFile(t, filepath.Join(dir, "os.img.bmap"), []byte(doc))
		defer os.Remove(bm)
		target := prefilled(t, filepath.Join(t.TempDir(), "disk"), len(img))
		rep, err := Write(context.Background(), path, target, Options{})
		require.NoError(t, err)
		assert.Equal(t, bm, rep.Bmap)
		checkMapped(t, target, img, ranges)
	})
	t.Run("Options.Bmap", func(t *testing.T) {
		bm := writeFile(t, filepath.Join(t.TempDir(), "elsewhere.xml"), []byte(doc))
		target := prefilled(t, filepath.Join(t.TempDir(), "disk"), len(img))
		rep, err := Write(context.Background(), path, target, Options{Bmap: bm})
		require.NoError(t, err)
		assert.Equal(t, bm, rep.Bmap)
		checkMapped(t, target, img, ranges)
	})
	t.Run("missing Options.Bmap", func(t *testing.T) {
		target := prefilled(t, filepath.Join(t.TempDir(), "disk"), len(img))
		_, err := Write(context.Background(), path, target, Options{Bmap: filepath.Join(dir, "nope.bmap")})
		require.ErrorIs(t, err, ErrBmap)
	})
	t.Run("NoBmap", func(t *testing.T) {
		writeFile(t, filepath.Join(dir, "os.img.bmap"), []byte(doc))
		defer os.Remove(filepath.Join(dir, "os.img.bmap"))
		target := prefilled(t, filepath.Join(t.TempDir(), "disk"), len(img))
		rep, err := Write(context.Background(), path, target, Options{NoBmap: true})
		require.NoError(t, err)
		assert.Empty(t, rep.Bmap)
		assert.Equal(t, int64(len(img)), rep.MappedBytes)
		got, err := os.ReadFile(target)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(img, got))
	})
}

func TestWriteFailsOnARangeNotMatchingTheBmap(t *testing.T) {
	img, ranges := mappedImage()
	dir := t.TempDir()
	doc := bmapDoc(img, 4096, ranges, "2.0", "")
	img[100*4096+5000] ^= 1 // inside range 100-200
	for _, f := range []Format{Raw, Zstd} {
		t.Run(string(f), func(t *testing.T) {
			path := writeFile(t, filepath.Join(dir, "os."+string(f)), compress(t, f, img))
			bm := writeFile(t, filepath.Join(dir, "os.bmap"), []byte(doc))
			target := prefilled(t, filepath.Join(dir, "disk"), len(img))
			_, err := Write(context.Background(), path, target, Options{Bmap: bm, BufferSize: 16 << 10})
			require.ErrorIs(t, err, ErrImage)
			assert.Contains(t, err.Error(), "bmap range 100-200")
			assert.Regexp(t, "has sha256 [0-9a-f]{64}, the bmap says [0-9a-f]{64}", err.Error())
		})
	}
}

func TestWriteRefusesABmapOfAnotherImage(t *testing.T) {
	img, ranges := mappedImage()
	dir := t.TempDir()
	var target string
	untouched := func(t *testing.T) {
		t.Helper()
		got, err := os.ReadFile(target)
		require.NoError(t, err)
		assert.Equal(t, bytes.Repeat([]byte{fillByte}, 2<<20), got, "the target is untouched")
	}
	longer := append(bytes.Clone(img), make([]byte, 8192)...)
	shorter := img[:len(img)-5000]
	for _, c := range []struct {
		name  string
		image []byte
		f     Format
		want  string
	}{
		{"raw, longer", longer, Raw, "is for an image of 1048676 bytes"},
		{"zstd, longer", longer, Zstd, "unpacks to more than the 1048676 bytes its bmap"},
		{"zstd, shorter", shorter, Zstd, "unpacks to 1043676 bytes, its bmap"},
	} {
		t.Run(c.name, func(t *testing.T) {
			target = prefilled(t, filepath.Join(dir, "disk"), 2<<20)
			path := writeFile(t, filepath.Join(dir, "os.img"), compress(t, c.f, c.image))
			bm := writeFile(t, filepath.Join(dir, "os.bmap"), []byte(bmapDoc(img, 4096, ranges, "2.0", "")))
			_, err := Write(context.Background(), path, target, Options{Bmap: bm})
			require.ErrorIs(t, err, ErrBmap)
			assert.Contains(t, err.Error(), c.want)
			if c.f == Raw {
				untouched(t)
			}
		})
	}
	t.Run("wrong own checksum", func(t *testing.T) {
		target = prefilled(t, filepath.Join(dir, "disk"), 2<<20)
		path := writeFile(t, filepath.Join(dir, "os.img"), img)
		doc := strings.Replace(bmapDoc(img, 4096, ranges, "2.0", ""), "\"> 10 <", "\"> 11 <", 1)
		writeFile(t, filepath.Join(dir, "os.img.bmap"), []byte(doc))
		defer os.Remove(filepath.Join(dir, "os.img.bmap"))
		_, err := Write(context.Background(), path, target, Options{})
		require.ErrorIs(t, err, ErrBmap)
		assert.Contains(t, err.Error(), "own sha256 checksum is wrong")
		untouched(t)
	})
}

// sparseImage writes a raw image with holes: data at the given byte ranges.
func sparseImage(t testing.TB, path string, size int64, data [][2]int64) []byte {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, f.Truncate(size))
	want := make([]byte, size)
	r := rand.New(rand.NewPCG(5, 6))
	for _, d := range data {
		for i := d[0]; i < d[1]; i++ {
			want[i] = byte(r.IntN(255) + 1)
		}
		_, err := f.WriteAt(want[d[0]:d[1]], d[0])
		require.NoError(t, err)
	}
	return want
}

func holesSupported(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	st, err := f.Stat()
	require.NoError(t, err)
	if ext, ok := dataExtents(f, st.Size()); !ok || len(ext) == 0 || (ext[0][0] == 0 && ext[0][1] == st.Size()) {
		t.Skipf("the file system of %s does not report holes", path)
	}
}

func TestSkipHolesLeavesTheTargetUnderTheHoles(t *testing.T) {
	dir := t.TempDir()
	const size = 8<<20 + 1000
	path := filepath.Join(dir, "sparse.img")
	img := sparseImage(t, path, size, [][2]int64{{0, 5000}, {1 << 20, 1<<20 + 100}, {4 << 20, 5 << 20}, {8 << 20, size}})
	holesSupported(t, path)
	target := prefilled(t, filepath.Join(dir, "disk"), size)
	rep, err := Write(context.Background(), path, target, Options{BufferSize: 256 << 10, SkipHoles: true})
	require.NoError(t, err)
	assert.Equal(t, ModeSkipHoles, rep.Mode)
	assert.True(t, rep.Sparse)
	assert.Zero(t, rep.ZeroedBytes)
	assert.Empty(t, rep.ZeroedBy)
	assert.True(t, rep.Verified)
	assert.Equal(t, int64(size), rep.Bytes)
	assert.Less(t, rep.MappedBytes, int64(size)/2)
	assert.GreaterOrEqual(t, rep.MappedBytes, int64(5000+100+(1<<20)+1000))
	got, err := os.ReadFile(target)
	require.NoError(t, err)
	for i := range got {
		if got[i] != img[i] && !(img[i] == 0 && got[i] == fillByte) {
			t.Fatalf("target byte %d is %#x, image has %#x", i, got[i], img[i])
		}
	}
	assert.Equal(t, byte(fillByte), got[2<<20], "a hole is not written")

	// An empty regular file target grows to the image's size, holes and all.
	empty := writeFile(t, filepath.Join(dir, "new"), nil)
	_, err = Write(context.Background(), path, empty, Options{SkipHoles: true})
	require.NoError(t, err)
	got, err = os.ReadFile(empty)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(img, got))

	// Without SkipHoles the holes are zeroed: the target is the image.
	rep, err = Write(context.Background(), path, target, Options{})
	require.NoError(t, err)
	assert.Equal(t, ModeFull, rep.Mode)
	assert.False(t, rep.Sparse)
	assert.Equal(t, int64(size), rep.MappedBytes+rep.ZeroedBytes)
	got, err = os.ReadFile(target)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(img, got))
}

func TestHolesMapAsBmaptoolCreateDoes(t *testing.T) {
	bmaptool, err := exec.LookPath("bmaptool")
	if err != nil {
		t.Skip("bmaptool not installed (apt-get install bmap-tools)")
	}
	dir := t.TempDir()
	for i, data := range [][][2]int64{
		{{0, 5000}, {16384, 20480}, {40960, 41060}},
		{{4096, 4097}, {3 << 20, 3<<20 + 8192}},
		{{100, 200}, {1 << 20, 2 << 20}, {2<<20 + 4096, 6 << 20}},
		{{0, 6<<20 + 7}},
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			size := data[len(data)-1][1] + int64(i)*12345
			path := filepath.Join(dir, fmt.Sprintf("img%d", i))
			sparseImage(t, path, size, data)
			out, err := exec.Command(bmaptool, "create", path).Output()
			require.NoError(t, err)
			b, err := ParseBmap(out)
			require.NoError(t, err)
			f, err := os.Open(path)
			require.NoError(t, err)
			defer f.Close()
			ours := holeExtents(f, size)
			if ours == nil { // no holes: one extent, all of it
				ours = []extent{{start: 0, end: size}}
			}
			var theirs, mine [][2]int64
			for _, r := range b.Ranges {
				s, e := b.Bytes(r)
				theirs = append(theirs, [2]int64{s, e})
			}
			for _, e := range ours {
				mine = append(mine, [2]int64{e.start, e.end})
			}
			assert.Equal(t, theirs, mine)
		})
	}
}

func TestVerifyNamesTheRangeAndBothHashes(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("verify"), 10000)
	target := writeFile(t, filepath.Join(dir, "disk"), data)
	good := crcOf(data[4096:8192])
	require.NoError(t, verify(context.Background(), target, []written{{start: 4096, end: 8192, sum: good}}, Options{BufferSize: 1024}))
	// The medium lost a bit after the write.
	data[5000] ^= 0x10
	require.NoError(t, os.WriteFile(target, data, 0o644))
	for _, noDirect := range []bool{false, true} {
		err := verify(context.Background(), target, []written{{start: 0, end: 4096, sum: crcOf(data[:4096])}, {start: 4096, end: 8192, sum: good, name: "bmap range 1-1"}}, Options{BufferSize: 4096, NoDirect: noDirect})
		require.ErrorIs(t, err, ErrVerify)
		require.ErrorIs(t, err, ErrTarget)
		assert.Contains(t, err.Error(), "bytes 4096-8191 of bmap range 1-1")
		assert.Contains(t, err.Error(), fmt.Sprintf("%08x was written", good))
		assert.Contains(t, err.Error(), fmt.Sprintf("crc32c %08x", crcOf(data[4096:8192])))
	}
	// A target shorter than what was written.
	err := verify(context.Background(), target, []written{{start: 0, end: int64(len(data)) + 10, sum: good}}, Options{BufferSize: 4096})
	require.ErrorIs(t, err, ErrVerify)
}

func crcOf(b []byte) uint32 {
	return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))
}

func TestMountedAt(t *testing.T) {
	dir := t.TempDir()
	old, oldSys := mountinfoPath, sysDevBlock
	t.Cleanup(func() { mountinfoPath, sysDevBlock = old, oldSys })
	mountinfoPath = writeFile(t, filepath.Join(dir, "mountinfo"), []byte(`22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw
29 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw
61 29 8:33 / /media/usb\040stick rw,relatime shared:30 - vfat /dev/sdc1 rw
70 29 0:50 / /mnt/by-name rw - fuseblk /dev/sdd rw
`))
	sysDevBlock = filepath.Join(dir, "sys")
	// sdc (8:32) has the partition sdc1 (8:33); sdb (8:16) has sdb1 unmounted.
	for _, p := range []struct{ disk, part, dev string }{{"8:32", "sdc1", "8:33"}, {"8:16", "sdb1", "8:17"}} {
		d := filepath.Join(sysDevBlock, p.disk, p.part)
		require.NoError(t, os.MkdirAll(d, 0o755))
		writeFile(t, filepath.Join(d, "partition"), []byte("1\n"))
		writeFile(t, filepath.Join(d, "dev"), []byte(p.dev+"\n"))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(sysDevBlock, "8:32", "queue"), 0o755))
	for _, c := range []struct {
		target       string
		major, minor uint32
		want         string
	}{
		{"/dev/sda2", 8, 2, "/"},
		{"/dev/sdc", 8, 32, "/media/usb stick"},
		{"/dev/sdb", 8, 16, ""},
		{"/dev/sdd", 8, 48, "/mnt/by-name"}, // by source name only
		{"/dev/sde", 8, 64, ""},
	} {
		got, err := mountedAt(c.target, c.major, c.minor)
		require.NoError(t, err)
		assert.Equal(t, c.want, got, c.target)
	}
	mountinfoPath = filepath.Join(dir, "missing")
	_, err := mountedAt("/dev/sdb", 8, 16)
	require.Error(t, err, "when it cannot tell, it does not guess")
}

func TestWriteUsesODirectWhereTheTargetAllows(t *testing.T) {
	data := testImage()
	dir := t.TempDir()
	img := writeFile(t, filepath.Join(dir, "os.img"), append(data, 1, 2, 3)) // a partial last block
	for _, c := range []struct {
		name, dir string
		noDirect  bool
	}{{"tempdir", t.TempDir(), false}, {"NoDirect", t.TempDir(), true}, {"tmpfs", "/dev/shm", false}} {
		t.Run(c.name, func(t *testing.T) {
			if st, err := os.Stat(c.dir); err != nil || !st.IsDir() {
				t.Skipf("no %s", c.dir)
			}
			tdir, err := os.MkdirTemp(c.dir, "flash")
			require.NoError(t, err)
			defer os.RemoveAll(tdir)
			target := writeFile(t, filepath.Join(tdir, "disk"), make([]byte, 4<<20))
			rep, err := Write(context.Background(), img, target, Options{NoDirect: c.noDirect, SyncEvery: 1 << 20, BufferSize: 100_000})
			require.NoError(t, err)
			t.Logf("O_DIRECT: %v", rep.Direct)
			if c.noDirect {
				assert.False(t, rep.Direct)
			}
			assert.True(t, rep.Verified)
			got, err := os.ReadFile(target)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(append(data, 1, 2, 3), got[:len(data)+3]))
		})
	}
}

func TestWriteCancelSaysHowFarItGot(t *testing.T) {
	dir := t.TempDir()
	img := writeFile(t, filepath.Join(dir, "os.img.zst"), compress(t, Zstd, testImage()))
	target := writeFile(t, filepath.Join(dir, "disk"), make([]byte, 4<<20))
	ctx, cancel := context.WithCancel(context.Background())
	rep, err := Write(ctx, img, target, Options{BufferSize: 64 << 10, ProgressEvery: 64 << 10, Buffers: 2, Progress: func(p Progress) {
		if p.Done >= 1<<20 {
			cancel()
		}
	}})
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, int64(1<<20), rep.Bytes)
	assert.Contains(t, err.Error(), "stopped at image offset 1048576")
	assert.Contains(t, err.Error(), "1048576 bytes written to the target")
	assert.False(t, rep.Verified)

	// Cancelled before it starts: nothing written.
	rep, err = Write(ctx, img, target, Options{})
	require.ErrorIs(t, err, context.Canceled)
	assert.Zero(t, rep.Bytes)
}

func TestWriteSyncsAtTheWatermark(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	img := writeFile(t, filepath.Join(dir, "os.img"), testImage()) // 3 MiB
	target := writeFile(t, filepath.Join(dir, "disk"), make([]byte, 4<<20))
	var syncs []int64
	f := &faults{synced: func(n int64) { syncs = append(syncs, n) }}
	_, err := Write(context.Background(), img, target, Options{BufferSize: 256 << 10, SyncEvery: 1 << 20, faults: f})
	require.NoError(t, err)
	assert.Equal(t, []int64{1 << 20, 2 << 20, 3 << 20, 3 << 20}, syncs, "every MiB, and at the end")

	syncs = nil
	_, err = Write(context.Background(), img, target, Options{SyncEvery: -1, faults: f})
	require.NoError(t, err)
	assert.Equal(t, []int64{3 << 20}, syncs, "only at the end")
}
