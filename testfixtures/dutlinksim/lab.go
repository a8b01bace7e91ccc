package dutlinksim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
)

// Lab is a host with DUTlink boards: a fake sysfs tree and /dev directory
// in a directory of its own, and the boards' firmware behind ptys and
// [dutlink.Controller]s.
type Lab struct {
	// Dir holds everything; Sys is the sysfs root and Dev the /dev root
	// the driver is pointed at; Disks holds the disk image files.
	Dir, Sys, Dev, Disks string

	root string // the fake root hub's sysfs directory

	mu       sync.Mutex
	boards   []*Board
	nextHub  int
	usedDisk map[string]bool
	closed   bool
}

// NewLab makes an empty lab in dir (created when missing).
func NewLab(dir string) (*Lab, error) {
	l := &Lab{
		Dir: dir, Sys: filepath.Join(dir, "sys"), Dev: filepath.Join(dir, "dev"), Disks: filepath.Join(dir, "disks"),
		nextHub: 1, usedDisk: map[string]bool{},
	}
	l.root = filepath.Join(l.Sys, "devices", "pci0000:00", "0000:00:14.0", "usb1")
	for _, d := range []string{
		l.root, filepath.Join(l.Sys, "bus", "usb", "devices"), filepath.Join(l.Sys, "class", "block"),
		filepath.Join(l.Sys, "block"), filepath.Join(l.Dev, "disk", "by-id"), filepath.Join(l.Dev, "serial", "by-id"), l.Disks,
	} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("dutlinksim: %w", err)
		}
	}
	if err := writeAttrs(l.root, map[string]string{"idVendor": "1d6b", "idProduct": "0002", "busnum": "1", "devnum": "1"}); err != nil {
		return nil, err
	}
	if err := l.link("usb1", l.root); err != nil {
		return nil, err
	}
	return l, nil
}

// Options returns driver options that point at the lab: its sysfs and dev
// roots, its USB controllers, regular files accepted as disks, a storage
// timeout of 5 s and a state directory of its own.
func (l *Lab) Options() dutlink.Options {
	return dutlink.Options{SysfsRoot: l.Sys, DevRoot: l.Dev, FileDisks: true, OpenUSB: l.OpenUSB, StorageTimeout: 5 * time.Second, StateDir: filepath.Join(l.Dir, "state")}
}

// Env returns the environment variables that point the registered driver
// at the lab (the USB controllers still need [dutlink.SetUSBOpener]).
func (l *Lab) Env() map[string]string {
	return map[string]string{
		dutlink.EnvSysfs: l.Sys, dutlink.EnvDev: l.Dev, dutlink.EnvFileDisks: "1",
		dutlink.EnvStorageTimeout: "5s", dutlink.EnvStateDir: filepath.Join(l.Dir, "state"),
	}
}

// OpenUSB opens a lab board's vendor interface, as libusb would: it fails
// for boards without one (firmware 0.07, DFU mode) and for unplugged ones.
func (l *Lab) OpenUSB(ctx context.Context, b dutlink.Board) (dutlink.Controller, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	var hit *Board
	for _, bd := range l.boards {
		if bd.serial == b.Serial {
			hit = bd
		}
	}
	l.mu.Unlock()
	if hit == nil {
		return nil, fmt.Errorf("libusb: no device [code -4]: %w", dutlink.ErrGone)
	}
	return hit.openUSB()
}

// Close unplugs every board.
func (l *Lab) Close() error {
	l.mu.Lock()
	boards := l.boards
	l.closed = true
	l.mu.Unlock()
	for _, b := range boards {
		b.Unplug()
	}
	return nil
}

// link makes <sys>/bus/usb/devices/name point at target.
func (l *Lab) link(name, target string) error {
	p := filepath.Join(l.Sys, "bus", "usb", "devices", name)
	if err := os.Symlink(target, p); err != nil {
		return fmt.Errorf("dutlinksim: %w", err)
	}
	return nil
}

func writeAttrs(dir string, attrs map[string]string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("dutlinksim: %w", err)
	}
	for k, v := range attrs {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v+"\n"), 0o644); err != nil {
			return fmt.Errorf("dutlinksim: %w", err)
		}
	}
	return nil
}

// allocDisk returns the lowest free sdX name.
func (l *Lab) allocDisk() (string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := 0; ; i++ {
		n := "sd" + string(rune('a'+i%26))
		if i >= 26 {
			n = fmt.Sprintf("sd%c%c", 'a'+i/26-1, 'a'+i%26)
		}
		if !l.usedDisk[n] {
			l.usedDisk[n] = true
			return n, i
		}
	}
}

func (l *Lab) freeDisk(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.usedDisk, name)
}

// simDisk is a disk that is present on the host.
type simDisk struct {
	name   string
	usbDir string // the USB device directory that carries it
	byID   string
	file   string
}

// attachDisk makes file appear as a USB disk below parent (a hub's sysfs
// directory) on port, named by-id usb-<id>-0:0, with size 0 at first; the
// size is written after delay.
func (l *Lab) attachDisk(parent, port, id, file string, delay time.Duration, stillWanted func() bool) (*simDisk, error) {
	name, idx := l.allocDisk()
	st, err := os.Stat(file)
	if err != nil {
		l.freeDisk(name)
		return nil, fmt.Errorf("dutlinksim: %w", err)
	}
	host := fmt.Sprintf("%d", 6+idx)
	usbDir := filepath.Join(parent, port)
	scsi := filepath.Join(usbDir, port+":1.0", "host"+host, "target"+host+":0:0", host+":0:0:0")
	blk := filepath.Join(scsi, "block", name)
	if err := writeAttrs(usbDir, map[string]string{"idVendor": "0781", "idProduct": "5581", "serial": id}); err != nil {
		return nil, err
	}
	if err := writeAttrs(scsi, map[string]string{"delete": ""}); err != nil {
		return nil, err
	}
	if err := writeAttrs(blk, map[string]string{"size": "0", "dev": fmt.Sprintf("8:%d", 16*idx), "removable": "1"}); err != nil {
		return nil, err
	}
	d := &simDisk{name: name, usbDir: usbDir, byID: filepath.Join(l.Dev, "disk", "by-id", "usb-"+id+"-0:0"), file: file}
	errs := errors.Join(
		os.Symlink(scsi, filepath.Join(blk, "device")),
		os.Symlink(blk, filepath.Join(l.Sys, "class", "block", name)),
		os.Symlink(blk, filepath.Join(l.Sys, "block", name)),
		os.Link(file, filepath.Join(l.Dev, name)),
		os.Symlink("../../"+name, d.byID),
	)
	if errs != nil {
		return nil, fmt.Errorf("dutlinksim: attaching %s: %w", name, errs)
	}
	sectors := fmt.Sprintf("%d\n", st.Size()/512)
	time.AfterFunc(delay, func() {
		if stillWanted() {
			_ = os.WriteFile(filepath.Join(blk, "size"), []byte(sectors), 0o644)
		}
	})
	return d, nil
}

// detachDisk removes a disk from the host, as a USB disconnect does.
func (l *Lab) detachDisk(d *simDisk) {
	_ = os.Remove(d.byID)
	_ = os.Remove(filepath.Join(l.Dev, d.name))
	_ = os.Remove(filepath.Join(l.Sys, "class", "block", d.name))
	_ = os.Remove(filepath.Join(l.Sys, "block", d.name))
	_ = os.RemoveAll(d.usbDir)
	l.freeDisk(d.name)
}

// AddDisk plugs a USB disk that belongs to no board into the host (another
// hub), backed by a new file of size bytes, and returns the file. It stays
// until Close: the driver must never pick it.
func (l *Lab) AddDisk(id string, size int64) (string, error) {
	l.mu.Lock()
	n := l.nextHub
	l.nextHub++
	l.mu.Unlock()
	file := filepath.Join(l.Disks, "stranger-"+id+".img")
	if err := makeDisk(file, size, 0x5a); err != nil {
		return "", err
	}
	hub := filepath.Join(l.root, fmt.Sprintf("1-%d", n))
	if err := writeAttrs(hub, map[string]string{"idVendor": "05e3", "idProduct": "0610"}); err != nil {
		return "", err
	}
	if _, err := l.attachDisk(hub, fmt.Sprintf("1-%d.1", n), "Generic_"+id, file, 0, func() bool { return true }); err != nil {
		return "", err
	}
	return file, nil
}

// makeDisk creates a disk file of size bytes filled with fill.
func makeDisk(path string, size int64, fill byte) error {
	buf := []byte(strings.Repeat(string([]byte{fill}), int(min(size, 1<<20))))
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("dutlinksim: %w", err)
	}
	defer f.Close()
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := f.Write(buf[:min(int64(len(buf)), size-off)]); err != nil {
			return fmt.Errorf("dutlinksim: %w", err)
		}
	}
	return f.Close()
}
