package dutlink

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// USB identity of the board.
const (
	VendorID  = 0x2b23
	ProductID = 0x1012
)

// Version is a firmware version, from the board's bcdDevice.
type Version struct{ Major, Minor int }

// String renders the version as the firmware does: "0.08".
func (v Version) String() string { return fmt.Sprintf("%d.%02d", v.Major, v.Minor) }

// AtLeast reports whether v is w or later.
func (v Version) AtLeast(w Version) bool {
	return v.Major > w.Major || v.Major == w.Major && v.Minor >= w.Minor
}

// FirstUSBVersion is the first firmware with the vendor control interface.
var FirstUSBVersion = Version{0, 8}

// ParseBCD parses a bcdDevice value as sysfs shows it ("0008") into a
// version: the high byte is the major, the low byte the minor version, each
// two BCD digits.
func ParseBCD(s string) (Version, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.ParseUint(s, 16, 16)
	if err != nil {
		return Version{}, fmt.Errorf("bcdDevice %q is not a 16-bit hex number", s)
	}
	bcd := func(b uint64) (int, error) {
		hi, lo := b>>4, b&0xf
		if hi > 9 || lo > 9 {
			return 0, fmt.Errorf("bcdDevice %q is not BCD", s)
		}
		return int(hi*10 + lo), nil
	}
	maj, err := bcd(n >> 8)
	if err != nil {
		return Version{}, err
	}
	mnr, err := bcd(n & 0xff)
	if err != nil {
		return Version{}, err
	}
	return Version{maj, mnr}, nil
}

// Board is what sysfs says about one DUTlink board.
type Board struct {
	// SysPath is the board's sysfs directory, symlinks resolved.
	SysPath string
	// Port is the USB port path, e.g. "1-4.1".
	Port string
	// Serial is the USB serial number (8 lowercase hex characters).
	Serial string
	// Version is the firmware version.
	Version Version
	// Product is the USB product string ("Jumpstarter" or "Dutlink").
	Product string
	// Bus and Address locate the board for libusb.
	Bus, Address int
	// TTY is the path of the board's tty below the dev root, "" when the
	// board has none (DFU mode).
	TTY string
	// VendorInterface is the number of the vendor control interface
	// (class ff/01/01), or -1 when the firmware has none.
	VendorInterface int
}

// DFU reports whether the board is in DFU mode: it has no tty.
func (b Board) DFU() bool { return b.TTY == "" }

// Problem is a board that discovery found but cannot use.
type Problem struct {
	// Where is the board's sysfs entry or serial.
	Where string
	// Serial is the board's serial, when it could be read.
	Serial string
	Err    error
}

func (p Problem) String() string { return p.Where + ": " + p.Err.Error() }

var portRe = regexp.MustCompile(`^\d+-\d+(\.\d+)*$`)

func readAttr(dir, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// findBoards lists the DUTlink boards under sysfs. Boards that vanish while
// they are read, or lack what the driver needs, are returned as problems.
func findBoards(sysfs, devRoot string) ([]Board, []Problem, error) {
	dir := filepath.Join(sysfs, "bus", "usb", "devices")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("dutlink: listing USB devices in %s (set %s to the sysfs root): %w", dir, EnvSysfs, err)
	}
	var boards []Board
	var problems []Problem
	for _, e := range ents {
		name := e.Name()
		if !portRe.MatchString(name) {
			continue // root hubs ("usb1") and interfaces ("1-1:1.0")
		}
		p := filepath.Join(dir, name)
		vid, err1 := readAttr(p, "idVendor")
		pid, err2 := readAttr(p, "idProduct")
		if err1 != nil || err2 != nil || !strings.EqualFold(vid, "2b23") || !strings.EqualFold(pid, "1012") {
			continue
		}
		b, err := readBoard(p, name, devRoot)
		if err != nil {
			problems = append(problems, Problem{Where: p, Err: err})
			continue
		}
		boards = append(boards, b)
	}
	slices.SortFunc(boards, func(a, b Board) int { return strings.Compare(a.Serial, b.Serial) })
	return boards, problems, nil
}

func readBoard(p, port, devRoot string) (Board, error) {
	gone := func(err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w while it was discovered (unplugged?): %w", ErrGone, err)
		}
		return err
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return Board{}, gone(err)
	}
	b := Board{SysPath: real, Port: port, VendorInterface: -1}
	if b.Serial, err = readAttr(p, "serial"); err != nil {
		return Board{}, gone(err)
	}
	bcd, err := readAttr(p, "bcdDevice")
	if err != nil {
		return Board{}, gone(err)
	}
	if b.Version, err = ParseBCD(bcd); err != nil {
		return Board{}, err
	}
	b.Product, _ = readAttr(p, "product")
	if v, err := readAttr(p, "busnum"); err == nil {
		b.Bus, _ = strconv.Atoi(v)
	}
	if v, err := readAttr(p, "devnum"); err == nil {
		b.Address, _ = strconv.Atoi(v)
	}
	ttys, err := os.ReadDir(filepath.Join(p, port+":1.0", "tty"))
	if err == nil && len(ttys) > 0 {
		b.TTY = filepath.Join(devRoot, ttys[0].Name())
	}
	ifaces, _ := filepath.Glob(filepath.Join(p, port+":*"))
	for _, ifc := range ifaces {
		c, _ := readAttr(ifc, "bInterfaceClass")
		s, _ := readAttr(ifc, "bInterfaceSubClass")
		pr, _ := readAttr(ifc, "bInterfaceProtocol")
		if c != "ff" || s != "01" || pr != "01" {
			continue
		}
		num, err := readAttr(ifc, "bInterfaceNumber")
		if err != nil {
			continue
		}
		n, err := strconv.ParseUint(num, 16, 8)
		if err == nil {
			b.VendorInterface = int(n)
		}
	}
	if _, err := os.Stat(p); err != nil {
		return Board{}, gone(err)
	}
	if b.DFU() {
		return b, fmt.Errorf("%w (serial %s, firmware %s): it has no tty; finish or abort the firmware update and replug it", ErrDFU, b.Serial, b.Version)
	}
	return b, nil
}
