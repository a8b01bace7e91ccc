package examples

// The drivers these tests can use. A driver registers itself when its package
// is imported; DUT_DRIVER picks one. Add the drivers of your lab here.
//
// The DUTlink driver's USB transport needs cgo and libusb
// (apt-get install libusb-1.0-0-dev pkg-config); without them build with
// CGO_ENABLED=0 or -tags nolibusb and it uses the board's shell instead.
import (
	_ "github.com/jumpstarter-dev/jumpstarter-go/dutlink"          // DUT_DRIVER=dutlink
	_ "github.com/jumpstarter-dev/jumpstarter-go/qemu"             // DUT_DRIVER=qemu
	_ "github.com/jumpstarter-dev/jumpstarter-go/remote"           // DUT_DRIVER=remote
	_ "github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim" // DUT_DRIVER=sim
)
