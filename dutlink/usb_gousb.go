//go:build cgo && !nolibusb

package dutlink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/gousb"
)

// usbContext is the process's one libusb context, made on first use.
var usbContext = sync.OnceValue(gousb.NewContext)

func defaultUSBOpener() USBOpener { return openLibUSB }

// libusbController is a board's vendor interface claimed through gousb.
type libusbController struct {
	dev  *gousb.Device
	cfg  *gousb.Config
	intf *gousb.Interface
}

// openLibUSB opens the board at b.Bus/b.Address and claims the interface
// whose class is ff/01/01.
func openLibUSB(ctx context.Context, b Board) (Controller, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	devs, err := usbContext().OpenDevices(func(d *gousb.DeviceDesc) bool {
		return d.Vendor == VendorID && d.Product == ProductID && d.Bus == b.Bus && d.Address == b.Address
	})
	for _, d := range devs[min(len(devs), 1):] {
		d.Close()
	}
	if len(devs) == 0 {
		if err != nil {
			return nil, fmt.Errorf("libusb: %w", mapUSBErr(err))
		}
		return nil, fmt.Errorf("no USB device %03d/%03d (serial %s): %w", b.Bus, b.Address, b.Serial, ErrGone)
	}
	dev := devs[0]
	fail := func(err error) (Controller, error) {
		dev.Close()
		return nil, err
	}
	cfgNum, err := dev.ActiveConfigNum()
	if err != nil {
		return fail(fmt.Errorf("active configuration: %w", mapUSBErr(err)))
	}
	ifnum := -1
	for _, c := range dev.Desc.Configs {
		if c.Number != cfgNum {
			continue
		}
		for _, ifc := range c.Interfaces {
			for _, alt := range ifc.AltSettings {
				if alt.Class == gousb.ClassVendorSpec && alt.SubClass == 0x01 && alt.Protocol == 0x01 {
					ifnum = ifc.Number
				}
			}
		}
	}
	if ifnum < 0 {
		return fail(fmt.Errorf("board %s (firmware %s) has no vendor interface: %w", b.Serial, b.Version, ErrNoUSB))
	}
	cfg, err := dev.Config(cfgNum)
	if err != nil {
		return fail(fmt.Errorf("configuration %d: %w", cfgNum, mapUSBErr(err)))
	}
	intf, err := cfg.Interface(ifnum, 0)
	if err != nil {
		cfg.Close()
		return fail(fmt.Errorf("claiming interface %d: %w", ifnum, mapUSBErr(err)))
	}
	return &libusbController{dev: dev, cfg: cfg, intf: intf}, nil
}

// maxTransfer bounds a control transfer whose context has no deadline.
const maxTransfer = 10 * time.Minute

// Control runs one control transfer, bounded by ctx's deadline (the
// driver's requests carry one: USBTimeout, or longer for a request that
// waits for a long power sequence) and at most maxTransfer. A libusb
// transfer cannot be cancelled midway; it ends at its timeout at the latest.
func (c *libusbController) Control(ctx context.Context, rType, request uint8, val, idx uint16, data []byte) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	c.dev.ControlTimeout = max(ctxTimeout(ctx, maxTransfer), time.Millisecond)
	n, err := c.dev.Control(rType, request, val, idx, data)
	if err != nil {
		return n, mapUSBErr(err)
	}
	return n, nil
}

// Close releases the interface and closes the device.
func (c *libusbController) Close() error {
	c.intf.Close()
	err := c.cfg.Close()
	return errors.Join(err, c.dev.Close())
}

// mapUSBErr wraps libusb's errors into the package's sentinels.
func mapUSBErr(err error) error {
	var ue gousb.Error
	if !errors.As(err, &ue) {
		return err
	}
	switch ue {
	case gousb.ErrorPipe:
		return fmt.Errorf("%w: %w", ErrStall, err)
	case gousb.ErrorNoDevice, gousb.ErrorNotFound:
		return fmt.Errorf("%w: %w", ErrGone, err)
	case gousb.ErrorBusy:
		return fmt.Errorf("%w: another process uses the vendor interface: %w", ErrBusy, err)
	case gousb.ErrorAccess:
		return fmt.Errorf("no permission to open the board (add a udev rule for 2b23:1012 or run as root): %w", err)
	}
	return err
}
