package harness

import (
	"encoding/json"
	"os"
	"strings"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/internal/lock"
)

// uncleanRecord is left beside a DUT's lock file when cleanup could not
// power the DUT off, so that the DUT is not handed on as if it were off: the
// next holder reads it, says so, and powers the DUT off before anything
// else (and fails naming both when that fails too).
type uncleanRecord struct {
	Holder string    `json:"holder"` // who could not power it off
	Error  string    `json:"error"`
	Time   time.Time `json:"time"`
}

// uncleanPath is the record's file beside the lock file lockPath.
func uncleanPath(lockPath string) string {
	return strings.TrimSuffix(lockPath, ".lock") + ".unclean"
}

func markUnclean(lockPath string, h lock.Holder, cause error) error {
	who := h.Test
	if who == "" {
		who = h.Command
	}
	if h.Host != "" {
		who += " on " + h.Host
	}
	b, err := json.Marshal(uncleanRecord{Holder: strings.TrimSpace(who), Error: cause.Error(), Time: time.Now()})
	if err != nil {
		return err
	}
	return os.WriteFile(uncleanPath(lockPath), b, 0o666)
}

// readUnclean returns the record left for the DUT locked at lockPath, or nil.
func readUnclean(lockPath string) *uncleanRecord {
	b, err := os.ReadFile(uncleanPath(lockPath))
	if err != nil {
		return nil
	}
	var r uncleanRecord
	if json.Unmarshal(b, &r) != nil {
		r = uncleanRecord{Holder: "unknown", Error: "unreadable record: " + string(b)}
	}
	return &r
}

func clearUnclean(lockPath string) { _ = os.Remove(uncleanPath(lockPath)) }
