// Package dutv1 is the generated Go code of the jumpstarter.dut.v1 protocol
// (proto/jumpstarter/dut/v1/*.proto): the messages of the exporter's typed
// services, one service per capability (devices, leases, power, storage,
// flash, console, pins, meter, config), and ErrorDetail, the detail every
// exporter error carries. Package dutv1connect beside it holds the
// connect-go clients and handlers.
//
// Every file here but this one is generated: edit the .proto files, run
// make proto, and commit both; make proto-check (part of make lint) fails
// when the committed code is not what the pinned generators make.
package dutv1
