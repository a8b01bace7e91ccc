package dutlinksim

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/dutlink"
)

// BoardOptions describes a board to add to a [Lab].
type BoardOptions struct {
	// Serial is the USB serial (default: 8 hex digits by order of
	// addition, "0000a001", ...).
	Serial string
	// Version is the firmware version, "0.07" or "0.08" (the default).
	// 0.07 has no vendor interface and boots at the shell; 0.08 has one
	// and boots in console mode.
	Version string
	// Config is the config in the board's flash (name, tags, usb_console,
	// power_on, power_off, power_rescue, json).
	Config map[string]string
	// DFU puts the board in DFU mode: no tty, no vendor interface.
	DFU bool
	// DiskSize is the size of the storage medium (default 4 MiB).
	DiskSize int64
	// NoDisk leaves the storage slot empty: nothing appears at the host.
	NoDisk bool
	// TwoDisks makes two disks appear below the board's hub at once.
	TwoDisks bool
	// DiskDelay is the time from "storage host" until the disk's size is
	// non-zero (default 30 ms).
	DiskDelay time.Duration
	// USBConsole, when set, adds a separate USB UART for the DUT console,
	// listed under dev/serial/by-id with this string in its name.
	USBConsole string
	// BootDelay is the time from DUT power-on to its banner (default
	// 100 ms).
	BootDelay time.Duration
}

type fwMode int

const (
	modeConsole fwMode = iota
	modeShell
)

// fieldSizes mirrors the firmware's flash layout.
// shellReplyMax is the size of the firmware's shell reply buffer.
const shellReplyMax = 512

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
	hubDir string
	devDir string
	tty    string // dev/ttyACMn
	disk   string // the storage medium's file

	master, slave *os.File
	uartM, uartS  *os.File
	out           chan []byte
	uartOut       chan []byte
	stop          chan struct{}
	wg            sync.WaitGroup

	exec sync.Mutex // the firmware does one thing at a time

	mu         sync.Mutex
	gone       bool
	usbErr     error
	cfgFault   bool
	power      bool
	powerGen   int
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
}

// AddBoard plugs a board into the lab behind a hub of its own.
func (l *Lab) AddBoard(o BoardOptions) (*Board, error) {
	l.mu.Lock()
	n := l.nextHub
	l.nextHub++
	l.mu.Unlock()
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
	maj, mnr, ok := strings.Cut(o.Version, ".")
	vmaj, err1 := strconv.Atoi(maj)
	vmin, err2 := strconv.Atoi(mnr)
	if !ok || err1 != nil || err2 != nil {
		return nil, fmt.Errorf("dutlinksim: version %q is not like 0.08", o.Version)
	}
	b := &Board{
		lab: l, o: o, serial: o.Serial, vmaj: vmaj, vmin: vmin,
		out: make(chan []byte, 4096), uartOut: make(chan []byte, 256), stop: make(chan struct{}),
		cfg: map[string]string{}, storage: "off",
	}
	for _, k := range shellKeys {
		b.cfg[k] = ""
	}
	for k, v := range o.Config {
		b.cfg[k] = truncate(k, v)
	}
	b.boot()
	port := fmt.Sprintf("1-%d", n)
	b.hubDir = filepath.Join(l.root, port)
	b.devDir = filepath.Join(b.hubDir, port+".1")
	b.disk = filepath.Join(l.Disks, b.serial+".img")
	if err := makeDisk(b.disk, o.DiskSize, 0); err != nil {
		return nil, err
	}
	if err := writeAttrs(b.hubDir, map[string]string{"idVendor": "05e3", "idProduct": "0610", "busnum": "1", "devnum": strconv.Itoa(2 * n)}); err != nil {
		return nil, err
	}
	product := "Dutlink"
	if !b.usb() {
		product = "Jumpstarter"
	}
	if err := writeAttrs(b.devDir, map[string]string{
		"idVendor": "2b23", "idProduct": "1012", "serial": b.serial, "bcdDevice": fmt.Sprintf("%02d%02d", vmaj, vmin),
		"manufacturer": "Red Hat Inc.", "product": product, "busnum": "1", "devnum": strconv.Itoa(2*n + 1),
	}); err != nil {
		return nil, err
	}
	links := map[string]string{port: b.hubDir, port + ".1": b.devDir}
	iface := func(num int, class, sub, proto string) string {
		dir := filepath.Join(b.devDir, fmt.Sprintf("%s.1:1.%d", port, num))
		links[filepath.Base(dir)] = dir
		_ = writeAttrs(dir, map[string]string{"bInterfaceNumber": fmt.Sprintf("%02x", num), "bInterfaceClass": class, "bInterfaceSubClass": sub, "bInterfaceProtocol": proto})
		return dir
	}
	if o.DFU {
		iface(0, "fe", "01", "02")
	} else {
		acm := iface(0, "02", "02", "01")
		iface(1, "0a", "00", "00")
		iface(2, "fe", "01", "01")
		if b.usb() {
			iface(3, "ff", "01", "01")
		}
		ttyName := fmt.Sprintf("ttyACM%d", n-1)
		if err := writeAttrs(filepath.Join(acm, "tty", ttyName), map[string]string{"dev": "166:" + strconv.Itoa(n-1)}); err != nil {
			return nil, err
		}
		m, s, pts, err := openPTY()
		if err != nil {
			return nil, err
		}
		b.master, b.slave = m, s
		b.tty = filepath.Join(l.Dev, ttyName)
		if err := os.Symlink(pts, b.tty); err != nil {
			return nil, fmt.Errorf("dutlinksim: %w", err)
		}
		b.wg.Add(2)
		go b.readLoop(m, b.input)
		go b.writeLoop(m, b.out)
	}
	if o.USBConsole != "" {
		m, s, pts, err := openPTY()
		if err != nil {
			return nil, err
		}
		b.uartM, b.uartS = m, s
		if err := os.Symlink(pts, filepath.Join(l.Dev, "serial", "by-id", "usb-NVIDIA_Tegra_"+o.USBConsole+"-if01")); err != nil {
			return nil, fmt.Errorf("dutlinksim: %w", err)
		}
		b.wg.Add(2)
		go b.readLoop(m, b.dutByte)
		go b.writeLoop(m, b.uartOut)
	}
	for name, target := range links {
		if err := l.link(name, target); err != nil {
			return nil, err
		}
	}
	l.mu.Lock()
	l.boards = append(l.boards, b)
	l.mu.Unlock()
	return b, nil
}

func truncate(key, v string) string {
	if n := fieldSizes[key]; len(v) > n {
		return v[:n]
	}
	return v
}

func (b *Board) usb() bool { return !b.o.DFU && (b.vmaj > 0 || b.vmin >= 8) }

// boot puts the firmware in its power-up state; the config is kept.
func (b *Board) boot() {
	b.power = false
	b.powerGen++
	for i := range b.pins {
		b.pins[i] = "z"
	}
	b.mode = modeConsole
	if !b.usb() {
		b.mode = modeShell
	}
	b.monitor = false
	b.line, b.ctrlB = nil, 0
	b.setStorageLocked("off")
	b.snapCfg = maps.Clone(b.cfg)
}

// Serial returns the board's serial number.
func (b *Board) Serial() string { return b.serial }

// TTY returns the board's tty path in the lab's dev root.
func (b *Board) TTY() string { return b.tty }

// DiskFile returns the file that holds the board's storage medium.
func (b *Board) DiskFile() string { return b.disk }

// Power reports whether the DUT is powered.
func (b *Board) Power() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.power }

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

// Reboot restarts the firmware: power off, pins floating, storage off,
// boot mode by version; the config in flash is kept.
func (b *Board) Reboot() {
	b.exec.Lock()
	defer b.exec.Unlock()
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

// Unplug makes the board vanish: its tty hangs up, its sysfs entries and
// disks disappear and USB transfers fail with a no-device error.
func (b *Board) Unplug() {
	b.mu.Lock()
	if b.gone {
		b.mu.Unlock()
		return
	}
	b.gone = true
	b.setStorageLocked("off")
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
	ents, _ := os.ReadDir(filepath.Join(b.lab.Sys, "bus", "usb", "devices"))
	for _, e := range ents {
		p := filepath.Join(b.lab.Sys, "bus", "usb", "devices", e.Name())
		if t, err := os.Readlink(p); err == nil && strings.HasPrefix(t, b.hubDir) {
			_ = os.Remove(p)
		}
	}
	_ = os.RemoveAll(b.hubDir)
}

func (b *Board) event(format string, args ...any) {
	b.events = append(b.events, fmt.Sprintf(format, args...))
}

func (b *Board) readLoop(f *os.File, handle func(byte)) {
	defer b.wg.Done()
	buf := make([]byte, 256)
	for {
		n, err := f.Read(buf)
		for _, c := range buf[:n] {
			handle(c)
		}
		if err != nil {
			return
		}
	}
}

func (b *Board) writeLoop(f *os.File, q chan []byte) {
	defer b.wg.Done()
	for {
		select {
		case p := <-q:
			if _, err := f.Write(p); err != nil {
				return
			}
		case <-b.stop:
			return
		}
	}
}

// emit sends firmware output to the host on the board's tty; like the
// board's queue it drops what does not fit.
// emit queues shell output (echo, replies, prompts) for the tty. The queue
// holds a few thousand writes, the echo of the longest line the driver may
// send included; beyond that output is dropped, as a full USB queue would.
func (b *Board) emit(s string) {
	select {
	case b.out <- []byte(s):
	default:
	}
}

// uart is DUT output: it reaches the host on the separate UART when there
// is one, else on the tty in console mode or at the shell with the monitor
// on; at the shell with the monitor off it is discarded.
func (b *Board) uart(p []byte) {
	if b.uartM != nil {
		select {
		case b.uartOut <- p:
		default:
		}
		return
	}
	b.mu.Lock()
	pass := b.mode == modeConsole || b.monitor
	b.mu.Unlock()
	if pass {
		b.emit(string(p))
	}
}

// dutByte is a byte the DUT receives on its UART.
func (b *Board) dutByte(c byte) {
	b.mu.Lock()
	b.dutInput = append(b.dutInput, c)
	powered := b.power
	var line string
	done := false
	switch {
	case c == '\r' || c == '\n':
		line, done = string(b.dutLine), len(b.dutLine) > 0
		b.dutLine = nil
	case c >= 0x20 && c < 0x7f:
		b.dutLine = append(b.dutLine, c)
	}
	b.mu.Unlock()
	if done && powered {
		b.uart([]byte("echo: " + line + "\r\n"))
	}
}

// input is a byte from the host on the board's tty.
func (b *Board) input(c byte) {
	b.exec.Lock()
	defer b.exec.Unlock()
	b.mu.Lock()
	if b.mode == modeConsole {
		if c == 0x02 {
			b.ctrlB++
		} else {
			b.ctrlB = 0
		}
		escape := b.ctrlB == 5
		if escape {
			b.ctrlB, b.mode, b.line = 0, modeShell, nil
		}
		b.mu.Unlock()
		if b.uartM == nil {
			b.dutByte(c)
		}
		if escape {
			b.emit("\r\n#> ")
		}
		return
	}
	lastCR := b.lastCR
	b.lastCR = c == '\r'
	switch {
	case c == '\n' && lastCR:
		b.mu.Unlock()
	case c == '\r' || c == '\n':
		line := string(b.line)
		b.line = nil
		b.mu.Unlock()
		b.emit("\r\n")
		b.command(line)
	case c == 0x7f || c == 0x08:
		if len(b.line) > 0 {
			b.line = b.line[:len(b.line)-1]
			b.mu.Unlock()
			b.emit("\b \b")
			return
		}
		b.mu.Unlock()
	case c >= 0x20 && c < 0x7f:
		b.line = append(b.line, c)
		b.mu.Unlock()
		b.emit(string([]byte{c}))
	default:
		b.mu.Unlock() // Ctrl-B and other control bytes are ignored at the shell
	}
}

var powerCmds = map[string]int{"off": 0, "on": 1, "force-off": 2, "force-on": 3, "rescue": 4}
var powerReplies = []string{"Device powered off", "Device powered on", "Device forced off", "Device forced on", "Device powered on to rescue"}

// command runs one shell line and prints the reply and the prompt.
func (b *Board) command(line string) {
	f := strings.Fields(line)
	reply := func(s string) { b.emit(s + "\r\n#> ") }
	if len(f) == 0 {
		b.emit("#> ")
		return
	}
	arg := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	switch f[0] {
	case "power":
		a, ok := powerCmds[arg(1)]
		if !ok || len(f) != 2 {
			reply("unsupported command")
			return
		}
		b.doPower(context.Background(), a)
		reply(powerReplies[a])
	case "storage":
		m := map[string]string{"host": "storage connected to host", "dut": "storage connected to device under test", "off": "storage disconnected"}
		r, ok := m[arg(1)]
		if !ok || len(f) != 2 {
			reply("unsupported command")
			return
		}
		b.mu.Lock()
		b.setStorageLocked(arg(1))
		b.mu.Unlock()
		reply(r)
	case "set":
		pi := slices.Index(pinLetters, arg(1))
		lv := map[string]string{"l": "LOW", "h": "HIGH", "z": "HIGH IMPEDANCE"}[arg(2)]
		if pi < 0 || lv == "" || len(f) != 3 {
			reply("unsupported command")
			return
		}
		b.mu.Lock()
		b.setPinLocked(pi, arg(2))
		b.mu.Unlock()
		reply("Set " + pinNames[pi] + " to " + lv)
	case "set-config":
		key := arg(1)
		if !slices.Contains(shellKeys, key) || len(f) > 3 {
			reply("unsupported command")
			return
		}
		b.mu.Lock()
		fault := b.cfgFault
		v := truncate(key, arg(2))
		if !fault {
			b.cfg[key] = v
		}
		b.mu.Unlock()
		if fault {
			reply("error: flash write failed")
			return
		}
		reply("Set " + key + " to " + v)
	case "get-config":
		b.mu.Lock()
		var s strings.Builder
		for _, k := range shellKeys {
			fmt.Fprintf(&s, "%s: %s\r\n", k, b.cfg[k])
		}
		b.mu.Unlock()
		// The firmware builds the reply in one 512-byte buffer and drops
		// what does not fit, the prompt included.
		out := s.String() + "#> "
		if len(out) > shellReplyMax {
			out = out[:shellReplyMax]
		}
		b.emit(out)
	case "console":
		b.mu.Lock()
		b.mode = modeConsole
		b.ctrlB = 0
		b.mu.Unlock()
		b.emit("Entering console mode, type CTRL+B 5 times to exit\r\n")
	case "monitor":
		on := arg(1) == "on"
		if (!on && arg(1) != "off") || len(f) != 2 {
			reply("unsupported command")
			return
		}
		b.mu.Lock()
		b.monitor = on
		b.mu.Unlock()
		if on {
			reply("Monitor enabled")
		} else {
			reply("Monitor disabled")
		}
	case "meter":
		if arg(1) != "read" {
			reply("unsupported command")
			return
		}
		w, v, a := b.meter()
		reply(fmt.Sprintf("%.2fA %.2fV %.2fW", a, v, w))
	case "version":
		reply(b.versionString())
	default:
		reply("unsupported command")
	}
}

func (b *Board) versionString() string {
	return fmt.Sprintf("%d.%02d git-ref: dutlinksim", b.vmaj, b.vmin)
}

// meter returns watts, volts and amps: 5 V, 0.6 A while powered.
func (b *Board) meter() (w, v, a float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.power {
		return 0, 0, 0
	}
	return 3.0, 5.0, 0.6
}

func (b *Board) setPinLocked(i int, level string) {
	b.pins[i] = level
	b.event("pin %s %s", pinLetters[i], level)
}

func (b *Board) setPowerLocked(on bool) {
	if b.power == on {
		return
	}
	b.power = on
	b.powerGen++
	if on {
		b.event("power on")
		gen := b.powerGen
		time.AfterFunc(b.o.BootDelay, func() {
			b.mu.Lock()
			still := b.power && b.powerGen == gen && !b.gone
			b.mu.Unlock()
			if still {
				b.uart([]byte("DUT " + b.serial + ": booted\r\n"))
			}
		})
		return
	}
	b.event("power off")
	for i, l := range b.pins {
		if l == "h" {
			b.pins[i] = "z" // anything not low or z floats without power
		}
	}
}

// doPower runs power action a (0 off, 1 on, 2 force off, 3 force on, 4
// rescue), with the configured sequence; waits end early with ctx.
func (b *Board) doPower(ctx context.Context, a int) {
	seq := ""
	b.mu.Lock()
	switch a {
	case 0:
		seq = b.cfg["power_off"]
		if seq == "" {
			seq = "p0"
		}
	case 1:
		seq = b.cfg["power_on"]
		if seq == "" {
			seq = "p1"
		}
	case 2:
		seq = "p0"
	case 3:
		seq = "p1"
	case 4:
		seq = b.cfg["power_rescue"]
		if seq == "" {
			seq = "p1"
		}
	}
	b.mu.Unlock()
	for _, tok := range strings.Split(seq, ",") {
		tok = strings.ToLower(tok)
		switch {
		case len(tok) >= 2 && tok[0] == 'w':
			n, _ := strconv.Atoi(tok[1:])
			d := time.Duration(n) * 100 * time.Millisecond
			b.mu.Lock()
			b.event("wait %v", d)
			b.mu.Unlock()
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
			case <-b.stop:
			}
			t.Stop()
		case tok == "p1" || tok == "p0":
			b.mu.Lock()
			b.setPowerLocked(tok == "p1")
			b.mu.Unlock()
		case len(tok) == 2 && slices.Contains(pinLetters, tok[:1]) && strings.Contains("lhz", tok[1:]):
			b.mu.Lock()
			b.setPinLocked(slices.Index(pinLetters, tok[:1]), tok[1:])
			b.mu.Unlock()
		}
	}
}

// setStorageLocked moves the mux; the disk appears at the host (size 0
// first, the real size after DiskDelay) or disappears.
func (b *Board) setStorageLocked(mode string) {
	if b.lab == nil || mode == b.storage && mode != "host" {
		b.storage = mode
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
		for _, d := range b.disks {
			if del, err := findDelete(d); err == nil && del {
				b.ejected = append(b.ejected, d.name)
			}
			b.lab.detachDisk(d)
		}
		b.disks = nil
	}
	if mode != "host" || b.o.NoDisk || b.gone {
		return
	}
	gen := b.storageGen
	wanted := func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.storageGen == gen && !b.gone
	}
	port := filepath.Base(b.hubDir)
	d, err := b.lab.attachDisk(b.hubDir, port+".2", "DUTlinkSim_Storage_"+b.serial, b.disk, b.o.DiskDelay, wanted)
	if err == nil {
		b.disks = append(b.disks, d)
	}
	if b.o.TwoDisks {
		extra := b.disk + ".second"
		if _, err := os.Stat(extra); err != nil {
			_ = makeDisk(extra, b.o.DiskSize, 0)
		}
		if d, err := b.lab.attachDisk(b.hubDir, port+".3", "DUTlinkSim_Second_"+b.serial, extra, b.o.DiskDelay, wanted); err == nil {
			b.disks = append(b.disks, d)
		}
	}
}

// findDelete reports whether the host wrote to the disk's sysfs delete file.
func findDelete(d *simDisk) (bool, error) {
	matches, err := filepath.Glob(filepath.Join(d.usbDir, "*", "host*", "target*", "*", "delete"))
	if err != nil || len(matches) == 0 {
		return false, err
	}
	data, err := os.ReadFile(matches[0])
	return strings.TrimSpace(string(data)) == "1", err
}

// openUSB opens the board's vendor interface.
func (b *Board) openUSB() (dutlink.Controller, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gone {
		return nil, fmt.Errorf("libusb: no device [code -4]: %w", dutlink.ErrGone)
	}
	if !b.usb() {
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

// errStall looks like gousb's stall error and wraps dutlink.ErrStall.
var errStall = fmt.Errorf("libusb: pipe error [code -9]: %w", dutlink.ErrStall)

// vendorInterface is the vendor interface's number on firmware 0.08.
const vendorInterface = 3

// Control handles one vendor control request as the firmware does.
func (h *usbHandle) Control(ctx context.Context, rType, request uint8, val, idx uint16, data []byte) (int, error) {
	b := h.b
	if h.closed {
		return 0, errors.New("dutlinksim: control transfer on a closed handle")
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b.exec.Lock()
	defer b.exec.Unlock()
	b.mu.Lock()
	gone, uerr := b.gone, b.usbErr
	b.mu.Unlock()
	switch {
	case gone:
		return 0, fmt.Errorf("libusb: no device [code -4]: %w", dutlink.ErrGone)
	case uerr != nil:
		return 0, uerr
	}
	if rType != 0x41 && rType != 0xC1 {
		return 0, errStall
	}
	if idx != vendorInterface {
		return 0, nil // requests to other interfaces are ignored
	}
	if rType == 0x41 {
		switch request {
		case 0x00:
			b.mu.Lock()
			b.snapCfg = maps.Clone(b.cfg)
			w, v, a := 0.0, 0.0, 0.0
			if b.power {
				w, v, a = 3.0, 5.0, 0.6
			}
			b.snapMeter = [3]float64{w, v, a}
			b.mu.Unlock()
			return 0, nil
		case 0x01:
			if val > 4 {
				return 0, errStall
			}
			b.doPower(ctx, int(val))
			return 0, ctx.Err()
		case 0x02:
			modes := []string{"off", "host", "dut"}
			if val > 2 {
				return 0, errStall
			}
			b.mu.Lock()
			b.setStorageLocked(modes[val])
			b.mu.Unlock()
			return 0, nil
		case 0x03:
			if int(val) >= len(usbKeys) || len(data) > 256 {
				return 0, errStall
			}
			b.mu.Lock()
			if !b.cfgFault {
				b.cfg[usbKeys[val]] = truncate(usbKeys[val], string(data))
			}
			b.mu.Unlock()
			return len(data), nil
		case 0x05:
			if val > 4 || len(data) != 1 || data[0] > 2 {
				return 0, errStall
			}
			b.mu.Lock()
			b.setPinLocked(int(val), []string{"l", "h", "z"}[data[0]])
			b.mu.Unlock()
			return 1, nil
		}
		return 0, errStall
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch request {
	case 0x03:
		if int(val) >= len(usbKeys) {
			return 0, errStall
		}
		k := usbKeys[val]
		field := make([]byte, fieldSizes[k])
		copy(field, b.snapCfg[k])
		return copy(data, field), nil
	case 0x04:
		m := b.snapMeter
		var s string
		switch val {
		case 0:
			s = b.versionString()
		case 1:
			s = fmt.Sprintf("%.2fW %.2fV %.2fA", m[0], m[1], m[2])
		case 2:
			s = fmt.Sprintf("%.2fV", m[1])
		case 3:
			s = fmt.Sprintf("%.2fA", m[2])
		default:
			return 0, errStall
		}
		return copy(data, s), nil
	}
	return 0, errStall
}

// Close releases the handle.
func (h *usbHandle) Close() error { h.closed = true; return nil }
