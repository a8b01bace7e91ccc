package dutlink

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// disk is the board's storage as the host sees it.
type disk struct {
	name    string // "sdb"
	node    string // <dev>/sdb
	sysPath string // the block device's sysfs directory, resolved
}

var partRe = regexp.MustCompile(`-part[0-9]+$`)

// diskPollEvery is how often the storage wait looks at sysfs.
const diskPollEvery = 25 * time.Millisecond

// storageLocator finds a board's storage disk.
type storageLocator struct {
	sysfs, dev string
	board      Board
	// filter is a substring of the disk's /dev/disk/by-id name; "" for
	// none.
	filter string
	// own says the filter is this board's own (per-board), so that it
	// names the board's stick and nothing else; from says where it came
	// from, for messages.
	own  bool
	from string
}

// The board's own hub (hardware 2.0.0, a Microchip USB7206C) carries the
// board's controller on its port 6 and the storage mux on its port 3.
const (
	controllerHubPort = "6"
	muxHubPort        = "3"
)

// hub returns the sysfs directory of the board's own USB hub: the parent of
// the board's device when the board sits on that hub's port 6. A board on a
// root port (then any disk of the bus would match) or on another hub's port
// (hardware 1.1.0 behind an external hub, where a stranger's stick, or
// another board's, can hang off the same hub) cannot tell its disk by
// topology.
func (l storageLocator) hub() (string, error) {
	hub := filepath.Dir(l.board.SysPath)
	if !portRe.MatchString(filepath.Base(hub)) {
		return "", fmt.Errorf("the DUTlink %s is plugged straight into a root port (%s), so USB topology cannot tell its storage disk from other USB disks", l.board.Serial, filepath.Base(hub))
	}
	if !strings.HasSuffix(filepath.Base(l.board.SysPath), "."+controllerHubPort) {
		return "", fmt.Errorf("the DUTlink %s hangs off %s, not off port %s of a hub of its own (hardware 2.0.0), so USB topology cannot tell its storage disk from other disks on that hub", l.board.Serial, filepath.Base(l.board.SysPath), controllerHubPort)
	}
	return hub, nil
}

// identity says whether the board's disk can be proved to be the board's:
// by topology (the disk hangs below the board's hub), or, on a root port,
// by a filter that is this board's own. The error says how to configure
// one; it wraps ErrUnprovenDisk.
func (l storageLocator) identity() error {
	_, err := l.hub()
	if err == nil || (l.filter != "" && l.own) {
		return nil
	}
	msg := fmt.Sprintf("%v; name the board's own storage stick by a substring of its /dev/disk/by-id name that no other disk has (its serial, which lsblk -d -o NAME,SERIAL shows with the stick plugged into a host): dut config %s set storage_filter <stick serial> (kept for this board on this host, whatever the transport), or %s=%s=<stick serial>", err, l.board.Serial, EnvStorageFilter, l.board.Serial)
	if l.filter != "" {
		msg += fmt.Sprintf("; %s %q applies to every board, so it cannot tell two boards' sticks apart (or a stranger's stick that matches it), and a disk is never written on its word alone", l.from, l.filter)
	}
	return fmt.Errorf("%w: %s", ErrUnprovenDisk, msg)
}

// peerHub returns the SuperSpeed side of a USB 3 hub whose USB 2 side is
// hub (or the other way round), or "" when it has none. A USB 3 hub shows up
// twice, once on each bus; the board's microcontroller is on the USB 2 side
// and a USB 3 disk enumerates on the other. sysfs links the two through the
// "peer" link of the upstream port the hub hangs from.
func peerHub(hub string) string {
	name := filepath.Base(hub) // "1-2", "1-3.4"
	i := strings.LastIndexAny(name, ".-")
	if i < 0 {
		return ""
	}
	port := name[i+1:]
	parent := filepath.Dir(hub)
	links, _ := filepath.Glob(filepath.Join(parent, "*:1.0", filepath.Base(parent)+"-port"+port, "peer"))
	if len(links) != 1 {
		return ""
	}
	peerPort, err := filepath.EvalSymlinks(links[0]) // .../usb2/2-0:1.0/usb2-port2
	if err != nil {
		return ""
	}
	peerParent := filepath.Dir(filepath.Dir(peerPort))
	pp := filepath.Base(peerParent)
	child := pp + "." + port
	if bus, ok := strings.CutPrefix(pp, "usb"); ok {
		child = bus + "-" + port // below a root hub
	}
	peer := filepath.Join(peerParent, child)
	if _, err := os.Stat(peer); err != nil {
		return ""
	}
	return peer
}

// hubs returns the mux's port of the board's hub and of its USB 3 peer, or
// nil when topology cannot tell the board's disk.
func (l storageLocator) hubs() []string {
	hub, err := l.hub()
	if err != nil {
		return nil
	}
	hubs := []string{muxPort(hub)}
	if peer := peerHub(hub); peer != "" {
		hubs = append(hubs, muxPort(peer))
	}
	return hubs
}

// muxPort is the sysfs directory of the storage mux's port of a hub.
func muxPort(hub string) string {
	return filepath.Join(hub, filepath.Base(hub)+"."+muxHubPort)
}

func below(hubs []string, real string) bool {
	return slices.ContainsFunc(hubs, func(h string) bool { return strings.HasPrefix(real, h+string(filepath.Separator)) })
}

// candidates lists the disks that could be the board's storage now: below
// the board's hub (with a filter, also named by it), or, on a root port,
// every disk the board's own filter names. Call it only after identity
// said yes; no other disk can be picked.
func (l storageLocator) candidates() ([]disk, error) {
	hubs := l.hubs()
	if l.filter != "" {
		all, err := l.byID()
		if err != nil {
			return nil, err
		}
		if hubs == nil {
			return all, nil
		}
		var out []disk
		for _, d := range all {
			if below(hubs, d.sysPath) {
				out = append(out, d)
			}
		}
		return out, nil
	}
	if hubs == nil {
		return nil, l.identity()
	}
	dir := filepath.Join(l.sysfs, "class", "block")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing block devices in %s: %w", dir, err)
	}
	var out []disk
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(p, "partition")); err == nil {
			continue
		}
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			continue // vanished while we looked
		}
		if below(hubs, real) {
			out = append(out, disk{name: e.Name(), node: filepath.Join(l.dev, e.Name()), sysPath: real})
		}
	}
	return out, nil
}

// byID lists the whole USB disks whose by-id name holds the filter.
func (l storageLocator) byID() ([]disk, error) {
	dir := filepath.Join(l.dev, "disk", "by-id")
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	var out []disk
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, "usb-") || partRe.MatchString(n) || !strings.Contains(n, l.filter) {
			continue
		}
		target, err := os.Readlink(filepath.Join(dir, n))
		if err != nil {
			continue
		}
		name := filepath.Base(target)
		real, err := filepath.EvalSymlinks(filepath.Join(l.sysfs, "class", "block", name))
		if err != nil {
			continue
		}
		if !slices.ContainsFunc(out, func(d disk) bool { return d.name == name }) {
			out = append(out, disk{name: name, node: filepath.Join(l.dev, name), sysPath: real})
		}
	}
	return out, nil
}

// ready reports whether the disk has a size and a device node.
func (l storageLocator) ready(d disk) bool {
	s, err := readAttr(filepath.Join(l.sysfs, "class", "block", d.name), "size")
	if err != nil {
		return false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return false
	}
	_, err = os.Stat(d.node)
	return err == nil
}

func (l storageLocator) how() string {
	hubs := l.hubs()
	switch {
	case hubs != nil && l.filter != "":
		return fmt.Sprintf("on the storage port %s of the DUTlink's own hub whose /dev/disk/by-id name holds %q", filepath.Base(hubs[0]), l.filter)
	case hubs != nil:
		return "on the storage port " + filepath.Base(hubs[0]) + " of the DUTlink's own hub"
	}
	return fmt.Sprintf("whose /dev/disk/by-id name holds %q (%s)", l.filter, l.from)
}

// names lists the disks' names.
func names(ds []disk) string {
	n := make([]string, len(ds))
	for i, d := range ds {
		n[i] = d.name
	}
	return strings.Join(n, " and ")
}

// ambiguous explains more than one candidate.
func (l storageLocator) ambiguous(c []disk) error {
	fix := fmt.Sprintf("remove the extra disk, or set a storage filter (%s, or dut config %s set storage_filter) that names only the DUTlink's", EnvStorageFilter, l.board.Serial)
	if l.hubs() == nil {
		fix = fmt.Sprintf("the filter must name this board's stick and no other disk: set it to the stick's serial (dut config %s set storage_filter <stick serial>)", l.board.Serial)
	}
	return fmt.Errorf("%w: %s appeared %s; nothing was written: %s", ErrAmbiguousDisk, names(c), l.how(), fix)
}

// wait polls until exactly one candidate is ready, more than one appears, or
// the timeout or ctx ends.
func (l storageLocator) wait(ctx context.Context, timeout time.Duration) (disk, error) {
	if err := l.identity(); err != nil {
		return disk{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(diskPollEvery)
	defer tick.Stop()
	var last []disk
	for {
		c, err := l.candidates()
		if err != nil {
			return disk{}, err
		}
		last = c
		if len(c) > 1 {
			return disk{}, l.ambiguous(c)
		}
		if len(c) == 1 && l.ready(c[0]) {
			return c[0], nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			if len(last) == 1 {
				return disk{}, fmt.Errorf("%w: %s appeared but did not become ready (size 0) within %v: check the storage medium in the DUTlink: %w", ErrNoDisk, last[0].name, timeout, ctx.Err())
			}
			return disk{}, fmt.Errorf("%w: no disk appeared %s within %v after switching the storage to the host: check that the USB storage is plugged into the DUTlink (serial %s): %w", ErrNoDisk, l.how(), timeout, l.board.Serial, ctx.Err())
		}
	}
}

// stillOnly proves, right before a write, that d is still the one disk
// that could be the board's: a stranger that matches the board's filter,
// plugged in since d was found, makes the identity doubtful.
func (l storageLocator) stillOnly(d disk) error {
	c, err := l.candidates()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotBoardDisk, err)
	}
	if len(c) == 1 && c[0].name == d.name && c[0].sysPath == d.sysPath {
		return nil
	}
	if len(c) == 0 {
		return fmt.Errorf("%w: the DUTlink's disk %s is gone; switch the storage off and back to the host", ErrNotBoardDisk, d.name)
	}
	return fmt.Errorf("%w: %w", ErrNotBoardDisk, l.ambiguous(c))
}

// blockDev reads a block device's major:minor from sysfs.
func (l storageLocator) blockDev(d disk) (string, error) {
	return readAttr(filepath.Join(l.sysfs, "class", "block", d.name), "dev")
}

// check proves that f is disk d.
func (l storageLocator) check(f *os.File, d disk, fileDisks bool) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%w: stat %s: %w", ErrNotBoardDisk, f.Name(), err)
	}
	mode := st.Mode()
	switch {
	case mode&fs.ModeDevice != 0 && mode&fs.ModeCharDevice == 0:
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%w: %s: no device number", ErrNotBoardDisk, f.Name())
		}
		got := fmt.Sprintf("%d:%d", unix.Major(uint64(sys.Rdev)), unix.Minor(uint64(sys.Rdev)))
		want, err := l.blockDev(d)
		if err != nil {
			return fmt.Errorf("%w: the DUTlink's disk %s is gone from sysfs: %w", ErrNotBoardDisk, d.name, err)
		}
		if got != want {
			return fmt.Errorf("%w: %s is block device %s, but the DUTlink's disk %s is %s", ErrNotBoardDisk, f.Name(), got, d.name, want)
		}
		real, err := filepath.EvalSymlinks(filepath.Join(l.sysfs, "class", "block", d.name))
		if err != nil || real != d.sysPath {
			return fmt.Errorf("%w: the DUTlink's disk %s changed since it was identified; switch the storage off and back to the host", ErrNotBoardDisk, d.name)
		}
		return l.stillOnly(d)
	case mode.IsRegular() && fileDisks:
		want, err := os.Stat(d.node)
		if err != nil {
			return fmt.Errorf("%w: the DUTlink's disk %s is gone: %w", ErrNotBoardDisk, d.node, err)
		}
		if !os.SameFile(st, want) {
			return fmt.Errorf("%w: %s is not the file %s that stands for the DUTlink's disk", ErrNotBoardDisk, f.Name(), d.node)
		}
		return l.stillOnly(d)
	case mode.IsRegular():
		return fmt.Errorf("%w: %s is a regular file, not a block device (regular files are accepted only with %s=1, for simulators)", ErrNotBoardDisk, f.Name(), EnvFileDisks)
	}
	return fmt.Errorf("%w: %s is neither a block device nor a regular file", ErrNotBoardDisk, f.Name())
}

// release flushes the disk and ejects it through sysfs, before the mux
// takes it away from the host. A disk that is already gone is fine, and so
// is one whose name now belongs to another disk (its sysfs path changed):
// that one is left alone.
func (l storageLocator) release(d disk) error {
	if real, err := filepath.EvalSymlinks(filepath.Join(l.sysfs, "class", "block", d.name)); err != nil || real != d.sysPath {
		return nil // gone, or the name is another disk's now: not ours to touch
	}
	f, err := os.OpenFile(d.node, os.O_RDONLY, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, unix.ENXIO), errors.Is(err, unix.ENODEV):
		return nil
	case err != nil:
		return fmt.Errorf("opening %s to flush it: %w", d.node, err)
	}
	err = f.Sync()
	if err == nil {
		// Dropping the host's buffers needs CAP_SYS_ADMIN; the fsync above
		// has made the data durable already, so without the privilege
		// this step is skipped.
		if ferr := flushBuffers(f); !errors.Is(ferr, fs.ErrPermission) {
			err = ferr
		}
	}
	f.Close()
	if err != nil {
		return fmt.Errorf("flushing %s: %w; the storage stays at the host so that no data is lost: retry, or check the disk", d.node, err)
	}
	for _, p := range []string{
		filepath.Join(l.sysfs, "block", d.name, "device", "delete"),
		filepath.Join(l.sysfs, "class", "block", d.name, "device", "delete"),
	} {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil {
			_, err = f.Write([]byte("1"))
			err = errors.Join(err, f.Close())
		}
		if errors.Is(err, fs.ErrPermission) {
			// Ejecting needs root (or a udev rule); the disk is synced,
			// so switching the mux away is safe, if less tidy.
			return nil
		}
		if err != nil {
			return fmt.Errorf("ejecting %s through %s: %w", d.name, p, err)
		}
		return nil
	}
	return nil // gone already
}
