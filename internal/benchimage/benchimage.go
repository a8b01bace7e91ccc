// Package benchimage makes the images the benchmark programs flash
// (cmd/flashbench, cmd/remotebench) and the small tools around them: sizes
// as flags give them, the page cache dropped between runs, how much of a
// file is mapped. Every image is reproducible from its seed.
package benchimage

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Chunk is the unit of image content: each chunk is half pseudo-random
// (incompressible) and half repetitive text.
const Chunk = 1 << 20

// Write writes a raw image of size bytes at path: every chunk of content
// when dense, else one chunk every 5 (the rest left as holes by seeking
// past them), so that about 20 % is mapped. seed makes the content: the
// same seed, the same bytes.
func Write(path string, size int64, sparse bool, seed string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	var s [32]byte
	copy(s[:], seed)
	if sparse {
		s[31] = 1
	}
	rng := rand.NewChaCha8(s)
	buf := make([]byte, Chunk)
	for i := int64(0); i*Chunk < size; i++ {
		if sparse && i%5 != 0 {
			continue
		}
		fill(buf, rng, i)
		if _, err := f.WriteAt(buf[:min(Chunk, size-i*Chunk)], i*Chunk); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// fill makes chunk i's content.
func fill(p []byte, rng *rand.ChaCha8, i int64) {
	half := len(p) / 2
	rng.Read(p[:half])
	line := fmt.Sprintf("block %08d: the quick brown fox jumps over the lazy dog; ", i)
	for j := half; j < len(p); j += copy(p[j:], line) {
	}
}

// Mapped returns how many bytes of the file at path are allocated on disk.
func Mapped(path string) (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}

// DropCaches syncs and asks the kernel to drop the page cache (root
// only).
func DropCaches() error {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
}

// ParseSize parses a size of whole MiB: "1GiB", "256MiB", "1G", "64M".
func ParseSize(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"G", 1 << 30}, {"M", 1 << 20}} {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<50)/mult || (n*mult)%(1<<20) != 0 {
		return 0, fmt.Errorf("bad size %q: want a multiple of 1 MiB such as 1GiB or 256MiB", s)
	}
	return n * mult, nil
}

// Human renders a size as ParseSize reads it.
func Human(n int64) string {
	switch {
	case n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dB", n)
}
