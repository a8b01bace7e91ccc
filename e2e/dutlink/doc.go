// Package dutlinke2e holds the end-to-end tests of the harness on DUTlink
// boards: harness.Acquire driving the dutlink driver, over both control
// transports and every firmware generation, against the simulated lab of
// testfixtures/dutlinksim. Each test builds its own lab and driver value
// (harness.WithDrivers), so the tests run in parallel and read no
// environment. It has no code of its own; see the _test.go files.
//
//	go test ./e2e/dutlink/
package dutlinke2e
