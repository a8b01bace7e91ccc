// Package drivertest is an executable contract for drivers' devices, in the
// spirit of testing/fstest: [Check] takes a way to make a device, checks
// every capability the device claims ([driver.CapabilitiesOf]) and returns
// an error listing every violation; [TestDevice] runs the same checks as
// subtests of a test. Every driver's tests run it (the simulator, the QEMU
// driver with a fake and a real QEMU, DUTlink over both transports), and a
// driver that serves another's devices (a remote driver) must pass it
// unchanged.
//
// Each check gets a fresh device from open and closes it when done. The
// device must boot (print its Console boot texts) at power-on once its
// storage is at dut: before it powers a device with a mux on, the contract
// switches the storage there, as the harness does after flashing. The
// storage check writes a few bytes at the start of the block target and
// puts the original bytes back. Calls
// are bounded by the wait ([Timeout] × [TimeoutScale], 10s by default).
// What the device shows is observed through, where available: the
// [PowerState] option (a driver's test hook), the power meter, and the
// console output the [Console] option declares (the boot text the DUT
// prints at every power-on).
//
// The checks, by name (a name given to [Skip] leaves the check, or the
// part of a check, out; the reason is reported):
//
//   - identity: Name and Driver are not empty, no tag is empty.
//   - power (Power): PowerOff from any state, PowerOn, PowerOn again,
//     PowerOff, PowerOff again, PowerOn, PowerOff all succeed; after each
//     the PowerState option reports what was asked for, the meter reads
//     more while on than while off ("meter-follows-power"), and after each
//     power-on from off the console shows the boot texts again, so that a
//     power-off that cuts nothing is noticed.
//   - force-power (ForcePower): the same with ForceOn and ForceOff.
//   - rescue (Rescuer): Rescue powers the device on (PowerState, meter)
//     and the console shows [ConsoleSpec.Rescue]; then it powers off.
//   - reset (Resetter): Reset while off succeeds or fails with
//     [driver.ErrPoweredOff] and leaves the power off; Reset while on
//     succeeds and the console shows [ConsoleSpec.Reset] (by default the
//     boot texts) ("reset-reboots").
//   - storage (StorageMux): with the power off, off, host, dut, off, host,
//     off all succeed; BlockTarget fails with [driver.ErrStorageNotOnHost]
//     except at host, where it names a file that opens for writing, that
//     [driver.TargetChecker] accepts, and that keeps what was written
//     through dut and off and back (the first bytes are restored after);
//     an unknown mode fails with [driver.ErrInvalidArgument].
//   - storage-while-powered (StorageMux and Power): storage to host while
//     powered on fails with [driver.ErrPoweredOn], unless the device
//     declares [HostStorageWhilePowered]; once powered off it succeeds.
//   - console (ConsolePort): a second OpenConsole fails with
//     [driver.ErrConsoleBusy] ("console-busy"); with the Console option
//     two power cycles on one stream each show every boot text in order,
//     and the reply to [ConsoleSpec.Send] (a lost, changed or reordered
//     byte inside them is a violation); Close ends a pending Read, later
//     Read and Write fail with [driver.ErrClosed], Close twice is fine,
//     and the console opens again.
//   - pins (Pins): PinNames is not empty and holds no repeats; every pin
//     takes high, low and z (and is then at that level, where the
//     [PinLevel] option observes it); an unknown pin or level fails with
//     [driver.ErrInvalidArgument].
//   - meter (PowerMeter): readings are finite, not negative, watts are
//     volts × amps within 10%, and more while on than while off.
//   - config (Configurer): Config returns a map; an unknown key fails with
//     [driver.ErrInvalidArgument] ("config-unknown-key"); with [ConfigKey],
//     SetConfig then Config returns the value set, and the original comes
//     back the same way.
//   - context: every method that takes a context, called with one already
//     cancelled or past its deadline, fails within a tenth of the wait
//     with an error wrapping [context.Canceled] or
//     [context.DeadlineExceeded] and changes nothing (the power stays off,
//     the storage off the host, the console free); with deadlines of 1, 5
//     and 20ms, which end at different points of a call, each returns by
//     then (give or take a quarter of the wait), with success or an error
//     wrapping [context.DeadlineExceeded] (or a sentinel the device's
//     state explains).
//   - close (Closer): Close succeeds and ends a pending console Read with
//     an error wrapping [driver.ErrClosed]; every method then fails with
//     [driver.ErrClosed]; Close twice succeeds.
//   - gone (with the [Unplug] option): once the device vanished, a pending
//     console Read ends with an error wrapping [driver.ErrGone], every
//     method fails with [driver.ErrGone] (BlockTarget, which only reports
//     the mux position the device keeps, may fail with
//     [driver.ErrStorageNotOnHost] instead), and Close succeeds.
//
// The package imports only the standard library and package driver, so
// that any driver's tests can use it.
package drivertest
