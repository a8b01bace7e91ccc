// Package tekton holds the checks of the Tekton Task and Pipeline that run
// jumpstarter-go hardware tests: every YAML file of this folder decodes
// strictly into Tekton's own Go types and passes their SetDefaults and
// Validate, broken copies of them are rejected, the Task's script is
// run-tests.sh byte for byte, and that script, run outside Tekton against the
// QEMU virtual DUT, leaves a schema-valid JUnit file, the artifacts and the
// results for a passing and a failing run. See README.md.
package tekton

//go:generate go run ./internal/cmd/inlinescript -script run-tests.sh -yaml task-go-hardware-tests.yaml
