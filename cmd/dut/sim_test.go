package main

// The in-process tests drive the simulated DUT whatever the build tags.
import _ "github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
