package dutlink

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

// FieldSizes are the sizes of the board's config fields in flash, in bytes.
var FieldSizes = map[string]int{
	"name": 64, "tags": 256, "usb_console": 64, "json": 512,
	"power_on": 32, "power_off": 32, "power_rescue": 32,
}

// ConfigKeys lists the keys SetConfig accepts, in the firmware's order.
var ConfigKeys = []string{"name", "tags", "usb_console", "power_on", "power_off", "power_rescue", "json"}

var (
	nameRe     = regexp.MustCompile(`^[A-Za-z0-9._-]*$`)
	seqTokenRe = regexp.MustCompile(`^(?i:[abcdr][hlz]|w[0-9]+|p[01])$`)
)

// ValidatePowerSequence checks a power sequence: comma-separated tokens,
// each a pin (a, b, c, d or r) followed by a level (h, l or z), wN (wait N
// times 100 ms), p1 or p0 (DUT power on or off). The empty sequence means a
// plain power switch.
func ValidatePowerSequence(seq string) error {
	if seq == "" {
		return nil
	}
	for i, tok := range strings.Split(seq, ",") {
		if !seqTokenRe.MatchString(tok) {
			return fmt.Errorf("%w: power sequence %q: token %d (%q) is not a pin and level (e.g. bL, rZ), a wait (w5 = 500 ms) or p1/p0", ErrBadConfig, seq, i+1, tok)
		}
	}
	return nil
}

// NormalizeConfig checks value for key against what the firmware can store
// and carry, and returns it in the form the board stores (tags without
// spaces, JSON compacted). The error wraps ErrBadConfig and says what is
// wrong.
func NormalizeConfig(key, value string) (string, error) {
	size, ok := FieldSizes[key]
	if !ok {
		return "", fmt.Errorf("%w: unknown key %q: the keys are %s", ErrBadConfig, key, strings.Join(ConfigKeys, ", "))
	}
	for _, r := range value {
		if r < 0x20 || r > 0x7e {
			return "", fmt.Errorf("%w: %s=%q holds %q; use printable ASCII", ErrBadConfig, key, value, r)
		}
	}
	switch key {
	case "name":
		if !nameRe.MatchString(value) {
			return "", fmt.Errorf("%w: name %q: use letters, digits, '.', '_' and '-' only (empty resets it to jp-<serial>)", ErrBadConfig, value)
		}
	case "tags":
		tags, err := driver.ParseTags(value)
		if err != nil {
			return "", fmt.Errorf("%w: tags: %w", ErrBadConfig, err)
		}
		value = strings.Join(tags, ",")
	case "power_on", "power_off", "power_rescue":
		if err := ValidatePowerSequence(value); err != nil {
			return "", err
		}
	case "json":
		if value != "" {
			var buf bytes.Buffer
			if err := json.Compact(&buf, []byte(value)); err != nil {
				return "", fmt.Errorf("%w: json %q is not valid JSON: %w", ErrBadConfig, value, err)
			}
			value = buf.String()
		}
	}
	if strings.ContainsAny(value, " \t") {
		return "", fmt.Errorf("%w: %s=%q holds white space; the board stores one token without spaces", ErrBadConfig, key, value)
	}
	if len(value) > size {
		return "", fmt.Errorf("%w: %s is %d bytes long but the board stores at most %d; shorten it", ErrBadConfig, key, len(value), size)
	}
	return value, nil
}

// storageFilterOf returns the storage_filter of the board's json config.
func storageFilterOf(js string) string {
	if js == "" {
		return ""
	}
	var v struct {
		StorageFilter string `json:"storage_filter"`
	}
	if json.Unmarshal([]byte(js), &v) != nil {
		return ""
	}
	return v.StorageFilter
}
