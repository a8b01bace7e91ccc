package bytesize

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	good := map[string]int64{
		"0":       0,
		"4096":    4096,
		" 12 ":    12,
		"1b":      1,
		"512K":    512 << 10,
		"512k":    512 << 10,
		"64MiB":   64 << 20,
		"64 mib":  64 << 20,
		"1G":      1 << 30,
		"2GiB":    2 << 30,
		"10MB":    10_000_000,
		"3kb":     3000,
		"1GB":     1_000_000_000,
		"8388608": 8 << 20,
	}
	for in, want := range good {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d, nil", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1.5M", "12 parsecs", "1T", "99999999999999999999", "9223372036854775807G"} {
		if got, err := Parse(in); !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) = %d, %v; want an error wrapping ErrSyntax", in, got, err)
		}
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1: "1 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 10: "3.0 KiB", 1536: "1.5 KiB",
		12 << 20: "12 MiB", 3<<30 + 1<<29: "3.5 GiB", 1 << 40: "1.0 TiB", -2048: "-2.0 KiB",
	} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}
