package dutlink

import (
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/jumpstarter-dev/jumpstarter-go/internal/atomicfile"
)

// saveState remembers a board's config in dir (atomically); failures only
// cost the fallback it provides.
func saveState(dir, serial string, cfg map[string]string) {
	if dir == "" || serial == "" {
		return
	}
	b, err := json.Marshal(cfg)
	if err != nil || os.MkdirAll(dir, 0o755) != nil {
		return
	}
	_ = atomicfile.WriteFile(filepath.Join(dir, serial+".json"), b, 0o644)
}

// loadState returns the config remembered for a board, or nil.
func loadState(dir, serial string) map[string]string {
	if dir == "" || serial == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(dir, serial+".json"))
	if err != nil {
		return nil
	}
	var cfg map[string]string
	if json.Unmarshal(b, &cfg) != nil || cfg == nil {
		return nil
	}
	return cfg
}
