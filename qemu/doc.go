// Package qemu is the QEMU driver: a driver named "qemu" whose devices are
// x86_64 virtual machines run by qemu-system-x86_64 — a real BIOS, boot
// loader, kernel and userland booting from a flashed disk image — with a
// power switch, a reset button, a storage multiplexer and a serial console.
// Tests of the harness and of images run against it without hardware, and
// several run in parallel.
//
// Importing the package registers the driver with the harness:
//
//	import _ "github.com/jumpstarter-dev/jumpstarter-go/qemu"
//
// and DUT_DRIVER=qemu selects it. Tests that want a driver or a device
// without the environment and the registry use [New] and [NewDevice].
//
// QEMU must be installed (Debian: apt-get install qemu-system-x86). No KVM is
// needed: the VMs run under TCG, the emulator, at about one host core each.
//
// # Configuration
//
// The registered driver reads these environment variables at every
// Discover; a bad value makes Discover fail with an error naming the
// variable and saying what to set:
//
//   - DUT_QEMU_DEVICES: the number of devices, 0 to 64 (default 1). They are
//     named qemu-0, qemu-1, ..., have no serial number and the tags "qemu",
//     "virtual" and "x86_64".
//   - DUT_QEMU_MEMORY: each VM's memory in MiB (default 128; "1G" works
//     too). The test images need at least about 80 MiB; with less the guest
//     hangs.
//   - DUT_QEMU_BINARY: the QEMU binary, a path or a name looked up in PATH
//     (default qemu-system-x86_64). Discover and PowerOn fail with an error
//     wrapping [ErrNoBinary] when it cannot be found.
//   - DUT_QEMU_DIR: the directory of the devices' disk files,
//     <dir>/<name>.disk, and pid files, <dir>/<name>.pid (default
//     filepath.Join(os.TempDir(), "jumpstarter-qemu")). It is created when
//     missing.
//   - DUT_QEMU_DISK_SIZE: the size of a disk file created because it is
//     missing, in bytes or with a unit such as 64MiB (the default); at least
//     1MiB. Disk files are sparse. An existing disk file is never recreated,
//     truncated or resized: several processes share the disk files (the
//     harness locks devices across processes).
//   - DUT_QEMU_ARGS: extra QEMU arguments, split like a shell does (quotes
//     and backslashes, no expansions), appended to the driver's, e.g.
//     DUT_QEMU_ARGS='-smp 2' or '-accel tcg,tb-size=32' (which replaces the
//     driver's -accel tcg, as do -accel kvm and -enable-kvm). -daemonize and
//     -pidfile are refused.
//
// A device's power, storage multiplexer and console live in the process
// that discovered it; the disk and pid files are shared.
//
// # Power
//
// [Device.PowerOn] starts a QEMU process, paused (-S):
//
//	qemu-system-x86_64 -name qemu-0 -S -nodefaults -nographic -accel tcg -m 128
//	  -pidfile DIR/qemu-0.pid
//	  -qmp unix:RUN/qmp,server=on,wait=off
//	  -chardev socket,id=ser0,path=RUN/con,server=on,wait=off -serial chardev:ser0
//	  [-drive file=DIR/qemu-0.disk,format=raw,if=virtio]  (storage at dut)
//	  [DUT_QEMU_ARGS...]
//
// RUN is a fresh directory per power-on, /tmp/jsq-NNNN (under os.TempDir()
// unless that path is too long for a unix socket), so no two QEMU processes
// share a socket, whichever test process started them. The driver connects
// to the console socket first, then to QMP (the machine protocol), and only
// then lets the guest run (QMP cont): no byte of the boot output is lost.
// -nographic (rather than -display none) makes SeaBIOS print on the serial
// console, so a disk without a boot loader shows "No bootable device".
// There is no -no-reboot: a guest reboot (or [Device.Reset], QMP
// system_reset) resets the VM inside the same QEMU process.
//
// [Device.PowerOff] is a power cut: QMP quit, then it waits for QEMU to exit
// (bounded by its context, then SIGKILL). [Device.ForceOff] kills QEMU
// (SIGKILL) at once; [Device.ForceOn] is PowerOn. All are no-ops when the
// VM is already in the state asked for. A guest that powers itself off
// (poweroff) makes QEMU exit: that is a power-off like any other, not a
// failure.
//
// QEMU runs in its own process group (a Ctrl-C reaches the test, not QEMU)
// and is killed by the kernel when the test process dies (Pdeathsig, set from
// one dedicated OS thread that lives as long as the process). Should a QEMU
// survive its test process anyway, its pid file (written by QEMU itself)
// names it: the next PowerOn, PowerOff, ForceOff or SetStorage(host) of the
// device, in whatever process, kills it first, if /proc/PID/cmdline shows it
// is this device's QEMU (its pid file or its disk), and removes its runtime
// directory. The harness's device lock guarantees that its owner is gone.
// Runtime directories of QEMU processes that died with their test process
// are removed at a later power-on (once no QEMU listens on their sockets).
//
// # Unexpected exits
//
// When QEMU exits without the driver stopping it and without the guest
// powering off — it crashed, failed to start, or someone killed it — the
// error is an [*ExitError] wrapping [ErrExited]. It says how QEMU ended
// (exit status or signal), shows the last lines of QEMU's stderr, and gives
// the command line to reproduce it; for example:
//
//	qemu qemu-0: QEMU exited unexpectedly (killed by signal 9 (killed)) while powered on; QEMU's stderr was empty
//	reproduce with: /usr/bin/qemu-system-x86_64 -name qemu-0 -S -nodefaults ...
//
// PowerOn returns it when QEMU dies while starting. While the VM runs, the
// console's Read returns it (after the output QEMU printed before it died),
// and so do Write and Reset, until the next power-on: a test that waits on
// the console fails at once, with that message. [Device.CommandLine]
// returns the last command line, [Device.PID] the running QEMU's pid.
//
// # Storage
//
// A device's storage is its disk file, a raw disk image. The multiplexer
// starts at off. At host, [Device.BlockTarget] returns the disk file's path;
// the host writes an image into it there (from offset 0, without
// truncating). Moving the storage to host fails with [ErrDiskInUse] while a
// running QEMU has the disk attached: power off first. At dut the disk is
// attached to the VM at the next power-on (virtio, raw); at off the VM boots
// without a disk. A running VM keeps what it was started with.
//
// # Console
//
// [Device.OpenConsole] returns one stream (io.ReadWriteCloser) for the
// device's lifetime, across power cycles:
//
//   - Read delivers the output of whichever QEMU runs: each power-on
//     connects to the new QEMU's console socket. The output of one QEMU is
//     read to its end before the next's, so nothing is lost or reordered
//     across a power cycle, also when nobody read for a while. While the
//     device is off, Read blocks until a power-on brings output, or Close.
//     Line endings are "\r\n", as a Linux tty writes them.
//   - Write sends bytes to the running QEMU's serial port. While the device
//     is off they are dropped and Write succeeds, as on a serial line to a
//     board without power (after an unexpected exit it fails, see above).
//   - Close ends a pending Read; later Reads and Writes fail with errors
//     wrapping [ErrClosed] and os.ErrClosed, and the console can be opened
//     again. Only one console is open at a time: OpenConsole fails with
//     [ErrConsoleBusy].
//   - Output of a VM running while no console is open is lost, as on a serial
//     line nobody reads.
//
// # Reproducing a run by hand
//
// Every error about a running or starting QEMU carries its command line.
// To run it yourself, take it as it is (the runtime directory must exist:
// mkdir -p it) and, in two other terminals, attach the console and then let
// the guest run:
//
//	socat -,raw,echo=0 UNIX-CONNECT:/tmp/jsq-NNNN/con
//	printf '{"execute":"qmp_capabilities"}{"execute":"cont"}' | socat - UNIX-CONNECT:/tmp/jsq-NNNN/qmp
//
// Or, interactively on one terminal: drop -S, -nodefaults, the -qmp,
// -chardev and -serial options and add -serial mon:stdio (Ctrl-a x quits).
//
// # Timing and cost
//
// Measured on a 2-core host without KVM, with the reference images
// (SeaBIOS, syslinux, Debian cloud kernel, busybox): starting QEMU and
// connecting takes 0.1-0.2 s; power-on to "dut login: " 3.9-4.4 s on an
// otherwise idle host, 5-8 s when other work shares the cores; a reset or
// guest reboot takes longer, 6-17 s, as TCG retranslates the code the new
// kernel overwrites (a power cycle is faster); power-off (quit) 10-30 ms;
// a kill is noticed on the console within about 10 ms. Each VM keeps about
// one host core busy while it boots and takes about 220 MiB of resident
// memory with -m 128 (-accel tcg,tb-size=32 in DUT_QEMU_ARGS: about 190
// MiB).
package qemu
