package dutlinksim

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// BoardOptions describes a board to add to a [Lab].
type BoardOptions struct {
	// Serial is the USB serial (default: 8 hex digits by order of
	// addition, "0000a001", ...).
	Serial string
	// Version is the firmware version: "0.07", "0.08" (the default) or
	// "0.09". 0.07 has no vendor interface, boots at the shell and calls
	// itself "Jumpstarter"; 0.08 and 0.09 have vendor interface 3, boot in
	// console mode and call themselves "Dutlink". A vendor Power request
	// runs the sequence of the last Refresh's snapshot on 0.08 and the one
	// in flash on 0.09. Earlier versions behave as 0.07, later ones as 0.09.
	Version string
	// Config is the config in the board's flash (name, tags, usb_console,
	// power_on, power_off, power_rescue, json), as another tool may have
	// written it; values are cut to the flash field sizes (json: 512 bytes).
	Config map[string]string
	// DFU puts the board in DFU mode: no tty, no vendor interface.
	DFU bool
	// DiskSize is the size of the storage medium (default 4 MiB).
	DiskSize int64
	// NoDisk leaves the storage slot empty: nothing appears at the host.
	NoDisk bool
	// TwoDisks makes two disks appear at the host at once.
	TwoDisks bool
	// DiskDelay is the time from the disk's appearance until its size is
	// non-zero (default 30 ms).
	DiskDelay time.Duration
	// DiskAppearDelay is the time from "storage host" until the disk
	// appears in sysfs and /dev at all (default 0: at once).
	DiskAppearDelay time.Duration
	// DiskID is the stick's identity: its /dev/disk/by-id name is
	// "usb-" + DiskID + "-0:0" and its USB device's serial attribute is
	// DiskID (default "DUTlinkSim_Storage_<serial>").
	DiskID string
	// RootPort plugs the board as hardware 1.1.0 is: without a hub, its
	// USB device right below the root hub (1-N), and its disk, when the
	// mux is at the host, on another root port (1-M) of its own, so that
	// topology cannot tie the disk to the board. The default is hardware
	// 2.0.0's layout: the board and its disk below a hub of their own.
	RootPort bool
	// USBConsole, when set, adds a separate USB UART for the DUT console,
	// listed under dev/serial/by-id with this string in its name.
	USBConsole string
	// BootDelay is the time from DUT power-on to its banner (default
	// 100 ms).
	BootDelay time.Duration
}

// PowerChange is one change of the DUT's power: when it happened and
// whether the DUT got power (On) or lost it.
type PowerChange struct {
	// At is when the power changed.
	At time.Time
	// On is the new state: true when the DUT got power.
	On bool
}

type fwMode int

const (
	modeConsole fwMode = iota
	modeShell
)

// shellReplyMax is the size of the firmware's shell reply buffer.
const shellReplyMax = 512

// fieldSizes mirrors the firmware's flash layout.
var fieldSizes = map[string]int{"name": 64, "tags": 256, "usb_console": 64, "power_on": 32, "power_off": 32, "power_rescue": 32, "json": 512}
var shellKeys = []string{"name", "tags", "json", "usb_console", "power_on", "power_off", "power_rescue"}
var usbKeys = []string{"name", "tags", "usb_console", "power_on", "power_off", "power_rescue"}
var pinLetters = []string{"r", "a", "b", "c", "d"}
var pinNames = []string{"/RESET", "CTL_A", "CTL_B", "CTL_C", "CTL_D"}

// Board is one simulated DUTlink with the firmware's behaviour: the shell
// and console modes on its tty (a pty), the vendor control requests, the
// power sequences, the storage mux (its disk appears in the lab's sysfs
// and /dev while at the host) and a tiny DUT on the UART that prints a
// banner when powered and answers every line with "echo: <line>".
type Board struct {
	lab    *Lab
	o      BoardOptions
	serial string
	vmaj   int
	vmin   int
	topDir string // the board's outermost sysfs directory: its hub, or its device on a root port
	devDir string // the board's USB device
	tty    string // dev/ttyACMn
	disk   string // the storage medium's file

	diskParent string   // the sysfs directory the disks appear below
	diskPorts  []string // the disks' USB port names

	master, slave *os.File
	uartM, uartS  *os.File
	out           chan []byte
	uartOut       chan []byte
	stop          chan struct{}
	wg            sync.WaitGroup

	// exec is the firmware's one-thing-at-a-time lock: held (full) while
	// a request, a latched action or a shell byte is handled.
	exec chan struct{}

	mu         sync.Mutex
	gone       bool
	abort      chan struct{} // closed when the running firmware stops (reboot, unplug)
	usbErr     error
	cfgFault   bool
	power      bool
	powerGen   int
	powerLog   []PowerChange
	storage    string
	pins       [5]string
	cfg        map[string]string
	snapCfg    map[string]string
	snapMeter  [3]float64
	mode       fwMode
	monitor    bool
	line       []byte
	ctrlB      int
	lastCR     bool
	dutLine    []byte
	dutInput   []byte
	events     []string
	disks      []*simDisk
	storageGen int
	ejected    []string
	hooks      map[string][]func()
}

// AddBoard plugs a board into the lab: behind a hub of its own, or with
// [BoardOptions.RootPort] straight into a root port.
func (l *Lab) AddBoard(o BoardOptions) (*Board, error) {
	n := l.reservePort()
	o = withDefaults(o, n)
	vmaj, vmin, err := parseVersion(o.Version)
	if err != nil {
		return nil, err
	}
	b := newBoard(l, o, vmaj, vmin)
	if err := b.plug(n); err != nil {
		b.Unplug()
		return nil, err
	}
	l.mu.Lock()
	l.boards = append(l.boards, b)
	l.mu.Unlock()
	return b, nil
}

func withDefaults(o BoardOptions, n int) BoardOptions {
	if o.Serial == "" {
		o.Serial = fmt.Sprintf("0000a%03x", n)
	}
	if o.Version == "" {
		o.Version = "0.08"
	}
	if o.DiskSize == 0 {
		o.DiskSize = 4 << 20
	}
	if o.DiskDelay == 0 {
		o.DiskDelay = 30 * time.Millisecond
	}
	if o.BootDelay == 0 {
		o.BootDelay = 100 * time.Millisecond
	}
	if o.DiskID == "" {
		o.DiskID = "DUTlinkSim_Storage_" + o.Serial
	}
	return o
}

func parseVersion(s string) (int, int, error) {
	maj, mnr, ok := strings.Cut(s, ".")
	vmaj, err1 := strconv.Atoi(maj)
	vmin, err2 := strconv.Atoi(mnr)
	if !ok || err1 != nil || err2 != nil || vmaj < 0 || vmin < 0 || vmin > 99 {
		return 0, 0, fmt.Errorf("dutlinksim: version %q is not like 0.08", s)
	}
	return vmaj, vmin, nil
}

func newBoard(l *Lab, o BoardOptions, vmaj, vmin int) *Board {
	b := &Board{
		lab: l, o: o, serial: o.Serial, vmaj: vmaj, vmin: vmin,
		out: make(chan []byte, 4096), uartOut: make(chan []byte, 256), stop: make(chan struct{}),
		exec: make(chan struct{}, 1), cfg: map[string]string{}, storage: "off", hooks: map[string][]func(){},
	}
	for _, k := range shellKeys {
		b.cfg[k] = ""
	}
	for k, v := range o.Config {
		b.cfg[k] = truncate(k, v)
	}
	b.disk = filepath.Join(l.Disks, b.serial+".img")
	b.boot()
	return b
}

// plug lays the board out in sysfs and /dev and starts its firmware.
func (b *Board) plug(n int) error {
	if err := makeDisk(b.disk, b.o.DiskSize, 0); err != nil {
		return err
	}
	links, err := b.layout(n)
	if err != nil {
		return err
	}
	if !b.o.DFU {
		if err := b.startTTY(n, links); err != nil {
			return err
		}
	}
	if b.o.USBConsole != "" {
		if err := b.startUSBConsole(); err != nil {
			return err
		}
	}
	for name, target := range links {
		if err := b.lab.link(name, target); err != nil {
			return err
		}
	}
	return nil
}

// layout writes the board's USB device (and hub) and interfaces, and
// returns the bus/usb/devices links to make.
func (b *Board) layout(n int) (map[string]string, error) {
	l := b.lab
	port := fmt.Sprintf("1-%d", n)
	links := map[string]string{}
	devPort := port
	if b.o.RootPort {
		b.topDir = filepath.Join(l.root, port)
		b.devDir = b.topDir
		b.diskParent = l.root
		b.diskPorts = []string{fmt.Sprintf("1-%d", l.reservePort())}
		if b.o.TwoDisks {
			b.diskPorts = append(b.diskPorts, fmt.Sprintf("1-%d", l.reservePort()))
		}
	} else {
		// Hardware 2.0.0: a hub of the board's own, the controller on
		// its port 6, the storage mux on its port 3 (for TwoDisks, a
		// two-slot reader: a small hub on port 3 with a disk on each of
		// its ports).
		devPort = port + ".6"
		b.topDir = filepath.Join(l.root, port)
		b.devDir = filepath.Join(b.topDir, devPort)
		b.diskParent = b.topDir
		b.diskPorts = []string{port + ".3"}
		if b.o.TwoDisks {
			b.diskParent = filepath.Join(b.topDir, port+".3")
			b.diskPorts = []string{port + ".3.1", port + ".3.2"}
		}
		if err := writeAttrs(b.topDir, map[string]string{"idVendor": "0424", "idProduct": "7206", "busnum": "1", "devnum": strconv.Itoa(2 * n)}); err != nil {
			return nil, err
		}
		links[port] = b.topDir
	}
	if err := writeAttrs(b.devDir, b.deviceAttrs(n)); err != nil {
		return nil, err
	}
	links[devPort] = b.devDir
	for _, ifc := range b.interfaces() {
		dir := filepath.Join(b.devDir, fmt.Sprintf("%s:1.%d", devPort, ifc.num))
		links[filepath.Base(dir)] = dir
		if err := writeAttrs(dir, ifc.attrs()); err != nil {
			return nil, err
		}
	}
	return links, nil
}

func (b *Board) deviceAttrs(n int) map[string]string {
	product := "Dutlink"
	if !b.hasVendorInterface() {
		product = "Jumpstarter"
	}
	return map[string]string{
		"idVendor": "2b23", "idProduct": "1012", "serial": b.serial, "bcdDevice": fmt.Sprintf("%02d%02d", b.vmaj, b.vmin),
		"manufacturer": "Red Hat Inc.", "product": product, "busnum": "1", "devnum": strconv.Itoa(2*n + 1),
	}
}

type usbInterface struct {
	num              int
	class, sub, prot string
}

func (i usbInterface) attrs() map[string]string {
	return map[string]string{"bInterfaceNumber": fmt.Sprintf("%02x", i.num), "bInterfaceClass": i.class, "bInterfaceSubClass": i.sub, "bInterfaceProtocol": i.prot}
}

// interfaces lists the board's USB interfaces by firmware and mode.
func (b *Board) interfaces() []usbInterface {
	if b.o.DFU {
		return []usbInterface{{0, "fe", "01", "02"}}
	}
	ifcs := []usbInterface{{0, "02", "02", "01"}, {1, "0a", "00", "00"}, {2, "fe", "01", "01"}}
	if b.hasVendorInterface() {
		ifcs = append(ifcs, usbInterface{vendorInterface, "ff", "01", "01"})
	}
	return ifcs
}

// startTTY makes the board's ttyACM (a pty) and starts the firmware's
// tty tasks.
func (b *Board) startTTY(n int, links map[string]string) error {
	acm := filepath.Join(b.devDir, filepath.Base(b.devDir)+":1.0")
	ttyName := fmt.Sprintf("ttyACM%d", n-1)
	if err := writeAttrs(filepath.Join(acm, "tty", ttyName), map[string]string{"dev": "166:" + strconv.Itoa(n-1)}); err != nil {
		return err
	}
	m, s, pts, err := openPTY()
	if err != nil {
		return err
	}
	b.master, b.slave = m, s
	b.tty = filepath.Join(b.lab.Dev, ttyName)
	if err := os.Symlink(pts, b.tty); err != nil {
		return fmt.Errorf("dutlinksim: %w", err)
	}
	chunks := make(chan chunk, 4)
	b.wg.Add(3)
	go b.hostReader(m, chunks)
	go b.packetLoop(chunks)
	go b.writeLoop(m, b.out)
	return nil
}

// startUSBConsole makes the DUT's own USB UART.
func (b *Board) startUSBConsole() error {
	m, s, pts, err := openPTY()
	if err != nil {
		return err
	}
	b.uartM, b.uartS = m, s
	if err := os.Symlink(pts, filepath.Join(b.lab.Dev, "serial", "by-id", "usb-NVIDIA_Tegra_"+b.o.USBConsole+"-if01")); err != nil {
		return fmt.Errorf("dutlinksim: %w", err)
	}
	b.wg.Add(2)
	go b.readLoop(m, b.dutByte)
	go b.writeLoop(m, b.uartOut)
	return nil
}

func truncate(key, v string) string {
	if n := fieldSizes[key]; len(v) > n {
		return v[:n]
	}
	return v
}

// hasVendorInterface reports whether the firmware has the vendor
// interface (0.08 and later, not in DFU mode).
func (b *Board) hasVendorInterface() bool {
	return !b.o.DFU && (b.vmaj > 0 || b.vmin >= 8)
}

// flashSequences reports whether vendor Power requests read the sequence
// from flash (0.09 and later) rather than from the snapshot.
func (b *Board) flashSequences() bool { return b.vmaj > 0 || b.vmin >= 9 }

// emptyConfig is the all-zero snapshot of a freshly booted firmware.
func emptyConfig() map[string]string {
	m := map[string]string{}
	for _, k := range shellKeys {
		m[k] = ""
	}
	return m
}

// boot puts the firmware in its power-up state; the config in flash is
// kept, the snapshot is lost.
func (b *Board) boot() {
	b.losePowerLocked()
	for i := range b.pins {
		b.pins[i] = "z"
	}
	b.mode = modeConsole
	if !b.hasVendorInterface() {
		b.mode = modeShell
	}
	b.monitor = false
	b.line, b.ctrlB, b.lastCR = nil, 0, false
	b.setStorageLocked("off")
	b.snapCfg = emptyConfig()
	b.snapMeter = [3]float64{}
	b.abort = make(chan struct{})
}

// Serial returns the board's serial number.
func (b *Board) Serial() string { return b.serial }

// TTY returns the board's tty path in the lab's dev root.
func (b *Board) TTY() string { return b.tty }

// DiskFile returns the file that holds the board's storage medium.
func (b *Board) DiskFile() string { return b.disk }

// DiskID returns the stick's identity: its by-id name is "usb-" + DiskID +
// "-0:0".
func (b *Board) DiskID() string { return b.o.DiskID }

// SysPath returns the board's USB device directory in the lab's sysfs.
func (b *Board) SysPath() string { return b.devDir }

// Power reports whether the DUT is powered.
func (b *Board) Power() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.power }

// PowerLog returns every change of the DUT's power so far, in order.
func (b *Board) PowerLog() []PowerChange {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.powerLog)
}

// Storage returns the mux position: "off", "host" or "dut".
func (b *Board) Storage() string { b.mu.Lock(); defer b.mu.Unlock(); return b.storage }

// Pin returns a pin's level ("l", "h" or "z"); pins are r, a, b, c, d.
func (b *Board) Pin(letter string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pins[slices.Index(pinLetters, letter)]
}

// Config returns the config in the board's flash.
func (b *Board) Config() map[string]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.cfg)
}

// AtShell reports whether the firmware is at its shell (not console mode).
func (b *Board) AtShell() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.mode == modeShell }

// Events returns what the board did, in order: "power on", "power off",
// "pin b l", "wait 500ms", "storage host", ...
func (b *Board) Events() []string { b.mu.Lock(); defer b.mu.Unlock(); return slices.Clone(b.events) }

// DUTInput returns every byte the DUT received on its UART.
func (b *Board) DUTInput() []byte { b.mu.Lock(); defer b.mu.Unlock(); return slices.Clone(b.dutInput) }

// Ejected returns the disks the host ejected through sysfs.
func (b *Board) Ejected() []string { b.mu.Lock(); defer b.mu.Unlock(); return slices.Clone(b.ejected) }

// OnStorage registers fn to run once, in a goroutine of its own, when the
// firmware next switches the mux to mode ("off", "host" or "dut") on a
// shell command or a vendor request.
func (b *Board) OnStorage(mode string, fn func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hooks[mode] = append(b.hooks[mode], fn)
}

// Reboot restarts the firmware: a running power sequence stops, the DUT
// loses power, pins float, storage goes off, the mode is the version's
// boot mode and the Refresh snapshot is lost; the config in flash is kept.
func (b *Board) Reboot() {
	b.mu.Lock()
	closeOnce(b.abort)
	b.mu.Unlock()
	b.lock()
	defer b.unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.boot()
}

// FailUSB makes every later control transfer fail with err (nil heals).
func (b *Board) FailUSB(err error) { b.mu.Lock(); defer b.mu.Unlock(); b.usbErr = err }

// FailConfigWrites makes the flash refuse config writes: the shell answers
// "error: flash write failed" and USB writes are dropped.
func (b *Board) FailConfigWrites(fail bool) { b.mu.Lock(); defer b.mu.Unlock(); b.cfgFault = fail }

// DUTPrint makes the DUT print s on its UART.
func (b *Board) DUTPrint(s string) { b.uart([]byte(s)) }

// Unplug makes the board vanish: a running power sequence stops, the DUT
// loses power, its tty hangs up, its sysfs entries and disks disappear and
// USB transfers fail with a no-device error.
func (b *Board) Unplug() {
	b.mu.Lock()
	if b.gone {
		b.mu.Unlock()
		return
	}
	b.gone = true
	b.setStorageLocked("off")
	b.losePowerLocked()
	closeOnce(b.abort)
	close(b.stop)
	b.mu.Unlock()
	for _, f := range []*os.File{b.master, b.slave, b.uartM, b.uartS} {
		if f != nil {
			f.Close()
		}
	}
	b.wg.Wait()
	if b.tty != "" {
		_ = os.Remove(b.tty)
	}
	b.lab.unlinkBelow(b.topDir)
	if b.topDir != "" {
		_ = os.RemoveAll(b.topDir)
	}
}

// closeOnce closes c unless it is closed already (callers hold b.mu).
func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

// lock takes the firmware's one-thing-at-a-time lock.
func (b *Board) lock() { b.exec <- struct{}{} }

// unlock releases the firmware's lock.
func (b *Board) unlock() { <-b.exec }

// lockCtx takes the firmware's lock unless ctx ends first.
func (b *Board) lockCtx(ctx context.Context) error {
	select {
	case b.exec <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *Board) event(format string, args ...any) {
	b.events = append(b.events, fmt.Sprintf(format, args...))
}
