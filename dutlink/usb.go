package dutlink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

// Controller sends control requests to a board's vendor interface. The
// libusb implementation wraps gousb; simulators implement it directly.
//
// Control returns the number of bytes transferred. It must return an error
// wrapping [ErrStall] when the device stalls the request and one wrapping
// [ErrGone] when the device is no longer there; it must return once ctx is
// done.
type Controller interface {
	Control(ctx context.Context, rType, request uint8, val, idx uint16, data []byte) (int, error)
	// Close releases the interface and the device.
	Close() error
}

// USBOpener opens board b's vendor interface (claimed by its class
// ff/01/01) for a short batch of requests; the driver closes it after each
// operation, so that other processes can use the board in between.
type USBOpener func(ctx context.Context, b Board) (Controller, error)

// Request types and requests of the vendor protocol.
const (
	reqTypeOut uint8 = 0x41 // host to device | vendor | interface
	reqTypeIn  uint8 = 0xC1 // device to host | vendor | interface

	reqRefresh uint8 = 0x00
	reqPower   uint8 = 0x01
	reqStorage uint8 = 0x02
	reqConfig  uint8 = 0x03
	reqRead    uint8 = 0x04
	reqSetPin  uint8 = 0x05

	readVersion = 0
	readPower   = 1
)

// configKeys are the keys of the USB Config request, in wValue order, with
// their field sizes in the board's flash.
var configKeys = []configKey{{"name", 64}, {"tags", 256}, {"usb_console", 64}, {"power_on", 32}, {"power_off", 32}, {"power_rescue", 32}}

// configKey is a key of the USB Config request and its field size.
type configKey struct {
	key  string
	size int
}

// configIndex returns key's wValue, or -1 when USB cannot carry it.
func configIndex(key string) int {
	return slices.IndexFunc(configKeys, func(k configKey) bool { return k.key == key })
}

// usbTransport drives a board through vendor control requests.
type usbTransport struct {
	board Board
	open  USBOpener
}

func (u *usbTransport) kind() TransportKind { return TransportUSB }

// with opens the controller, runs fn with a context bounded by USBTimeout
// and closes it again.
func (u *usbTransport) with(ctx context.Context, what string, fn func(ctx context.Context, c Controller) error) error {
	return u.withTimeout(ctx, what, USBTimeout, fn)
}

// withTimeout is with for a batch that may take longer than USBTimeout.
func (u *usbTransport) withTimeout(ctx context.Context, what string, timeout time.Duration, fn func(ctx context.Context, c Controller) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("usb %s: %w", what, err)
	}
	c, err := u.open(ctx, u.board)
	if err != nil {
		if errors.Is(err, ErrGone) {
			return fmt.Errorf("usb %s: opening the vendor interface: the board is gone; check its USB cable and power: %w", what, err)
		}
		return fmt.Errorf("usb %s: opening the vendor interface: %w", what, err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := fn(ctx, c); err != nil {
		return fmt.Errorf("usb %s: %w", what, err)
	}
	return nil
}

func (u *usbTransport) out(ctx context.Context, c Controller, req uint8, val uint16, data []byte) error {
	n, err := c.Control(ctx, reqTypeOut, req, val, uint16(u.board.VendorInterface), data)
	if err != nil {
		return controlErr(req, val, err)
	}
	if n != len(data) {
		return fmt.Errorf("request 0x%02x value %d: short write (%d of %d bytes)", req, val, n, len(data))
	}
	return nil
}

// act sends an OUT request that makes the board act, and returns once the
// action has run: the firmware completes the request before it acts, and
// holds the next request (a Refresh here) until it has.
func (u *usbTransport) act(ctx context.Context, c Controller, req uint8, val uint16, data []byte) error {
	if err := u.out(ctx, c, req, val, data); err != nil {
		return err
	}
	if err := u.out(ctx, c, reqRefresh, 0, nil); err != nil {
		return fmt.Errorf("waiting for request 0x%02x value %d to take effect: %w", req, val, err)
	}
	return nil
}

// in sends Refresh and then reads request req: IN data comes from the
// snapshot Refresh takes.
func (u *usbTransport) in(ctx context.Context, c Controller, req uint8, val uint16, size int) ([]byte, error) {
	if err := u.out(ctx, c, reqRefresh, 0, nil); err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	n, err := c.Control(ctx, reqTypeIn, req, val, uint16(u.board.VendorInterface), buf)
	if err != nil {
		return nil, controlErr(req, val, err)
	}
	return buf[:n], nil
}

func controlErr(req uint8, val uint16, err error) error {
	switch {
	case errors.Is(err, ErrStall):
		return fmt.Errorf("request 0x%02x value %d refused by the firmware (update the firmware, or use DUTLINK_TRANSPORT=shell): %w", req, val, err)
	case errors.Is(err, ErrGone):
		return fmt.Errorf("request 0x%02x value %d: the board is gone; check its USB cable and power: %w", req, val, err)
	}
	return fmt.Errorf("request 0x%02x value %d: %w", req, val, err)
}

// power runs a power action over USB. Firmware 0.08 runs the sequence of
// the snapshot the last Refresh took (a plain switch after a board reboot),
// so a Refresh comes first. The Power request completes before its
// sequence runs, and the next request waits until it has: a Refresh after
// it marks the sequence's end, from which the moment of the switch follows
// by the waits that came after it. The sequence is read (from the same
// snapshot) to know those waits and how long to wait for the end.
func (u *usbTransport) power(ctx context.Context, a powerAction) (time.Time, error) {
	var switched time.Time
	err := u.withTimeout(ctx, "power "+a.String(), 2*USBTimeout, func(ctx context.Context, c Controller) error {
		seq, err := u.sequence(ctx, c, a)
		if err != nil {
			return err
		}
		total, after := sequenceWaits(seq, a.cutToken())
		if err := u.out(ctx, c, reqPower, uint16(a), nil); err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), USBTimeout+total)
		defer cancel()
		if err := u.out(wctx, c, reqRefresh, 0, nil); err != nil {
			return fmt.Errorf("waiting for the power sequence %q to end: %w", seq, err)
		}
		switched = time.Now().Add(-after)
		return nil
	})
	return switched, err
}

// sequence refreshes the board's snapshot and returns the sequence it will
// run for a.
func (u *usbTransport) sequence(ctx context.Context, c Controller, a powerAction) (string, error) {
	key := map[powerAction]string{powerOff: "power_off", powerOn: "power_on", powerRescue: "power_rescue"}[a]
	if key == "" {
		if err := u.out(ctx, c, reqRefresh, 0, nil); err != nil {
			return "", err
		}
		return powerSequence(a, nil), nil
	}
	idx := configIndex(key)
	b, err := u.in(ctx, c, reqConfig, uint16(idx), configKeys[idx].size)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", key, err)
	}
	return powerSequence(a, map[string]string{key: cString(b)}), nil
}

// cString returns b up to its first NUL.
func cString(b []byte) string {
	if j := bytes.IndexByte(b, 0); j >= 0 {
		b = b[:j]
	}
	return string(b)
}

func (u *usbTransport) storage(ctx context.Context, m driver.StorageMode) error {
	v, word, _, err := storageValue(m)
	if err != nil {
		return err
	}
	return u.with(ctx, "storage "+word, func(ctx context.Context, c Controller) error {
		return u.act(ctx, c, reqStorage, v, nil)
	})
}

func (u *usbTransport) setPin(ctx context.Context, pin int, l driver.PinLevel) error {
	b, letter, _, err := levelValue(l)
	if err != nil {
		return err
	}
	return u.with(ctx, "set "+pinLetters[pin]+" "+letter, func(ctx context.Context, c Controller) error {
		return u.act(ctx, c, reqSetPin, uint16(pin), []byte{b})
	})
}

func (u *usbTransport) config(ctx context.Context) (map[string]string, []string, error) {
	cfg := map[string]string{}
	err := u.with(ctx, "get config", func(ctx context.Context, c Controller) error {
		for i, k := range configKeys {
			b, err := u.in(ctx, c, reqConfig, uint16(i), k.size)
			if err != nil {
				return fmt.Errorf("%s: %w", k.key, err)
			}
			cfg[k.key] = cString(b)
		}
		return nil
	})
	return cfg, nil, err
}

func (u *usbTransport) setConfig(ctx context.Context, key, value string) error {
	idx := configIndex(key)
	if idx < 0 {
		return fmt.Errorf("%w: key %q cannot be set over USB (use DUTLINK_TRANSPORT=shell)", ErrBadConfig, key)
	}
	return u.with(ctx, "set config "+key, func(ctx context.Context, c Controller) error {
		if err := u.out(ctx, c, reqConfig, uint16(idx), []byte(value)); err != nil {
			return err
		}
		b, err := u.in(ctx, c, reqConfig, uint16(idx), configKeys[idx].size)
		if err != nil {
			return fmt.Errorf("reading %s back: %w", key, err)
		}
		if got := cString(b); got != value {
			return fmt.Errorf("%w: the board stored %s=%q instead of %q; check the value's length and syntax", ErrBadConfig, key, got, value)
		}
		return nil
	})
}

func (u *usbTransport) meter(ctx context.Context) (driver.PowerReading, error) {
	var r driver.PowerReading
	err := u.with(ctx, "read meter", func(ctx context.Context, c Controller) error {
		b, err := u.in(ctx, c, reqRead, readPower, 128)
		if err != nil {
			return err
		}
		r, err = parseMeterUSB(string(b))
		return err
	})
	return r, err
}

func (u *usbTransport) version(ctx context.Context) (string, error) {
	var v string
	err := u.with(ctx, "read version", func(ctx context.Context, c Controller) error {
		b, err := u.in(ctx, c, reqRead, readVersion, 128)
		v = string(bytes.TrimRight(b, "\x00 \r\n"))
		return err
	})
	return v, err
}

// ctxTimeout returns the time left until ctx's deadline, capped at max.
func ctxTimeout(ctx context.Context, max time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < max {
			return left
		}
	}
	return max
}
