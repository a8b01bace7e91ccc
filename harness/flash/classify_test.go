package flash

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The harness tells the user's problems (ErrImage, ErrBmap: fix the image
// or its bmap) from the lab's (ErrTarget: fix the DUT's storage). Every
// failure must be exactly one of them, a cancel neither.

type class int

const (
	imageClass  class = iota // wraps ErrImage (and maybe ErrBmap, ErrTooBig), not ErrTarget
	bmapClass                // wraps ErrImage and ErrBmap, not ErrTarget
	targetClass              // wraps ErrTarget, not ErrImage
	cancelClass              // wraps context.Canceled, neither
)

// classCase makes one failing flash: it returns the image, target and
// options; dir is its own directory.
type classCase struct {
	name  string
	class class
	want  string // in the message
	setup func(t *testing.T, dir string, cancel context.CancelFunc) (image, target string, o Options)
}

func TestEveryErrorIsTheImagesOrTheTargets(t *testing.T) {
	t.Parallel()
	data := testImage() // 3 MiB
	target4M := func(t *testing.T, dir string) string {
		return writeFile(t, filepath.Join(dir, "disk"), make([]byte, 4<<20))
	}
	raw := func(t *testing.T, dir string) string { return writeFile(t, filepath.Join(dir, "os.img"), data) }
	packed := func(t *testing.T, dir string, f Format, edit func([]byte) []byte) string {
		return writeFile(t, filepath.Join(dir, "os.img."+string(f)), edit(compress(t, f, data)))
	}
	truncated := func(b []byte) []byte { return b[:len(b)*2/3] }
	corrupt := func(b []byte) []byte {
		b = bytes.Clone(b)
		for i := len(b) / 2; i < len(b)/2+64; i++ {
			b[i] ^= 0x5a
		}
		return b
	}
	stream := func(f Format, edit func([]byte) []byte, pureGo bool) func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
		return func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			return packed(t, dir, f, edit), target4M(t, dir), Options{PureGo: pureGo}
		}
	}
	withBmap := func(doc func() string) func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
		return func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			img := raw(t, dir)
			writeFile(t, img+".bmap", []byte(doc()))
			return img, target4M(t, dir), Options{}
		}
	}
	ranges := [][2]int64{{0, 10}, {100, 200}}
	cases := []classCase{
		{"no image path", imageClass, "set DUT_IMAGE", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			return "", target4M(t, dir), Options{}
		}},
		{"missing image", imageClass, "does not exist", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			return filepath.Join(dir, "nope.img"), target4M(t, dir), Options{}
		}},
		{"image is a directory", imageClass, "not a regular file", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			return dir, target4M(t, dir), Options{}
		}},
		{"empty image", imageClass, "is empty", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			return writeFile(t, filepath.Join(dir, "empty.img"), nil), target4M(t, dir), Options{}
		}},
		{"bzip2 magic, then garbage", imageClass, "corrupt or truncated", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			return writeFile(t, filepath.Join(dir, "x.bz2"), append([]byte("BZh9"), bytes.Repeat([]byte("junk"), 100)...)), target4M(t, dir), Options{}
		}},
		{"gzip magic, then garbage", imageClass, "", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			return writeFile(t, filepath.Join(dir, "x.gz"), append([]byte{0x1f, 0x8b}, bytes.Repeat([]byte("junk"), 100)...)), target4M(t, dir), Options{}
		}},
		{"xz magic, then garbage", imageClass, "corrupt or truncated", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			return writeFile(t, filepath.Join(dir, "x.xz"), append([]byte{0xfd, '7', 'z', 'X', 'Z', 0}, bytes.Repeat([]byte("junk"), 100)...)), target4M(t, dir), Options{}
		}},
		{"truncated gzip", imageClass, "corrupt or truncated", stream(Gzip, truncated, false)},
		{"corrupt gzip", imageClass, "", stream(Gzip, corrupt, false)},
		{"truncated zstd", imageClass, "corrupt or truncated", stream(Zstd, truncated, false)},
		{"corrupt zstd", imageClass, "", stream(Zstd, corrupt, false)},
		{"truncated xz, command", imageClass, "corrupt or truncated", stream(Xz, truncated, false)},
		{"truncated xz, built-in", imageClass, "corrupt or truncated", stream(Xz, truncated, true)},
		{"truncated bzip2, command", imageClass, "corrupt or truncated", stream(Bzip2, truncated, false)},
		{"truncated bzip2, built-in", imageClass, "corrupt or truncated", stream(Bzip2, truncated, true)},
		{"corrupt bzip2, command", imageClass, "corrupt or truncated", stream(Bzip2, corrupt, false)},
		{"corrupt bzip2, built-in", imageClass, "corrupt or truncated", stream(Bzip2, corrupt, true)},
		{"raw image too big", imageClass, "too big for this DUT's disk", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			return raw(t, dir), writeFile(t, filepath.Join(dir, "disk"), make([]byte, 1<<20)), Options{}
		}},
		{"zstd image too big", imageClass, "too big for this DUT's disk", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			return packed(t, dir, Zstd, func(b []byte) []byte { return b }), writeFile(t, filepath.Join(dir, "disk"), make([]byte, 1<<20)), Options{}
		}},
		{"image changes while flashed", imageClass, "changed while it was flashed", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			img := raw(t, dir)
			changed := false
			return img, target4M(t, dir), Options{BufferSize: 64 << 10, ProgressEvery: 64 << 10, NoHashCache: true, Progress: func(p Progress) {
				if !changed && p.Done > 0 {
					changed = true
					require.NoError(t, os.Truncate(img, 1<<20))
				}
			}}
		}},
		{"bmap not XML", bmapClass, "not a bmap XML document", withBmap(func() string { return "<bmap" })},
		{"bmap with a wrong own checksum", bmapClass, "own sha256 checksum is wrong", withBmap(func() string {
			return strings.Replace(bmapDoc(data, 4096, ranges, "2.0", ""), "\"> 100-200 <", "\"> 101-200 <", 1)
		})},
		{"bmap of another image", bmapClass, "belongs to another image", withBmap(func() string {
			return bmapDoc(append(bytes.Clone(data), 1), 4096, ranges, "2.0", "")
		})},
		{"range not matching its bmap", imageClass, "does not match its bmap", withBmap(func() string {
			other := bytes.Clone(data)
			other[150*4096] ^= 1
			return bmapDoc(other, 4096, ranges, "2.0", "")
		})},
		{"missing Options.Bmap", bmapClass, "no such file", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			return raw(t, dir), target4M(t, dir), Options{Bmap: filepath.Join(dir, "nope.bmap")}
		}},

		{"missing target", targetClass, "no such file", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			return raw(t, dir), filepath.Join(dir, "nodisk"), Options{}
		}},
		{"target is a directory", targetClass, "neither a block device nor a regular file", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			return raw(t, dir), dir, Options{}
		}},
		{"target is a character device", targetClass, "neither a block device nor a regular file", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			return raw(t, dir), os.DevNull, Options{}
		}},
		{"not the DUT's disk", targetClass, "is not this device's disk", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			return raw(t, dir), target4M(t, dir), Options{CheckTarget: func(*os.File) error { return errors.New("wrong serial") }}
		}},
		{"write fails (EIO)", targetClass, "the disk went away or failed", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			eio := func(off int64, n int) error { return &os.PathError{Op: "write", Path: "disk", Err: syscall.EIO} }
			return raw(t, dir), target4M(t, dir), Options{faults: &faults{write: eio}}
		}},
		{"write fails on a compressed image (EIO)", targetClass, "the disk went away or failed", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			eio := func(off int64, n int) error { return &os.PathError{Op: "write", Path: "disk", Err: syscall.EIO} }
			return packed(t, dir, Bzip2, func(b []byte) []byte { return b }), target4M(t, dir), Options{faults: &faults{write: eio}}
		}},
		{"read-back differs", targetClass, "read back with crc32c", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			flip := func(p []byte, off int64) { p[0] ^= 1 }
			return raw(t, dir), target4M(t, dir), Options{faults: &faults{readBack: flip}}
		}},
		{"zeroing fails", targetClass, "zeroing", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			path, _ := holeyImage(t, dir, 0)
			eio := func(int64, int64) (bool, error) { return false, syscall.EIO }
			return path, target4M(t, dir), Options{faults: &faults{zero: eio}}
		}},
		{"zeroed range reads back non-zero", targetClass, "does not zero reliably", func(t *testing.T, dir string, _ context.CancelFunc) (string, string, Options) {
			path, _ := holeyImage(t, dir, 0)
			lie := func(int64, int64) (bool, error) { return true, nil }
			return path, filled(t, filepath.Join(dir, "disk"), 4<<20, 0xff), Options{faults: &faults{zero: lie}}
		}},

		{"cancelled while a decoder command runs", cancelClass, "stopped at image offset", func(t *testing.T, dir string, cancel context.CancelFunc) (string, string, Options) {
			return packed(t, dir, Bzip2, func(b []byte) []byte { return b }), target4M(t, dir), Options{BufferSize: 64 << 10, ProgressEvery: 64 << 10, Buffers: 1, Progress: cancelAt(cancel, 64<<10)}
		}},
		{"cancelled while holes are zeroed", cancelClass, "must be flashed again", func(t *testing.T, dir string, cancel context.CancelFunc) (string, string, Options) {
			path, _ := holeyImage(t, dir, 0)
			return path, target4M(t, dir), Options{BufferSize: 64 << 10, ProgressEvery: 64 << 10, Progress: cancelAt(cancel, 1<<20)}
		}},
	}
	cases = append(cases, blockClassCases()...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			image, target, o := c.setup(t, t.TempDir(), cancel)
			o.NoHashCache = true
			_, err := Write(ctx, image, target, o)
			require.Error(t, err)
			if c.want != "" {
				assert.Contains(t, err.Error(), c.want)
			}
			img, bm, tg := errors.Is(err, ErrImage), errors.Is(err, ErrBmap), errors.Is(err, ErrTarget)
			switch c.class {
			case imageClass:
				assert.True(t, img && !tg, "the image's problem: want ErrImage and not ErrTarget: %v", err)
			case bmapClass:
				assert.True(t, img && bm && !tg, "the bmap's problem: want ErrImage, ErrBmap and not ErrTarget: %v", err)
			case targetClass:
				assert.True(t, tg && !img && !bm, "the target's problem: want ErrTarget and not ErrImage: %v", err)
			case cancelClass:
				require.ErrorIs(t, err, context.Canceled)
				assert.True(t, !img && !tg, "a cancel is neither's problem: %v", err)
			}
			if errors.Is(err, ErrTooBig) {
				assert.True(t, img, "ErrTooBig comes with ErrImage")
			}
		})
	}
}

// cancelAt returns a Progress func that cancels once Done reaches n.
func cancelAt(cancel context.CancelFunc, n int64) func(Progress) {
	return func(p Progress) {
		if p.Done >= n {
			cancel()
		}
	}
}
