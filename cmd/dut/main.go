// Command dut is the hand tool for the devices under test (DUTs) that
// jumpstarter-go tests use: list them and who holds them, switch power,
// storage and control pins, flash an image, attach to the serial console,
// read and write a board's stored configuration and read its power meter.
//
// It selects devices with the harness's rules (a DEV argument matches a
// device's name or serial; --driver, --tags and the DUT_* environment
// variables as harness.ConfigFromEnv reads them) and takes the harness's
// lock on the device for as long as a command works on it, so a person at
// the bench and a running test never collide: a command waits up to
// --timeout for a busy device and then names its holder.
//
// Drivers: dutlink (DUTlink boards), qemu (QEMU virtual DUTs) and sim (the
// simulated DUT). The devices of qemu and sim live in the process that found
// them (they implement driver.Ephemeral): their power, storage mux, pins,
// console and config do not outlive one dut command, only their disk files
// do. Every command that changes such a device says so on stderr, dut list
// marks them, and the flash report points at dut console DEV --power-on, the
// one way to boot and watch them by hand.
//
// Exit codes: 0 success; 1 a device or lab step failed; 2 a usage error (bad
// command line: a missing, extra, misplaced or unknown argument, action, key
// or flag, printed with the command's usage line; a bad DUT_* variable, a
// value the board refuses, a capability the device lacks); 3 the device
// stayed busy for --timeout; 4 no device matches; 130 interrupted (Ctrl-C,
// SIGTERM, SIGHUP).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		// After the first signal, the next one ends the process at once
		// should the cleanup that the first one started hang.
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
