package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1GiB": 1 << 30, "512MiB": 512 << 20, "2M": 2 << 20, "1048576": 1 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "1KiB", "-1GiB", "x"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

func TestMedian(t *testing.T) {
	m := median([]sample{{wall: 3 * time.Second}, {wall: time.Second}, {wall: 2 * time.Second}})
	if m.wall != 2*time.Second {
		t.Errorf("median = %v", m.wall)
	}
}

func TestWriteImageSparse(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.img")
	if err := writeImage(p, 10<<20, true); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Size() != 10<<20 {
		t.Fatalf("size %v, %v", st, err)
	}
	b, _ := os.ReadFile(p)
	if b[chunk+100] != 0 || b[5*chunk+chunk-1] == 0 && b[5*chunk+chunk-2] == 0 {
		t.Errorf("unexpected content layout")
	}
}
