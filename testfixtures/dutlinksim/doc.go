// Package dutlinksim simulates DUTlink boards, so that the dutlink driver
// and everything above it run without hardware.
//
// A [Lab] is a host as the driver sees it: a fake sysfs tree (USB devices
// with idVendor, serial, bcdDevice, interfaces with their classes, the
// tty entry, block devices with size and dev) and a fake /dev directory
// (ttyACMn symlinks to ptys, disk/by-id, serial/by-id, disk nodes). Each
// [Board] added to it runs the firmware's protocols:
//
//   - on its tty (a pty whose slave go.bug.st/serial opens): the shell with
//     echo and the "#> " prompt, console mode left by five Ctrl-B, monitor
//     on/off (DUT output is discarded at the shell with the monitor off),
//     every command of the firmware with its exact reply, "unsupported
//     command" for the rest;
//   - behind [Lab.OpenUSB], a [dutlink.Controller]: the vendor control
//     requests, IN data from the snapshot Refresh takes, STALL (an error
//     wrapping dutlink.ErrStall, worded like gousb's) for unknown requests;
//   - power sequences (pins, waits, power) from the config, which survives
//     [Board.Reboot];
//   - the storage mux: at "host" the board's disk (a regular file standing
//     in for the block device) appears below the board's USB hub in sysfs,
//     with size 0 first and its real size a moment later, with a by-id
//     name and a node in /dev; at "off" or "dut" it disappears again;
//   - a tiny DUT on the UART that prints "DUT <serial>: booted" after
//     power-on and answers each input line with "echo: <line>".
//
// Firmware 0.07 boards have no vendor interface and boot at the shell;
// 0.08 boards have one and boot in console mode. Faults can be injected:
// [Board.Unplug], [Board.FailUSB], [Board.FailConfigWrites], boards in DFU
// mode, boards with no disk or two disks, and foreign disks ([Lab.AddDisk])
// that the driver must never pick.
//
// [Lab.Options] configures a driver made with dutlink.New; [Lab.Use]
// points the registered driver (DUT_DRIVER=dutlink) at the lab for one
// test.
package dutlinksim
