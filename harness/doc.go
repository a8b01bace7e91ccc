// Package harness is the test fixture of jumpstarter-go: it gives an
// ordinary Go test exclusive use of a device under test (DUT), flashes it,
// powers it, and drives its console, failing the test with a useful message
// when anything goes wrong.
//
//	func TestBoots(t *testing.T) {
//		dut := harness.Acquire(t) // select, lock, power off, storage off, open console
//		dut.Flash()               // write $DUT_IMAGE through the storage mux
//		dut.PowerOn()
//		sh := dut.Login()         // through boot noise to a shell
//		out := sh.Run("cat /etc/os-release")
//		require.Contains(t, out, "VERSION_ID=")
//	}
//
// # Configuration
//
// [Acquire] reads DUT_* environment variables ([ConfigFromEnv]); every one
// can be overridden by an [Option] in code. A test started without them (an
// IDE's run button) finds them in a dut.env file ([EnvFileName]) in its
// package folder or above; the environment wins over the file. Without
// DUT_DRIVER, DUT_NAME or DUT_TAGS the test skips (or fails with
// DUT_REQUIRE=1), so `go test ./...` and IDE runners stay green on a machine
// without hardware. A test that acquired a DUT is never answered from go
// test's cache. Drivers register
// themselves when imported: a test package imports the drivers it may use
// with blank imports, as with database/sql.
//
// # Exclusive use
//
// A DUT is held through an OS file lock in DUT_LOCK_DIR, shared by every test
// process on the host (go test ./... runs packages in parallel processes).
// The kernel releases it when the process dies in any way, so a killed run
// leaves no stale lock. Waiters queue in arrival order up to
// DUT_ACQUIRE_TIMEOUT; a waiter that times out is told who holds the DUT.
//
// # Deadlines and cleanup
//
// Every hardware step runs under a context that ends at the test's own
// deadline (go test -timeout) less DUT_CLEANUP_RESERVE (fixed when the DUT
// is acquired), and under its step timeout, so a hang fails the test with a
// message naming the setting that bounded it while cleanup still has its
// reserve: whatever way the test ends, cleanup writes its console log (and,
// for a failed test, keeps it and shows its tail), powers the DUT off,
// disconnects its storage and releases the lock. A DUT that could not be
// powered off is marked, and its next holder powers it off first.
//
// # Evidence
//
// Every hardware step (acquire, power, storage, flash, login, each command
// and expect, and a driver's own steps within them) is logged when it
// starts and when it ends, so that a hang shows the step it hangs in, and
// recorded in [StepsFile] in t.ArtifactDir() (see package step).
//
// Each test records properties with t.Attr (the Attr* constants: driver, DUT
// name and serial, image path and SHA-256, flash MB/s, seconds from power-on
// to the login prompt) and writes its slice of the console to
// t.ArtifactDir(). Failures of the lab (lock, power, storage, flash target,
// a console that died) are [*InfraError]s and mark the test with
// dut.failure=infrastructure; the user's mistakes (bad settings, a name or
// tags matching no device, a missing or corrupt image) are [*ConfigError]s,
// dut.failure=configuration; the product failing its test is neither.
//
// [Session] is the error-returning core under [DUT], for tools and for steps
// the test helpers lack.
package harness
