package flash

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// onlyDecoder makes name the one system decoder of format for this test.
func onlyDecoder(t *testing.T, format Format, name string) {
	t.Helper()
	var pick []decoderCmd
	for _, d := range systemDecoders[format] {
		if d.name == name {
			pick = append(pick, d)
		}
	}
	require.Len(t, pick, 1, "no %s decoder %s", format, name)
	old := systemDecoders[format]
	systemDecoders[format] = pick
	t.Cleanup(func() { systemDecoders[format] = old })
}

// bzip2Packed returns data packed by bzip2 -9 (one stream), and by
// pbzip2 (many streams, one per 900 kB block) when it is installed.
func bzip2Packed(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{"bzip2": compress(t, Bzip2, data)}
	if p, err := exec.LookPath("pbzip2"); err == nil {
		cmd := exec.Command(p, "-c", "-b1") // 100 kB blocks: several streams
		cmd.Stdin = bytes.NewReader(data)
		b, err := cmd.Output()
		require.NoError(t, err)
		out["pbzip2"] = b
	}
	return out
}

func TestWriteUnpacksBzip2WithEachCommandOrBuiltIn(t *testing.T) {
	data := testImage()
	for packer, packed := range bzip2Packed(t, data) {
		dir := t.TempDir()
		img := writeFile(t, filepath.Join(dir, "os.img.bz2"), packed)
		for _, dec := range []string{"lbzip2", "pbzip2", "bzip2", "built-in"} {
			t.Run(packer+"/"+dec, func(t *testing.T) {
				o := Options{PureGo: dec == "built-in"}
				if !o.PureGo {
					if _, err := exec.LookPath(dec); err != nil {
						t.Skipf("no %s command (apt-get install %s)", dec, dec)
					}
					onlyDecoder(t, Bzip2, dec)
				}
				target := writeFile(t, filepath.Join(dir, "disk"), make([]byte, 4<<20))
				rep, err := Write(context.Background(), img, target, o)
				require.NoError(t, err)
				if o.PureGo {
					assert.Equal(t, "built-in", rep.Decoder)
				} else {
					assert.Contains(t, rep.Decoder, dec+" -d")
				}
				assert.Equal(t, Bzip2, rep.Format)
				assert.Equal(t, int64(len(data)), rep.Bytes)
				requireImage(t, target, data, 0)
				assert.True(t, rep.Verified)
			})
		}
	}
}

func TestTheFirstBzip2CommandOnPathIsUsed(t *testing.T) {
	img, target := imageAndTarget(t, "os.img")
	packed := writeFile(t, img+".bz2", compress(t, Bzip2, mustRead(t, img)))
	rep, err := Write(context.Background(), packed, target, Options{})
	require.NoError(t, err)
	want := "built-in"
	for _, d := range systemDecoders[Bzip2] {
		if p, err := exec.LookPath(d.name); err == nil {
			want = p + " -d"
			break
		}
	}
	assert.Equal(t, want, rep.Decoder)
	if os.Getenv("CI") == "true" {
		assert.Contains(t, rep.Decoder, "lbzip2", "CI installs lbzip2 (testfixtures/qemuimage/deps.sh)")
	}
}

func TestACorruptBzip2ImageFailsNamingIt(t *testing.T) {
	data := testImage()
	packed := compress(t, Bzip2, data)
	dir := t.TempDir()
	truncated := writeFile(t, filepath.Join(dir, "truncated.bz2"), packed[:len(packed)/2])
	bad := bytes.Clone(packed)
	for i := len(bad) / 2; i < len(bad)/2+64; i++ {
		bad[i] ^= 0x5a
	}
	corrupt := writeFile(t, filepath.Join(dir, "corrupt.bz2"), bad)
	for _, dec := range []string{"lbzip2", "pbzip2", "bzip2", "built-in"} {
		for _, img := range []string{truncated, corrupt} {
			t.Run(dec+"/"+filepath.Base(img), func(t *testing.T) {
				o := Options{PureGo: dec == "built-in"}
				if !o.PureGo {
					if _, err := exec.LookPath(dec); err != nil {
						t.Skipf("no %s command", dec)
					}
					onlyDecoder(t, Bzip2, dec)
				}
				target := writeFile(t, filepath.Join(t.TempDir(), "disk"), make([]byte, 4<<20))
				rep, err := Write(context.Background(), img, target, o)
				require.ErrorIs(t, err, ErrImage)
				require.NotErrorIs(t, err, ErrTarget)
				assert.Contains(t, err.Error(), img+": the bzip2-compressed stream is corrupt or truncated")
				if !o.PureGo {
					assert.Contains(t, err.Error(), dec+" said", "the command's own words")
				}
				assert.False(t, rep.Verified)
				assert.Empty(t, children(t), "the decoder is gone")
			})
		}
	}
}

func TestWriteCancelledWhileBzip2CommandRunsKillsIt(t *testing.T) {
	if _, err := os.Stat("/proc/self/task"); err != nil {
		t.Skip("needs /proc")
	}
	data := bytes.Repeat(testImage(), 4) // 12 MiB
	packed := compress(t, Bzip2, data)
	dir := t.TempDir()
	img := writeFile(t, filepath.Join(dir, "os.img.bz2"), packed)
	for _, dec := range []string{"lbzip2", "pbzip2", "bzip2"} {
		t.Run(dec, func(t *testing.T) {
			if _, err := exec.LookPath(dec); err != nil {
				t.Skipf("no %s command", dec)
			}
			onlyDecoder(t, Bzip2, dec)
			target := writeFile(t, filepath.Join(t.TempDir(), "disk"), make([]byte, 16<<20))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var during, cmdlines []string
			rep, err := Write(ctx, img, target, Options{BufferSize: 256 << 10, Buffers: 1, ProgressEvery: 1 << 20, Progress: func(p Progress) {
				if during == nil {
					during = children(t)
					for _, pid := range during {
						if b, err := os.ReadFile("/proc/" + pid + "/cmdline"); err == nil {
							cmdlines = append(cmdlines, strings.ReplaceAll(string(b), "\x00", " "))
						}
					}
					cancel()
				}
			}})
			require.ErrorIs(t, err, context.Canceled)
			require.NotErrorIs(t, err, ErrImage, "a cancel is not the image's fault")
			assert.NotEmpty(t, during, "%s ran as a child process", dec)
			assert.Contains(t, strings.Join(cmdlines, "|"), dec, "the child was %s", dec)
			assert.Empty(t, children(t), "the %s process is gone when Write returns", dec)
			assert.Contains(t, err.Error(), fmt.Sprintf("stopped at image offset %d (unpacked)", rep.Bytes))
			assert.Less(t, rep.Bytes, int64(len(data)))
		})
	}
}
