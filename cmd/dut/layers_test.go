package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestShippedDutLinksNeitherHarnessNorFixtures: the dut binary takes the
// lease through harness/lease, not the test fixture, and leaves the
// simulated DUT (and every test fixture) out unless built with -tags dutsim.
func TestShippedDutLinksNeitherHarnessNorFixtures(t *testing.T) {
	const module = "github.com/jumpstarter-dev/jumpstarter-go/"
	deps := func(tags ...string) []string {
		args := append([]string{"list", "-deps", "-f", "{{.ImportPath}}"}, tags...)
		out, err := exec.Command("go", append(args, ".")...).Output()
		if err != nil {
			t.Fatalf("go list: %v", err)
		}
		return strings.Fields(string(out))
	}
	for _, p := range deps() {
		if p == module+"harness" || strings.HasPrefix(p, module+"testfixtures/") {
			t.Errorf("the shipped dut links %s", p)
		}
	}
	var sim bool
	for _, p := range deps("-tags", "dutsim") {
		sim = sim || p == module+"testfixtures/sim"
	}
	if !sim {
		t.Error("-tags dutsim does not link the simulated DUT")
	}
}
