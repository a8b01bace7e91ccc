// Package sim is the simulated DUT: a driver named "sim" whose devices
// behave like a small Linux board with a power switch, a storage
// multiplexer, a serial console, control pins and a power meter. Tests of
// the harness, and examples, run against it without hardware.
//
// Importing the package registers the driver with the harness:
//
//	import _ "github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
//
// and DUT_DRIVER=sim selects it. Unit tests that want a driver or a device
// without the environment and the registry use [New] and [NewDevice].
//
// # Configuration
//
// The registered driver reads these environment variables at every
// Discover; a bad value makes Discover fail with an error naming the
// variable and saying what to set:
//
//   - DUT_SIM_DEVICES: the number of devices, 0 to 1000 (default 2). They
//     are named sim-0, sim-1, ..., have the serial numbers SIM00000,
//     SIM00001, ... and the tags "sim", "virtual" and "even" or "odd" by
//     index.
//   - DUT_SIM_DIR: the directory of the devices' disk files,
//     <dir>/<name>.disk (default filepath.Join(os.TempDir(),
//     "jumpstarter-sim")). It is created when missing.
//   - DUT_SIM_DISK_SIZE: the size of a disk file created because it is
//     missing, in bytes or with a unit such as 64MiB (the default); at
//     least 64KiB. Disk files are sparse. An existing disk file is never
//     recreated, truncated or resized: several processes share the disk
//     files (the harness locks devices across processes).
//   - DUT_SIM_BOOT_TIME: the time from power-on to the login prompt, a
//     positive Go duration up to 1h (default 300ms). The boot's output is
//     spread over it on timers, so inside a testing/synctest bubble the
//     boot takes exactly this much virtual time.
//
// A device's power, storage multiplexer, pins and console live in the
// process that opened it; only the disk files are shared.
//
// # Storage
//
// A device's storage is its disk file. The multiplexer starts at
// [driver.StorageOff]. [Device.BlockTarget] returns the disk file's path
// only while the multiplexer is at [driver.StorageHost]; the host writes an
// image (see package testfixtures/simimage and the mksimimage command) into
// it there, from offset 0, without truncating it. The board reads the disk
// only at [driver.StorageDUT], every time it boots: flash version A and it
// boots A, flash B and the next boot boots B.
//
// # Console
//
// [Device.OpenConsole] returns the host's end of the serial line. It stays
// usable across power cycles, until closed:
//
//   - The board's output is buffered, without bound, until read. While no
//     console is open the output is lost, as on a serial line nobody reads.
//     Line endings are "\r\n", as from a Linux tty.
//   - Bytes written go to the board while it runs; while it is off or held
//     in reset they are dropped (Write still succeeds).
//   - Read blocks until there is output or the console ends. Close ends a
//     pending Read; later Reads and Writes fail with errors wrapping
//     [ErrClosed] and os.ErrClosed. Unplugging the device ends the console
//     too: Read returns the output printed before, then an error wrapping
//     [ErrGone].
//   - Only one console can be open at a time; OpenConsole fails with
//     [ErrConsoleBusy] while another is.
//
// # Boot
//
// At power-on (and at [Device.Reset], on the reboot command, and when the
// reset pin is released) the board prints its firmware banner and, after a
// twentieth of the boot time, "Boot device: mmc0". Then:
//
//   - storage not at dut: "Boot failed: storage not connected to the DUT
//     (the storage mux is at host)" and "No bootable device.", then it halts;
//   - no image on the disk (a blank or fresh disk): "No bootable device.",
//     then it halts;
//   - a corrupt image: "Boot failed: image corrupt: <reason>", e.g.
//     "payload sha256 mismatch: expected <hex>, got <hex>", then it halts;
//   - otherwise kernel messages with fixed timestamps, including
//     "Linux version 6.1.0-sim (<version>)". An image made to panic prints
//     "Kernel panic - not syncing: VFS: Unable to mount root fs ..." and
//     halts; an image made to hang stops after the "Welcome to Jumpstarter
//     Sim Linux <version>!" banner; any other reaches the login prompt after
//     exactly the boot time. A halted or hung board prints nothing more and
//     ignores input until powered off.
//
// After the login prompt three more kernel messages follow, a tenth of the
// boot time apart, as on real boards (a login helper must cope with them).
// Input typed before the prompt is discarded. The output is the same for the
// same image and input; here is powering on sim-0 with image 1.2.0, logging
// in after the kernel messages and running cat /etc/dut-release ("\r" is
// left out at the line ends, ESC is written as \e):
//
//	SimBIOS 1.0 (sim-0)
//	DRAM:  512 MiB
//	Boot device: mmc0
//	Loading kernel from mmc0 ...
//	Starting kernel ...
//
//	[    0.000000] Booting Linux on physical CPU 0x0
//	[    0.000000] Linux version 6.1.0-sim (1.2.0) (gcc (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT
//	[    0.000000] Machine model: Jumpstarter Sim Board
//	[    0.000000] Kernel command line: console=ttyS0,115200 root=/dev/mmcblk0p1 rootwait
//	[    0.612345] mmc0: new high speed SDHC card at address 0001
//	[    1.234567] EXT4-fs (mmcblk0p1): mounted filesystem with ordered data mode. Quota mode: none.
//	[    1.345678] Run /sbin/init as init process
//	[    1.456789] systemd[1]: Hostname set to <sim-0>.
//
//	Welcome to Jumpstarter Sim Linux 1.2.0!
//
//	[  OK  ] Reached target multi-user.target - Multi-User System.
//
//	Jumpstarter Sim Linux 1.2.0 sim-0 ttyS0
//
//	sim-0 login: [    2.512345] random: crng init done
//	[    2.723456] IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready
//	[    3.034567] EXT4-fs (mmcblk0p1): re-mounted. Quota mode: none.
//	root
//	\e[01;32mroot@sim-0\e[00m:\e[01;34m~\e[00m# cat /etc/dut-release
//	1.2.0
//	\e[01;32mroot@sim-0\e[00m:\e[01;34m~\e[00m#
//
// (The last line ends with a space.) The host name is the device's name.
//
// # Login and shell
//
// The tty works in canonical mode: it echoes input, "\r" or "\n" ends a line
// ("\r\n" counts once), backspace and Ctrl-U edit, Ctrl-C prints "^C" and
// interrupts, Ctrl-D on an empty line is end of input. The accounts are
// [Options.Users] (default: root with an empty password). A user with an
// empty password logs in at once; otherwise login asks "Password: " without
// echo, and a wrong password or unknown user gets "Login incorrect" and a new
// prompt. After login the image's /etc/motd, if any, is printed, then the
// prompt, coloured like Debian's bash:
// "\x1b[01;32mroot@sim-0\x1b[00m:\x1b[01;34m~\x1b[00m# " ("$ " for other
// users).
//
// The shell runs command lists joined by ";", "&&" and "||", with single and
// double quotes, backslash escapes, comments, $?, $$, $NAME and ${NAME}
// (HOME, USER, LOGNAME, HOSTNAME, PWD, SHELL, PATH, TERM and variables set
// with NAME=value or export). Unquoted expansions are not split into words.
// Pipes, redirections, background jobs and command substitution are
// rejected with a message and status 2. The commands are echo [-n], printf
// (%s %d %i %u %x %X %o %c %% with flags and width, escapes, the format
// reused while arguments remain), cat FILE..., ls [-1a] [PATH...], cd, pwd,
// uname [-asnrvmo], hostname, id, whoami, uptime, true, false, sleep N[smhd]
// (fractional, interrupted by Ctrl-C), yes [STRING] (floods until Ctrl-C),
// sh -c LINE (also bash), export, exit [N] and logout (back to the login
// prompt), reboot (boots again from the disk), poweroff and halt (the board
// halts; its power stays on). An unknown command prints "sh: NAME: not
// found" and has status 127; Ctrl-C makes the status 130. The files are the
// image's plus /proc/version, /proc/uptime and /proc/cmdline; while the
// storage is not at dut, reading the image's files fails with "Input/output
// error".
//
// # Rescue, reset, pins, power
//
// [Device.Rescue] power-cycles the board into the firmware's rescue mode,
// which prints a banner and waits at a "rescue> " prompt (commands help,
// version, boot, reset) after a fifth of the boot time. [Device.Reset]
// reboots a powered board (it fails with [ErrPoweredOff] when off). The pins
// are "reset", "a", "b", "c" and "d"; driving "reset" low holds the board in
// reset and releasing it boots again; the others are only recorded.
// [Device.ReadPower] reads 0 W while off and 0.6 to 4.8 W at 5 V while on,
// by what the board does.
//
// # Test hooks
//
// [Device.PowerState], [Device.StorageState], [Device.Pin] and
// [Device.DiskPath] observe a device; [Device.Unplug] makes it vanish: every
// later operation fails with an error wrapping [ErrGone]. [Device.Close]
// stops the board goroutine and waits for it; no goroutine of the device
// outlives Close or Unplug. A driver's Discover replaces closed or unplugged
// devices with fresh ones.
package sim
