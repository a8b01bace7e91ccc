package benchimage

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestImagesAreReproducibleAndSparseAsSaid(t *testing.T) {
	dir := t.TempDir()
	a, b, s := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "s")
	for _, p := range []string{a, b} {
		if err := Write(p, 10*Chunk, false, "seed"); err != nil {
			t.Fatal(err)
		}
	}
	if err := Write(s, 10*Chunk, true, "seed"); err != nil {
		t.Fatal(err)
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) || len(da) != 10*Chunk {
		t.Fatal("the same seed wrote different images")
	}
	if m, err := Mapped(s); err != nil || m > 3*Chunk {
		t.Errorf("sparse image maps %d bytes (%v), want about 2 chunks", m, err)
	}
	for _, c := range []struct {
		in   string
		want int64
	}{{"1GiB", 1 << 30}, {"256MiB", 256 << 20}, {"64M", 64 << 20}} {
		if got, err := ParseSize(c.in); err != nil || got != c.want || Human(got) == "" {
			t.Errorf("ParseSize(%q) = %d, %v", c.in, got, err)
		}
	}
	for _, bad := range []string{"", "1KiB", "-1MiB", "x"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
	if Human(256<<20) != "256MiB" || Human(1<<30) != "1GiB" {
		t.Error("Human")
	}
}

func TestParseSizeTakesWholeMiB(t *testing.T) {
	for in, want := range map[string]int64{"1GiB": 1 << 30, "512MiB": 512 << 20, "2M": 2 << 20, "1048576": 1 << 20} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "1000", "-1GiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}
