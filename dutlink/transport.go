package dutlink

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

// powerAction is a power command; its value is the USB wValue.
type powerAction uint16

const (
	powerOff powerAction = iota
	powerOn
	powerForceOff
	powerForceOn
	powerRescue
)

var powerWords = [...]string{"off", "on", "force-off", "force-on", "rescue"}
var powerReplies = [...]string{"Device powered off", "Device powered on", "Device forced off", "Device forced on", "Device powered on to rescue"}

func (a powerAction) String() string { return powerWords[a] }

// storageValue is the USB wValue of a storage mode.
func storageValue(m driver.StorageMode) (uint16, string, string, error) {
	switch m {
	case driver.StorageOff:
		return 0, "off", "storage disconnected", nil
	case driver.StorageHost:
		return 1, "host", "storage connected to host", nil
	case driver.StorageDUT:
		return 2, "dut", "storage connected to device under test", nil
	}
	return 0, "", "", driver.Refine(driver.ErrInvalidArgument, fmt.Sprintf("unknown storage mode %q: use off, host or dut", m))
}

// The board's pins, in USB wValue order, with their shell letters and the
// names the shell prints.
var (
	pinNames      = []string{"reset", "a", "b", "c", "d"}
	pinLetters    = []string{"r", "a", "b", "c", "d"}
	pinShellNames = []string{"/RESET", "CTL_A", "CTL_B", "CTL_C", "CTL_D"}
)

func pinIndex(name string) (int, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	for i, p := range pinNames {
		if n == p || n == pinLetters[i] {
			return i, nil
		}
	}
	return 0, driver.Refine(driver.ErrInvalidArgument, fmt.Sprintf("unknown pin %q: the pins are %s", name, strings.Join(pinNames, ", ")))
}

// levelValue returns the USB data byte, shell letter and shell name of a
// pin level.
func levelValue(l driver.PinLevel) (byte, string, string, error) {
	switch l {
	case driver.PinLow:
		return 0, "l", "LOW", nil
	case driver.PinHigh:
		return 1, "h", "HIGH", nil
	case driver.PinFloating:
		return 2, "z", "HIGH IMPEDANCE", nil
	}
	return 0, "", "", driver.Refine(driver.ErrInvalidArgument, fmt.Sprintf("unknown pin level %q: use low, high or z", l))
}

// transport is one of the board's control protocols.
type transport interface {
	kind() TransportKind
	// power runs a power action and returns once its sequence has run,
	// with the moment the DUT's power switched (the sequence's last p0 or
	// p1), as closely as the transport can tell.
	power(ctx context.Context, a powerAction) (time.Time, error)
	storage(ctx context.Context, m driver.StorageMode) error
	setPin(ctx context.Context, pin int, l driver.PinLevel) error
	// config reads every config key the transport can read; cut lists
	// keys the board has but could not send (see shellTransport.config).
	config(ctx context.Context) (cfg map[string]string, cut []string, err error)
	setConfig(ctx context.Context, key, value string) error
	meter(ctx context.Context) (driver.PowerReading, error)
	version(ctx context.Context) (string, error)
}

// parseMeterUSB parses "%.2fW %.2fV %.2fA".
func parseMeterUSB(s string) (driver.PowerReading, error) {
	return parseMeter(s, map[byte]int{'W': 0, 'V': 1, 'A': 2})
}

// parseMeterShell parses "<A>A <V>V <W>W".
func parseMeterShell(s string) (driver.PowerReading, error) {
	return parseMeter(s, map[byte]int{'A': 0, 'V': 1, 'W': 2})
}

func parseMeter(s string, order map[byte]int) (driver.PowerReading, error) {
	f := strings.Fields(strings.TrimRight(s, "\x00 \r\n"))
	if len(f) != 3 {
		return driver.PowerReading{}, fmt.Errorf("%w: meter reading %q is not three values", ErrReply, s)
	}
	var r driver.PowerReading
	for _, tok := range f {
		unit := tok[len(tok)-1]
		pos, ok := order[unit]
		if !ok || len(tok) < 2 {
			return driver.PowerReading{}, fmt.Errorf("%w: meter reading %q: bad value %q", ErrReply, s, tok)
		}
		v, err := strconv.ParseFloat(tok[:len(tok)-1], 64)
		if err != nil {
			return driver.PowerReading{}, fmt.Errorf("%w: meter reading %q: bad value %q", ErrReply, s, tok)
		}
		if f[pos] != tok {
			return driver.PowerReading{}, fmt.Errorf("%w: meter reading %q: values out of order", ErrReply, s)
		}
		switch unit {
		case 'W':
			r.Watts = v
		case 'V':
			r.Volts = v
		case 'A':
			r.Amps = v
		}
	}
	return r, nil
}

// powerSequence returns the sequence the board runs for a: the configured
// one from cfg, or the plain switch.
func powerSequence(a powerAction, cfg map[string]string) string {
	var seq string
	switch a {
	case powerOff:
		seq = cfg["power_off"]
	case powerOn:
		seq = cfg["power_on"]
	case powerRescue:
		seq = cfg["power_rescue"]
	}
	if seq != "" {
		return seq
	}
	if a == powerOff || a == powerForceOff {
		return "p0"
	}
	return "p1"
}

// sequenceWaits returns the time the waits (wN) of seq take in all, and
// the part of it after the last cut token (p0 for the off actions, p1 for
// the others): the time from the real switch to the sequence's end. A
// sequence without it (power_off=p1,bL,w110,bZ: a long press of the DUT's
// own button) switches at its end, as far as the driver can tell.
func sequenceWaits(seq, cut string) (total, afterSwitch time.Duration) {
	seen := false
	for _, tok := range strings.Split(strings.ToLower(seq), ",") {
		switch {
		case tok == cut:
			afterSwitch, seen = 0, true
		case len(tok) > 1 && tok[0] == 'w':
			n, err := strconv.Atoi(tok[1:])
			if err != nil {
				continue
			}
			d := time.Duration(n) * 100 * time.Millisecond
			total += d
			afterSwitch += d
		}
	}
	if !seen {
		afterSwitch = 0
	}
	return total, afterSwitch
}

// cutToken is the sequence token that switches the DUT's power the way a
// goes: p0 for off, p1 for on.
func (a powerAction) cutToken() string {
	if a == powerOff || a == powerForceOff {
		return "p0"
	}
	return "p1"
}
