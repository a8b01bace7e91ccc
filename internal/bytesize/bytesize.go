// Package bytesize parses human-written byte sizes such as "64MiB" or
// "4096" for the drivers' configuration and tools.
package bytesize

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrSyntax is returned (wrapped) by [Parse] for text that is not a size.
var ErrSyntax = errors.New("invalid size")

// units maps a lower-case suffix to its multiplier. Single letters and the
// IEC forms are binary (as in dd and truncate); "kb", "mb" and "gb" are
// decimal.
var units = map[string]int64{
	"":    1,
	"b":   1,
	"k":   1 << 10,
	"kib": 1 << 10,
	"m":   1 << 20,
	"mib": 1 << 20,
	"g":   1 << 30,
	"gib": 1 << 30,
	"kb":  1000,
	"mb":  1000 * 1000,
	"gb":  1000 * 1000 * 1000,
}

// Parse parses a non-negative size in bytes: a decimal integer optionally
// followed by a unit, e.g. "4096", "512K", "64MiB", "1G" or "10MB". K, M and
// G (and KiB, MiB, GiB) are powers of 1024; KB, MB and GB are powers of 1000.
// Units are case-insensitive. Errors wrap [ErrSyntax].
func Parse(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("%w %q: want a number of bytes, optionally with a unit, like 4096 or 64MiB", ErrSyntax, s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w %q: %w", ErrSyntax, s, err)
	}
	unit := strings.ToLower(strings.TrimSpace(t[i:]))
	mul, ok := units[unit]
	if !ok {
		return 0, fmt.Errorf("%w %q: unknown unit %q; use K, M, G (or KiB, MiB, GiB) for powers of 1024, or KB, MB, GB for powers of 1000", ErrSyntax, s, t[i:])
	}
	if n > math.MaxInt64/mul {
		return 0, fmt.Errorf("%w %q: too large", ErrSyntax, s)
	}
	return n * mul, nil
}

// Format writes n bytes in the largest binary unit that keeps at least one
// whole unit, with one decimal below 10 of it: "512 B", "3.0 KiB", "12 MiB",
// "1.5 GiB". Progress lines use it, so that a small image does not read
// "0/0 MiB".
func Format(n int64) string {
	if n < 0 {
		return "-" + Format(-n)
	}
	if n < 1<<10 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, unit := float64(n), ""
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"} {
		v /= 1024
		unit = u
		if v < 1024 {
			break
		}
	}
	if v < 10 {
		return strconv.FormatFloat(v, 'f', 1, 64) + " " + unit
	}
	return strconv.FormatFloat(v, 'f', 0, 64) + " " + unit
}
