package sample

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWithArtifacts(t *testing.T) {
	t.Attr("dut.name", "sim-0")
	if err := os.WriteFile(filepath.Join(t.ArtifactDir(), "console.log"), []byte("boot\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("sub", func(t *testing.T) {
		t.Attr("dut.name", "sim-0")
		if err := os.WriteFile(filepath.Join(t.ArtifactDir(), "console.log"), []byte("sub\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
}

func TestSkipped(t *testing.T) { t.Skip("no DUT") }
