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

	// fmu serializes the plugging and unplugging of foreign disks with
	// Close, so that no timer writes into the lab after Close.
	fmu     sync.Mutex
	foreign map[string]*foreignDisk // by file
}

// NewLab makes an empty lab in dir (created when missing).
func NewLab(dir string) (*Lab, error) {
	l := &Lab{
		Dir: dir, Sys: filepath.Join(dir, "sys"), Dev: filepath.Join(dir, "dev"), Disks: filepath.Join(dir, "disks"),
		nextHub: 1, usedDisk: map[string]bool{}, foreign: map[string]*foreignDisk{},
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
	return dutlink.Options{SysfsRoot: l.Sys, DevRoot: l.Dev, FileDisks: true, OpenUSB: l.OpenUSB, StorageTimeout: 5 * time.Second, StateDir: filepath.Join(l.Dir, "state"), ConfigDir: filepath.Join(l.Dir, "config")}
}

// Env returns the environment variables that point the registered driver
// at the lab, for a program run in another process (it can reach the
// boards' shells only: the lab's USB controllers live in this process, see
// [Lab.Options]).
func (l *Lab) Env() map[string]string {
	return map[string]string{
		dutlink.EnvSysfs: l.Sys, dutlink.EnvDev: l.Dev, dutlink.EnvFileDisks: "1",
		dutlink.EnvStorageTimeout: "5s", dutlink.EnvStateDir: filepath.Join(l.Dir, "state"), dutlink.EnvConfigDir: filepath.Join(l.Dir, "config"),
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

// Close unplugs every board and stops the foreign disks still to come.
func (l *Lab) Close() error {
	l.mu.Lock()
	boards := l.boards
	l.closed = true
	l.mu.Unlock()
	l.fmu.Lock()
	for _, fd := range l.foreign {
		if fd.timer != nil {
			fd.timer.Stop()
		}
	}
	l.fmu.Unlock()
	for _, b := range boards {
		b.Unplug()
	}
	return nil
}

func (l *Lab) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// reservePort returns a new port number of the root hub.
func (l *Lab) reservePort() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.nextHub
	l.nextHub++
	return n
}

// link makes <sys>/bus/usb/devices/name point at target.
func (l *Lab) link(name, target string) error {
	p := filepath.Join(l.Sys, "bus", "usb", "devices", name)
	if err := os.Symlink(target, p); err != nil {
		return fmt.Errorf("dutlinksim: %w", err)
	}
	return nil
}

// unlinkBelow removes the bus/usb/devices links that point at dir or
// below it.
func (l *Lab) unlinkBelow(dir string) {
	if dir == "" {
		return
	}
	devs := filepath.Join(l.Sys, "bus", "usb", "devices")
	ents, _ := os.ReadDir(devs)
	for _, e := range ents {
		p := filepath.Join(devs, e.Name())
		if t, err := os.Readlink(p); err == nil && (t == dir || strings.HasPrefix(t, dir+string(filepath.Separator))) {
			_ = os.Remove(p)
		}
	}
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

// attachDisk makes file appear as a USB disk below parent (a hub's or the
// root hub's sysfs directory) on port, with serial id and the by-id name
// usb-<id>-0:0, the by-id link made last. Its size is 0 at first and
// written after delay, through guard (which runs what it is given only
// while the disk is still wanted); with no delay it is right at once.
func (l *Lab) attachDisk(parent, port, id, file string, delay time.Duration, guard func(func())) (*simDisk, error) {
	name, idx := l.allocDisk()
	st, err := os.Stat(file)
	if err != nil {
		l.freeDisk(name)
		return nil, fmt.Errorf("dutlinksim: %w", err)
	}
	host := fmt.Sprintf("%d", 6+idx)
	usbDir := filepath.Join(parent, port)
	ifc := filepath.Join(usbDir, port+":1.0")
	scsi := filepath.Join(ifc, "host"+host, "target"+host+":0:0", host+":0:0:0")
	blk := filepath.Join(scsi, "block", name)
	d := &simDisk{name: name, usbDir: usbDir, byID: filepath.Join(l.Dev, "disk", "by-id", "usb-"+id+"-0:0"), file: file}
	sectors := fmt.Sprintf("%d", st.Size()/512)
	size := sectors
	if delay > 0 {
		size = "0"
	}
	errs := errors.Join(
		writeAttrs(usbDir, map[string]string{"idVendor": "0781", "idProduct": "5581", "serial": id, "busnum": "1"}),
		writeAttrs(ifc, map[string]string{"bInterfaceNumber": "00", "bInterfaceClass": "08", "bInterfaceSubClass": "06", "bInterfaceProtocol": "50"}),
		writeAttrs(scsi, map[string]string{"delete": ""}),
		writeAttrs(blk, map[string]string{"size": size, "dev": fmt.Sprintf("8:%d", 16*idx), "removable": "1"}),
	)
	if errs == nil {
		errs = errors.Join(
			l.link(port, usbDir),
			l.link(port+":1.0", ifc),
			os.Symlink(scsi, filepath.Join(blk, "device")),
			os.Symlink(blk, filepath.Join(l.Sys, "class", "block", name)),
			os.Symlink(blk, filepath.Join(l.Sys, "block", name)),
			os.Link(file, filepath.Join(l.Dev, name)),
			os.Symlink("../../"+name, d.byID),
		)
	}
	if errs != nil {
		l.detachDisk(d)
		return nil, fmt.Errorf("dutlinksim: attaching %s: %w", name, errs)
	}
	if delay > 0 {
		time.AfterFunc(delay, func() {
			guard(func() { _ = os.WriteFile(filepath.Join(blk, "size"), []byte(sectors+"\n"), 0o644) })
		})
	}
	return d, nil
}

// detachDisk removes a disk from the host, as a USB disconnect does.
func (l *Lab) detachDisk(d *simDisk) {
	_ = os.Remove(d.byID)
	_ = os.Remove(filepath.Join(l.Dev, d.name))
	_ = os.Remove(filepath.Join(l.Sys, "class", "block", d.name))
	_ = os.Remove(filepath.Join(l.Sys, "block", d.name))
	l.unlinkBelow(d.usbDir)
	_ = os.RemoveAll(d.usbDir)
	l.freeDisk(d.name)
}

// foreignDisk is a USB disk that belongs to no board, on a hub of its own.
type foreignDisk struct {
	id, file string
	port     int
	timer    *time.Timer
	disk     *simDisk
	removed  bool
}

func (fd *foreignDisk) hubName() string { return fmt.Sprintf("1-%d", fd.port) }

// AddDisk plugs a USB disk that belongs to no board into the host (on a
// hub of its own), backed by a new file of size bytes filled with 0x5a,
// and returns the file. Its by-id name is "usb-Generic_" + id + "-0:0". It
// stays until [Lab.RemoveDisk] or Close: the driver must never pick it.
func (l *Lab) AddDisk(id string, size int64) (string, error) {
	return l.AddDiskAfter(id, size, 0)
}

// AddDiskAfter is [Lab.AddDisk] with the disk plugged delay from now: the
// file is created at once, the disk appears in sysfs and /dev (with its
// size) after delay.
func (l *Lab) AddDiskAfter(id string, size int64, delay time.Duration) (file string, err error) {
	file = filepath.Join(l.Disks, "stranger-"+id+".img")
	fd := &foreignDisk{id: id, file: file, port: l.reservePort()}
	l.fmu.Lock()
	_, dup := l.foreign[file]
	if !dup {
		l.foreign[file] = fd
	}
	l.fmu.Unlock()
	if dup {
		return "", fmt.Errorf("dutlinksim: a foreign disk %q is plugged already", id)
	}
	if err := makeDisk(file, size, diskFill); err != nil {
		l.RemoveDisk(file)
		return "", err
	}
	if delay <= 0 {
		return file, l.plugForeign(fd)
	}
	l.fmu.Lock()
	fd.timer = time.AfterFunc(delay, func() { _ = l.plugForeign(fd) })
	l.fmu.Unlock()
	return file, nil
}

// plugForeign makes a foreign disk appear, unless it was removed or the
// lab closed meanwhile.
func (l *Lab) plugForeign(fd *foreignDisk) error {
	l.fmu.Lock()
	defer l.fmu.Unlock()
	if fd.removed || fd.disk != nil || l.isClosed() {
		return nil
	}
	hub := filepath.Join(l.root, fd.hubName())
	if err := writeAttrs(hub, map[string]string{"idVendor": "05e3", "idProduct": "0610", "busnum": "1"}); err != nil {
		return err
	}
	if err := l.link(fd.hubName(), hub); err != nil {
		return err
	}
	d, err := l.attachDisk(hub, fd.hubName()+".1", "Generic_"+fd.id, fd.file, 0, nil)
	if err != nil {
		return err
	}
	fd.disk = d
	return nil
}

// RemoveDisk unplugs a foreign disk made by [Lab.AddDisk] or
// [Lab.AddDiskAfter] (or cancels it if it has yet to appear), so that its
// id can be used again; its file stays. Unknown files are ignored.
func (l *Lab) RemoveDisk(file string) {
	l.fmu.Lock()
	defer l.fmu.Unlock()
	fd := l.foreign[file]
	if fd == nil {
		return
	}
	fd.removed = true
	delete(l.foreign, file)
	if fd.timer != nil {
		fd.timer.Stop()
	}
	if fd.disk != nil {
		l.detachDisk(fd.disk)
		hub := filepath.Join(l.root, fd.hubName())
		l.unlinkBelow(hub)
		_ = os.RemoveAll(hub)
	}
}

// diskFill is the byte a foreign disk of [Lab.AddDisk] is filled with.
const diskFill = 0x5a

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
