// Package examples holds hardware tests to copy: ordinary Go tests that
// acquire a DUT with the harness, flash it, boot it, log in and run commands.
//
// Run them against the simulated DUT:
//
//	make main-job
//
// or by hand:
//
//	go run ./testfixtures/cmd/mksimimage -version 1.0.0 -o /tmp/sim.img
//	DUT_DRIVER=sim DUT_IMAGE=/tmp/sim.img DUT_EXPECT_RELEASE=1.0.0 go test -v ./examples/
//
// Without DUT_DRIVER, DUT_NAME or DUT_TAGS every test here skips, so
// `go test ./...` stays green on a laptop. DUT_EXPECT_RELEASE is the release
// the flashed image must report in /etc/dut-release; the examples check it to
// prove that the image they flashed is the one that booted.
package examples
