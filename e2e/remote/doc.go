// Package remotee2e holds the end-to-end tests of the lab as a service: an
// exporter (dut serve, a process of its own) in another network namespace,
// joined by a veth pair, serving a QEMU virtual DUT over TLS with a client
// token, and the harness reaching it through the remote driver, as from
// another host: the examples and the QEMU end-to-end tests (e2e/qemu)
// unchanged over that link, a plain-text client
// refused, the console stream surviving a 3 s cut of the link byte for
// byte, a cut beyond the keepalive bound and a killed exporter failing the
// test clearly as the lab's failure, and a restarted exporter handing the
// DUT out powered off. It needs root (ip netns), QEMU and the images:
//
//	make qemu-images && sudo DUT_QEMU_IMAGES=$PWD/out/qemu-images go test ./e2e/remote/
package remotee2e
