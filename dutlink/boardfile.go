package dutlink

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/jumpstarter-dev/jumpstarter-go/internal/atomicfile"
)

// HostKeys are the config keys this host keeps about a board, in its own
// file (<ConfigDir>/<serial>.json), whatever the transport: the board's
// flash cannot hold them, or cannot be read over USB.
//
//   - storage_filter: a substring of the /dev/disk/by-id name of the
//     board's own storage stick (best its serial), which is how the disk
//     of a board on a root port is told from every other disk.
var HostKeys = []string{"storage_filter"}

// hostConfig is what this host keeps about one board.
type hostConfig struct {
	StorageFilter string `json:"storage_filter,omitempty"`
}

func hostConfigPath(dir, serial string) string { return filepath.Join(dir, serial+".json") }

// loadHostConfig reads what this host keeps about the board; a missing
// file is an empty config, a corrupt one an error naming it.
func loadHostConfig(dir, serial string) (hostConfig, error) {
	var hc hostConfig
	if dir == "" {
		return hc, nil
	}
	p := hostConfigPath(dir, serial)
	b, err := os.ReadFile(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return hc, nil
	case err != nil:
		return hc, fmt.Errorf("reading this host's config of board %s: %w", serial, err)
	}
	if err := json.Unmarshal(b, &hc); err != nil {
		return hc, fmt.Errorf("%w: %s is not valid JSON (%w): fix or remove it, then set the board's storage_filter again", ErrBadConfig, p, err)
	}
	return hc, nil
}

// saveHostConfig stores what this host keeps about the board, atomically.
func saveHostConfig(dir, serial string, hc hostConfig) error {
	if dir == "" {
		return fmt.Errorf("%w: no directory for this host's board config: set %s", ErrBadConfig, EnvConfigDir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("storing this host's config of board %s: %w", serial, err)
	}
	b, err := json.MarshalIndent(hc, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(hostConfigPath(dir, serial), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("storing this host's config of board %s: %w", serial, err)
	}
	return nil
}
