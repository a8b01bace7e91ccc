package dutlinksim

import (
	"slices"
	"strconv"
	"strings"
	"time"
)

// sequence returns the token list that power action a (0 off, 1 on, 2
// force off, 3 force on, 4 rescue) runs with config cfg; an empty
// sequence is plain power off or on.
func sequence(a int, cfg map[string]string) string {
	plain := []string{"p0", "p1", "p0", "p1", "p1"}
	key := map[int]string{0: "power_off", 1: "power_on", 4: "power_rescue"}[a]
	if seq := cfg[key]; key != "" && seq != "" {
		return seq
	}
	return plain[a]
}

// runSequence runs a power sequence token by token: pins, waits of N x
// 100 ms and power. Only a reboot or unplug (not the host) stops it.
func (b *Board) runSequence(seq string) {
	b.mu.Lock()
	abort := b.abort
	b.mu.Unlock()
	for _, tok := range strings.Split(seq, ",") {
		select {
		case <-abort:
			return
		default:
		}
		if !b.runToken(strings.ToLower(tok), abort) {
			return
		}
	}
}

// runToken runs one token; false when a wait was cut short by abort.
func (b *Board) runToken(tok string, abort <-chan struct{}) bool {
	if len(tok) >= 2 && tok[0] == 'w' {
		n, _ := strconv.Atoi(tok[1:])
		d := time.Duration(n) * 100 * time.Millisecond
		b.mu.Lock()
		b.event("wait %v", d)
		b.mu.Unlock()
		return wait(d, abort)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case tok == "p1" || tok == "p0":
		b.setPowerLocked(tok == "p1")
	case len(tok) == 2 && slices.Contains(pinLetters, tok[:1]) && strings.Contains("lhz", tok[1:]):
		b.setPinLocked(slices.Index(pinLetters, tok[:1]), tok[1:])
	}
	return true
}

// wait sleeps for d; false when abort closes first.
func wait(d time.Duration, abort <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-abort:
		return false
	}
}

// meter returns watts, volts and amps: 5 V, 0.6 A while powered.
func (b *Board) meter() (w, v, a float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.meterLocked()
}

func (b *Board) meterLocked() (w, v, a float64) {
	if !b.power {
		return 0, 0, 0
	}
	return 3.0, 5.0, 0.6
}

func (b *Board) setPinLocked(i int, level string) {
	b.pins[i] = level
	b.event("pin %s %s", pinLetters[i], level)
}

// setPowerLocked switches the DUT's power, logging the change; at
// power-on the DUT boots and prints its banner after BootDelay.
func (b *Board) setPowerLocked(on bool) {
	if b.power == on {
		return
	}
	b.power = on
	b.powerGen++
	b.powerLog = append(b.powerLog, PowerChange{At: time.Now(), On: on})
	if on {
		b.event("power on")
		b.scheduleBanner(b.powerGen)
		return
	}
	b.event("power off")
	for i, l := range b.pins {
		if l == "h" {
			b.pins[i] = "z" // anything not low or z floats without power
		}
	}
}

func (b *Board) scheduleBanner(gen int) {
	time.AfterFunc(b.o.BootDelay, func() {
		b.mu.Lock()
		still := b.power && b.powerGen == gen && !b.gone
		b.mu.Unlock()
		if still {
			b.uart([]byte("DUT " + b.serial + ": booted\r\n"))
		}
	})
}

// losePowerLocked cuts the DUT's power as a reboot or unplug of the
// board does, logging it when the DUT was powered.
func (b *Board) losePowerLocked() {
	b.powerGen++
	if !b.power {
		return
	}
	b.power = false
	b.powerLog = append(b.powerLog, PowerChange{At: time.Now(), On: false})
}
