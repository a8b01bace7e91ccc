//go:build dutsim

package main

// With -tags dutsim, dut also knows the simulated DUT (DUT_DRIVER=sim), for
// trying the tool out and for the tests that run the dut binary; the
// shipped dut leaves it out.
import _ "github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
