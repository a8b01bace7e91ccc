// Package dutlinksim simulates DUTlink boards, so that the dutlink driver
// and everything above it run without hardware.
//
// A [Lab] is a host as the driver sees it: a fake sysfs tree (USB devices
// with idVendor, serial, bcdDevice, interfaces with their classes, the
// tty entry, block devices with size and dev) and a fake /dev directory
// (ttyACMn symlinks to ptys, disk/by-id, serial/by-id, disk nodes). Each
// [Board] added to it runs the firmware's protocols.
//
// # Firmware versions
//
// 0.07 has no vendor interface, boots at the shell and reports the product
// "Jumpstarter"; 0.08 and 0.09 have vendor interface 3, boot in console
// mode and report "Dutlink". bcdDevice is 0007, 0008 or 0009, and the
// version text is "0.09 git-ref: dutlinksim" and so on.
//
// # The tty
//
// The tty is a pty whose slave go.bug.st/serial opens. The firmware takes
// what the host sent one USB packet at a time. The simulator plays the
// host's CDC-ACM driver too: a packet leaves [BusFrame] after its first
// byte reached the pty, carrying everything written by then, up to
// [PacketSize] bytes; the rest waits for the next packet. So two writes
// made back to back travel together.
//
// In console mode the firmware passes every packet whole to the DUT's
// UART, Ctrl-B included, and counts consecutive Ctrl-B bytes, within a
// packet and across packets. At the fifth it leaves console mode (the
// monitor goes off too) and answers "\r\nExiting console mode\r\n#> ", but
// the rest of that packet has gone to the DUT already: only later packets
// reach the shell. A host that sends the escape and a command back to back
// thus loses the command to the DUT; one that waits for the answer first
// does not. At the shell the firmware handles one byte at a time: echo
// (a control byte such as Ctrl-B is echoed and joins the line, as in the
// firmware's line editor; CR runs the line, an LF right after it is
// skipped), the "#> " prompt, every command with the firmware's exact reply,
// "unsupported command" for the rest, and DUT output discarded while the
// monitor is off.
//
// get-config answers "key: value\r\n" for name, tags, json, usb_console,
// power_on, power_off and power_rescue, then the prompt, all built in one
// 512-byte buffer: what does not fit is dropped, the prompt included. The
// json key (512 bytes in flash) exists only at the shell but counts toward
// that buffer.
//
// Other openers of the tty read from the same input queue: one that reads
// in a loop takes replies away from the driver.
//
// # The vendor interface
//
// Behind [Lab.OpenUSB] a [dutlink.Controller] answers the vendor control
// requests; unknown ones, and the json key, STALL (an error wrapping
// dutlink.ErrStall, worded like gousb's). The firmware does one thing at
// a time: each request first waits for the previous one, and for its
// action, to finish, and gives up (wrapping ctx.Err(), doing nothing) when
// its ctx ends first. An OUT request (Refresh, Power, Storage, Config
// write, SetPin) completes as soon as the firmware has latched it; its
// action runs afterwards, holding the firmware: the next request and shell
// input wait for it. The waits of a running power sequence do not end with
// the host's ctx, only with [Board.Reboot] or [Board.Unplug].
//
// Refresh snapshots the meter and the config; IN data comes from the last
// snapshot. A vendor Power request runs its sequence from that snapshot on
// 0.08 (plain p1/p0 until the first Refresh after boot, and again after a
// reboot) and from flash on 0.09. The shell's power commands always read
// the flash.
//
// # Power
//
// Power sequences set pins, wait N x 100 ms and switch the DUT's power;
// the config in flash survives [Board.Reboot]. [Board.PowerLog] records
// when the DUT's power really changed: at the p1/p0 of a sequence, at
// force on/off, and when a reboot or unplug cuts it. A tiny DUT on the
// UART prints "DUT <serial>: booted" after power-on and answers each input
// line with "echo: <line>".
//
// # Storage
//
// At "host" the board's disk (a regular file standing in for the block
// device) appears after [BoardOptions.DiskAppearDelay], with size 0 until
// [BoardOptions.DiskDelay] later, a by-id name "usb-<DiskID>-0:0" and a
// node in /dev; its USB device carries DiskID as serial. At "off" or "dut"
// it disappears again, and [Board.Ejected] lists the disks whose sysfs
// delete file the host (any process) wrote. By default a board is
// hardware 2.0.0: the board and its disk hang off a hub of their own, the
// board on its port 6 and the disk on its port 3.
// With [BoardOptions.RootPort] it is hardware 1.1.0: the board sits right
// below the root hub and its disk appears on another root port, so that
// topology cannot tie the two. [Board.OnStorage] runs a function once when
// the mux next switches to a mode.
//
// # Faults
//
// [Board.Unplug], [Board.FailUSB], [Board.FailConfigWrites], boards in DFU
// mode, boards with no disk or two disks, and foreign disks that the
// driver must never pick: [Lab.AddDisk] plugs one at once,
// [Lab.AddDiskAfter] later, [Lab.RemoveDisk] unplugs it.
//
// [Lab.Options] configures a driver made with dutlink.New; [Lab.Use]
// points the registered driver (DUT_DRIVER=dutlink) at the lab for one
// test.
package dutlinksim
