package dutlinksim

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
)

// vendorInterface is the vendor interface's number (firmware 0.08 on).
const vendorInterface = 3

// Request types of the vendor interface: Vendor | Recipient Interface.
const (
	reqOut = 0x41
	reqIn  = 0xC1
)

// errStall looks like gousb's stall error and wraps dutlink.ErrStall.
var errStall = fmt.Errorf("libusb: pipe error [code -9]: %w", dutlink.ErrStall)

// errNoDevice looks like gousb's error for an unplugged device.
var errNoDevice = fmt.Errorf("libusb: no device [code -4]: %w", dutlink.ErrGone)

// openUSB opens the board's vendor interface.
func (b *Board) openUSB() (dutlink.Controller, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gone {
		return nil, errNoDevice
	}
	if !b.hasVendorInterface() {
		return nil, fmt.Errorf("board %s has no vendor interface: %w", b.serial, dutlink.ErrNoUSB)
	}
	return &usbHandle{b: b}, nil
}

// usbHandle is the vendor interface of a board, as the USB transport sees
// it through dutlink.Controller.
type usbHandle struct {
	b      *Board
	closed bool
}

// Control handles one vendor control request as the firmware does. It
// first waits for the board's previous request or action to finish (or
// for ctx to end). An IN request's data is served at once; an OUT
// request's transfer completes as soon as the firmware has latched it,
// and its action runs afterwards, holding the firmware until it is done.
func (h *usbHandle) Control(ctx context.Context, rType, request uint8, val, idx uint16, data []byte) (int, error) {
	b := h.b
	if h.closed {
		return 0, errors.New("dutlinksim: control transfer on a closed handle")
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := b.lockCtx(ctx); err != nil {
		return 0, fmt.Errorf("dutlinksim: waiting for the board's previous request: %w", err)
	}
	if err := b.usbState(); err != nil {
		b.unlock()
		return 0, err
	}
	switch {
	case rType != reqOut && rType != reqIn:
		b.unlock()
		return 0, errStall
	case idx != vendorInterface:
		b.unlock()
		return 0, nil // requests to other interfaces are ignored
	case rType == reqIn:
		defer b.unlock()
		return b.controlIn(request, val, data)
	}
	n, action, err := b.latchOut(request, val, data)
	if err != nil {
		b.unlock()
		return 0, err
	}
	b.runLatched(action)
	return n, nil
}

// Close releases the handle.
func (h *usbHandle) Close() error { h.closed = true; return nil }

// usbState is the error every transfer gets from an unplugged or failing
// board.
func (b *Board) usbState() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.gone:
		return errNoDevice
	case b.usbErr != nil:
		return b.usbErr
	}
	return nil
}

// runLatched runs a latched OUT request's action in the background; it
// holds the firmware's lock (taken by Control) until it is done.
func (b *Board) runLatched(action func()) {
	b.mu.Lock()
	if b.gone {
		b.mu.Unlock()
		b.unlock()
		return
	}
	b.wg.Add(1)
	b.mu.Unlock()
	go func() {
		defer b.wg.Done()
		defer b.unlock()
		action()
	}()
}

// latchOut checks an OUT request as the firmware does during the
// transfer (a bad one stalls) and returns the byte count to report and
// the action to run after the transfer.
func (b *Board) latchOut(request uint8, val uint16, data []byte) (int, func(), error) {
	switch request {
	case 0x00:
		return 0, b.refresh, nil
	case 0x01:
		if val > 4 {
			return 0, nil, errStall
		}
		return 0, func() { b.vendorPower(int(val)) }, nil
	case 0x02:
		modes := []string{"off", "host", "dut"}
		if val > 2 {
			return 0, nil, errStall
		}
		return 0, func() { b.switchStorage(modes[val]) }, nil
	case 0x03:
		if int(val) >= len(usbKeys) || len(data) > 256 {
			return 0, nil, errStall // the json key is not reachable over USB
		}
		v := string(data)
		return len(data), func() { b.usbConfigWrite(usbKeys[val], v) }, nil
	case 0x05:
		if val > 4 || len(data) != 1 || data[0] > 2 {
			return 0, nil, errStall
		}
		level := []string{"l", "h", "z"}[data[0]]
		return 1, func() { b.mu.Lock(); b.setPinLocked(int(val), level); b.mu.Unlock() }, nil
	}
	return 0, nil, errStall
}

// refresh snapshots the meter and the config for later IN requests (and,
// on 0.08, for Power requests).
func (b *Board) refresh() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.snapCfg = maps.Clone(b.cfg)
	w, v, a := b.meterLocked()
	b.snapMeter = [3]float64{w, v, a}
}

// vendorPower runs power action a with the sequence from the snapshot
// (0.08) or from flash (0.09).
func (b *Board) vendorPower(a int) {
	b.mu.Lock()
	cfg := b.snapCfg
	if b.flashSequences() {
		cfg = b.cfg
	}
	seq := sequence(a, cfg)
	b.mu.Unlock()
	b.runSequence(seq)
}

func (b *Board) usbConfigWrite(key, v string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.cfgFault {
		b.cfg[key] = truncate(key, v)
	}
}

// controlIn serves an IN request from the last snapshot.
func (b *Board) controlIn(request uint8, val uint16, data []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch request {
	case 0x03:
		if int(val) >= len(usbKeys) {
			return 0, errStall // the json key is not reachable over USB
		}
		k := usbKeys[val]
		field := make([]byte, fieldSizes[k])
		copy(field, b.snapCfg[k])
		return copy(data, field), nil
	case 0x04:
		s, ok := b.readValueLocked(val)
		if !ok {
			return 0, errStall
		}
		return copy(data, s), nil
	}
	return 0, errStall
}

// readValueLocked is the text of a Read request.
func (b *Board) readValueLocked(val uint16) (string, bool) {
	m := b.snapMeter
	switch val {
	case 0:
		return b.versionString(), true
	case 1:
		return fmt.Sprintf("%.2fW %.2fV %.2fA", m[0], m[1], m[2]), true
	case 2:
		return fmt.Sprintf("%.2fV", m[1]), true
	case 3:
		return fmt.Sprintf("%.2fA", m[2]), true
	}
	return "", false
}
