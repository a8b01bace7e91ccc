// Package dutlink is the driver for the DUTlink board (USB VID:PID
// 2b23:1012): a small STM32 board that switches a device under test's power,
// drives its reset and boot-strap pins, multiplexes its USB storage between
// the DUT and the test host, measures its power draw and bridges its serial
// console.
//
// Importing the package registers the driver under the name "dutlink":
//
//	import _ "github.com/jumpstarter-dev/jumpstarter-go/dutlink"
//
// and DUT_DRIVER=dutlink selects it. Programs that want the driver without
// the registry and the environment (a CLI, unit tests) use [New] with
// [Options]; [Driver.Scan] also reports the boards that could not be used.
//
// # Discovery
//
// Boards are found in sysfs: every entry of <sysfs>/bus/usb/devices with
// idVendor 2b23 and idProduct 1012. The serial number comes from "serial",
// the firmware version from "bcdDevice" (BCD: 0x0008 is 0.08), the board's
// tty from <dev>/<dev>:1.0/tty/, the vendor control interface from the
// interface whose class is ff/01/01. The name and tags come from the board's
// own configuration; a board without a name is called jp-<serial>. A board
// in DFU mode (no CDC interface), a board that vanishes while it is looked
// at and a board whose tty another process holds do not hide the other
// boards: Scan lists them as problems and Discover leaves them out.
//
// A device's [Device.Name] is fixed when it is discovered, so the harness's
// lock key (driver/name) stays the same for as long as it holds the device;
// a renamed board shows its new name from the next discovery on.
//
// # Control transports
//
// The board understands two control protocols; a device uses one of them:
//
//   - USB vendor control requests on the vendor interface (firmware 0.08
//     and later; preferred, because the tty stays a pure console and no DUT
//     output is lost while power or storage is switched);
//   - the text shell on the board's tty (every firmware; the only one of
//     firmware 0.07 and older). For each command the driver leaves console
//     mode with five Ctrl-B and waits for the firmware's answer ("Exiting
//     console mode") before it sends anything else: the firmware forwards
//     the rest of the escape's USB packet to the DUT, so a command written
//     right behind the escape would be typed into the DUT. A board already
//     at its shell only echoes the escape, which then spoils the next line,
//     so that the first command is sent again; with no sign at all the
//     driver goes on after a second. Commands end with a CR alone, which is
//     what runs them in the firmware's line editor. The driver then turns
//     the monitor off, sends the command, checks the reply and
//     returns to console mode, also when the command failed. DUT output
//     that arrives while a shell command runs is lost (the firmware
//     discards it).
//
// Over USB, a power request completes before the board runs its power
// sequence, and firmware 0.08 runs the sequence of its last config
// snapshot: the driver takes a snapshot (Refresh) before every power
// request and waits for the sequence to end after it, so that PowerOn,
// PowerOff and Rescue return with the DUT's power switched and
// [Device.Cycle] counts the off time from the moment the power was really
// cut.
//
// The choice is automatic by firmware version and can be forced with
// [Options.Transport] or DUTLINK_TRANSPORT=usb|shell. The USB transport
// exists only in builds with libusb (see Building). Whatever the build,
// a driver value made with [New] and [Options.OpenUSB] can supply any
// [Controller], which is how the simulator in testfixtures/dutlinksim
// stands in for a board (the registered driver, configured by DUTLINK_*
// variables, always uses libusb).
//
// # Building
//
// The USB transport talks to libusb through github.com/google/gousb, a cgo
// package. So a program that imports dutlink (a blank import for the
// harness included, and the dut command) needs at build time, by default:
//
//   - cgo (CGO_ENABLED=1, the default for native builds when a C compiler
//     is found);
//   - a C compiler (gcc, or $CC);
//   - pkg-config;
//   - the libusb-1.0 headers and its pkg-config file, libusb-1.0.pc.
//
// On Debian or Ubuntu:
//
//	apt-get install libusb-1.0-0-dev pkg-config gcc
//
// The binary then needs the libusb-1.0 shared library at run time
// (Debian: libusb-1.0-0, which libusb-1.0-0-dev pulls in; a machine that
// only runs the binary needs just that). Without the headers, the build
// stops in gousb with pkg-config's words, which nothing in this package
// can change:
//
//	# github.com/google/gousb
//	# [pkg-config --cflags  -- libusb-1.0]
//	Package libusb-1.0 was not found in the pkg-config search path.
//	Perhaps you should add the directory containing `libusb-1.0.pc'
//	to the PKG_CONFIG_PATH environment variable
//	Package 'libusb-1.0', required by 'virtual:world', not found
//
// Without pkg-config it stops with `github.com/google/gousb: exec:
// "pkg-config": executable file not found in $PATH`. Without a C compiler
// it does not stop: when neither CGO_ENABLED nor CC is set and no C
// compiler is in PATH, go builds with cgo off, that is without libusb (as
// below); with CC or CGO_ENABLED=1 set it stops with `cgo: C compiler
// "gcc" not found`. A cross build (GOOS or GOARCH not the host's) has cgo
// off by default too.
//
// To build without libusb, and without any C toolchain, use CGO_ENABLED=0
// (CGO_ENABLED=0 go build ./cmd/dut) or the build tag nolibusb (go build
// -tags nolibusb ./..., which leaves cgo on for other packages). Such a
// build drives boards through the shell transport only: the automatic
// choice is the shell for every firmware (0.08 and later too, so DUT
// output that arrives while a shell command runs is lost, see Control
// transports), and with DUTLINK_TRANSPORT=usb (or [Options.Transport]
// [TransportUSB]) discovery leaves every board out, reporting it (dut
// list: "Not usable") with an error wrapping [ErrNoUSB]: "this program was
// built without cgo/libusb: rebuild with CGO_ENABLED=1 and
// libusb-1.0-0-dev installed, or use DUTLINK_TRANSPORT=shell".
//
// # Storage
//
// [Device.SetStorage] with [driver.StorageHost] switches the mux and waits,
// up to [Options.StorageTimeout], for the board's USB disk. No disk that
// cannot be proved to be the board's is ever taken:
//
//   - on a hub of its own (hardware 2.0.0 carries one, with the board's
//     controller on its port 6 and the storage mux on its port 3), the disk
//     is the one block device whose sysfs path lies below that hub's port 3
//     (or its SuperSpeed peer's, for a USB 3 stick); a storage filter, when
//     set, narrows that further;
//   - on a root port or on another hub's port (hardware 1.1.0 has no hub:
//     its controller and mux reach the host on separate connectors, and an
//     external hub may carry anyone's sticks) topology cannot tell, and only
//     a storage filter that is the board's own identifies the disk: a
//     substring of the stick's /dev/disk/by-id name, best its serial, which
//     must then name exactly one disk. The board's own filter is, first
//     found first: DUTLINK_STORAGE_FILTER=<board serial>=<substring>
//     ([Options.StorageFilters]); this host's storage_filter for the board,
//     set with `dut config BOARD set storage_filter SUBSTRING` and kept in
//     [Options.ConfigDir] whatever the transport; the storage_filter key of
//     the board's json config (read over the shell, also when the board
//     uses the USB transport). A filter for every board
//     (DUTLINK_STORAGE_FILTER=SanDisk) cannot tell two boards' sticks apart
//     and is refused as an identity, with [ErrUnprovenDisk], before the mux
//     moves.
//
// None found, or more than one ([ErrNoDisk], [ErrAmbiguousDisk]), is an
// error and the mux is switched off again. The disk counts as ready when
// /sys/class/block/<dev>/size is above zero. [Device.CheckTarget] proves an
// opened target is that disk by its major:minor number, and that it is
// still the only disk that could be the board's. Before the mux leaves the
// host the disk is flushed (fsync, BLKFLSBUF) and ejected through
// /sys/block/<dev>/device/delete, also when another process switched it to
// the host (a dut storage command, then another): the disk found there is
// flushed, or, when it cannot be identified, the whole host is synced.
//
// # Environment
//
// The registered driver reads, at every Discover:
//
//   - DUTLINK_SYSFS: the sysfs root (default /sys);
//   - DUTLINK_DEV: the /dev root (default /dev);
//   - DUTLINK_TRANSPORT: usb, shell or auto (default auto);
//   - DUTLINK_STORAGE_FILTER: a by-id substring that narrows every board's
//     storage disk, or serial=substring pairs naming each board's own
//     stick (see Storage);
//   - DUTLINK_STORAGE_TIMEOUT: how long to wait for the disk (default 60s);
//   - DUTLINK_FILE_DISKS=1: accept regular files as disks (simulators and
//     tests only; never set it on a lab host).
//   - DUTLINK_STATE_DIR: where each board's config is remembered, so a board
//     whose tty another process holds is still found by name and waited
//     for (default $XDG_CACHE_HOME/jumpstarter-go/dutlink; "off": nowhere);
//   - DUTLINK_CONFIG_DIR: where this host keeps what it knows about each
//     board ([HostKeys]: storage_filter), one <serial>.json per board
//     (default $XDG_CONFIG_HOME/jumpstarter-go/dutlink; a lab host shared
//     by several users sets one directory for all of them).
//
// # Config
//
// The firmware's shell sends get-config from one 512-byte buffer and cuts
// what does not fit, the json key included (which only the shell can read
// or write; the driver writes it over the shell whatever the transport).
// [Device.SetConfig] refuses a value that would make the reply overflow,
// naming the longest values to shorten. A board whose config overflows
// already (written by another tool) is still discovered: the driver reads
// what arrived, lists the rest in [Device.ConfigCut], logs what to clear,
// and takes only writes that shrink the config.
//
// # Console
//
// [Device.OpenConsole] opens the board's tty, or, when the board's
// usb_console config names one, the separate USB UART found under
// <dev>/serial/by-id whose name holds that value. The tty is opened with an
// exclusive flock, so two processes that follow that rule never share it;
// a program that reads the tty without it (a stray cat) takes the board's
// replies and the DUT's output, and the driver names it (pid and command)
// in the error of a shell exchange that got no reply. The tty is read
// through Go's poller, so closing it always ends a pending read, whoever
// else reads it. Opening the board's own tty as the console also puts the
// firmware in console mode (five Ctrl-B reach the DUT), however an earlier
// program left it.
package dutlink
