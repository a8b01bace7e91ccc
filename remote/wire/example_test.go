package wire_test

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/wire"
)

// An exporter's handler fails because the DUT is off; the client gets an
// error that matches driver.ErrPoweredOff, as the local driver's would,
// and says which exporter it came from. In a real exporter and client the
// interceptors do both steps: wire.ServerInterceptor("lab-1") on the
// handlers, wire.ClientInterceptor(url) on the clients.
func ExampleFromConnect() {
	// On the exporter.
	sent := wire.ToConnect(fmt.Errorf("sim-0: read console: %w", driver.ErrPoweredOff), "lab-1")

	// On the client, once connect has carried it across.
	err := wire.FromConnect(sent, "https://lab-1.example:7443")
	fmt.Println(errors.Is(err, driver.ErrPoweredOff), driver.Code(err))
	fmt.Println(connect.CodeOf(err), wire.FaultOf(err))
	fmt.Println(err)
	// Output:
	// true powered_off
	// failed_precondition caller
	// exporter lab-1: sim-0: read console: device is powered off
}
