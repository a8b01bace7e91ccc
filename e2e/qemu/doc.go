// Package qemue2e holds the end-to-end tests of the harness on the QEMU virtual
// DUT: real boots of flashed images, driven through harness.Acquire exactly
// as a user's test would be. It has no code of its own; see e2e_test.go.
//
//	make qemu-images && DUT_QEMU_IMAGES=$PWD/out/qemu-images go test ./e2e/qemu/
package qemue2e
