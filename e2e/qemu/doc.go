// Package qemue2e holds the end-to-end tests of the harness on the QEMU virtual
// DUT: real boots of flashed images, driven through harness.Acquire exactly
// as a user's test would be. It has no code of its own; see e2e_test.go.
//
//	make qemu-images && DUT_QEMU_IMAGES=$PWD/out/qemu-images go test ./e2e/qemu/
//
// With DUT_DRIVER=remote the same tests reach the virtual DUTs through a
// dut serve on this host that exports them (DUT_EXPORTER; its
// DUT_QEMU_DIR given to both, DUT_QEMU_DEVICES=4 to the exporter), as
// make main-job-remote runs them.
package qemue2e
