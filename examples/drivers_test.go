package examples

// The drivers these tests can use. A driver registers itself when its package
// is imported; DUT_DRIVER picks one. Add the drivers of your lab here.
import (
	_ "github.com/jumpstarter-dev/jumpstarter-go/qemu"             // DUT_DRIVER=qemu
	_ "github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim" // DUT_DRIVER=sim
)
