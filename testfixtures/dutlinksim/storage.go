package dutlinksim

import (
	"os"
	"path/filepath"
	"strings"
	"time"
)

// switchStorage moves the mux on a shell command or vendor request and
// runs the hooks registered for mode with [Board.OnStorage].
func (b *Board) switchStorage(mode string) {
	b.mu.Lock()
	b.setStorageLocked(mode)
	hooks := b.hooks[mode]
	delete(b.hooks, mode)
	b.mu.Unlock()
	for _, fn := range hooks {
		go fn()
	}
}

// setStorageLocked moves the mux. Leaving the host, the disks disappear
// (noting those the host ejected); at the host they appear after
// DiskAppearDelay, with size 0 until DiskDelay later.
func (b *Board) setStorageLocked(mode string) {
	if mode == b.storage && mode != "host" {
		return
	}
	prev := b.storage
	b.storage = mode
	b.event("storage %s", mode)
	if prev == "host" && mode == "host" {
		return
	}
	b.storageGen++
	if prev == "host" {
		b.unplugDisksLocked()
	}
	if mode != "host" || b.o.NoDisk || b.gone {
		return
	}
	if b.o.DiskAppearDelay <= 0 {
		b.plugDisksLocked()
		return
	}
	gen := b.storageGen
	time.AfterFunc(b.o.DiskAppearDelay, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.storageGen == gen && !b.gone {
			b.plugDisksLocked()
		}
	})
}

// unplugDisksLocked removes the board's disks from the host.
func (b *Board) unplugDisksLocked() {
	for _, d := range b.disks {
		if del, err := findDelete(d); err == nil && del {
			b.ejected = append(b.ejected, d.name)
		}
		b.lab.detachDisk(d)
	}
	b.disks = nil
}

// plugDisksLocked makes the board's disk (two with TwoDisks) appear at
// the host: below the board's hub, or on root ports of their own.
func (b *Board) plugDisksLocked() {
	gen := b.storageGen
	guard := func(fn func()) {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.storageGen == gen && !b.gone {
			fn()
		}
	}
	if d, err := b.lab.attachDisk(b.diskParent, b.diskPorts[0], b.o.DiskID, b.disk, b.o.DiskDelay, guard); err == nil {
		b.disks = append(b.disks, d)
	}
	if !b.o.TwoDisks {
		return
	}
	extra := b.disk + ".second"
	if _, err := os.Stat(extra); err != nil {
		_ = makeDisk(extra, b.o.DiskSize, 0)
	}
	if d, err := b.lab.attachDisk(b.diskParent, b.diskPorts[1], "DUTlinkSim_Second_"+b.serial, extra, b.o.DiskDelay, guard); err == nil {
		b.disks = append(b.disks, d)
	}
}

// findDelete reports whether the host, any process of it, wrote to the
// disk's sysfs delete file.
func findDelete(d *simDisk) (bool, error) {
	matches, err := filepath.Glob(filepath.Join(d.usbDir, "*", "host*", "target*", "*", "delete"))
	if err != nil || len(matches) == 0 {
		return false, err
	}
	data, err := os.ReadFile(matches[0])
	return strings.TrimSpace(string(data)) == "1", err
}
