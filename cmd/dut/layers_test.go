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

// layers ranks the module's packages (by path prefix, the longest wins): a
// production package may import only packages of a lower rank, so the
// drivers and the fixture never import each other, nothing below the
// programs imports a program, and a test fixture never sneaks into the
// library. A package missing here fails the test: place it first.
var layers = map[string]int{
	"internal/":                 0, // leaf helpers
	"harness/console":           0,
	"harness/internal/":         0,
	"harness/driver":            1,
	"harness/flash":             1,
	"testfixtures/simimage":     1,
	"harness/step":              2,
	"harness/lease":             2,
	"harness/driver/drivertest": 2,
	"dutlink":                   3, // drivers
	"qemu":                      3,
	"testfixtures/sim":          3,
	"harness":                   3, // the fixture
	"testfixtures/":             4, // simulators and builders
	"cmd/":                      5, // programs
	"examples":                  6, // tests
	"e2e/":                      6,

	// The protocol: its generated code (protobuf and connect only) low,
	// its Go side above harness/driver, harness/flash and harness/lease.
	// The image cache is standard library only; the exporter and the
	// remote driver stand on the wire package, beside each other.
	"remote/gen/dutv1":              0,
	"remote/gen/dutv1/dutv1connect": 1,
	"remote/imagecache":             0,
	"remote/wire":                   3,
	"remote/exporter":               4,
	"remote":                        4,
}

// rank returns the layer of the package at path p (relative to the module).
func rank(p string) (int, bool) {
	best, r := -1, 0
	for prefix, l := range layers {
		match := p == strings.TrimSuffix(prefix, "/") || strings.HasPrefix(p, strings.TrimSuffix(prefix, "/")+"/")
		if match && len(prefix) > best {
			best, r = len(prefix), l
		}
	}
	return r, best >= 0
}

// TestNoPackageImportsALayerAbove checks every production import of the
// module against layers.
func TestNoPackageImportsALayerAbove(t *testing.T) {
	const module = "github.com/jumpstarter-dev/jumpstarter-go/"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg := strings.TrimPrefix(f[0], module)
		from, ok := rank(pkg)
		if !ok {
			t.Errorf("%s has no layer: add it to layers", pkg)
			continue
		}
		for _, imp := range f[1:] {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			dep := strings.TrimPrefix(imp, module)
			if to, ok := rank(dep); ok && to >= from {
				t.Errorf("%s (layer %d) imports %s (layer %d)", pkg, from, dep, to)
			}
		}
	}
}
