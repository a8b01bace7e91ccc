// Command inlinescript copies a shell script into a Tekton YAML file as the
// literal block scalar of its one `script: |` key, so that the step's script
// and the file stay byte for byte equal:
//
//	go run ./internal/cmd/inlinescript -script run-tests.sh -yaml task-go-hardware-tests.yaml
//
// See package internal/inline for what the files must look like.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"

	"github.com/jumpstarter-dev/jumpstarter-go/tekton/internal/inline"
)

func main() {
	script := flag.String("script", "", "the script file")
	yamlFile := flag.String("yaml", "", "the YAML file to update")
	flag.Parse()
	if *script == "" || *yamlFile == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*script, *yamlFile); err != nil {
		fmt.Fprintln(os.Stderr, "inlinescript:", err)
		os.Exit(1)
	}
}

func run(scriptPath, yamlPath string) error {
	sc, err := os.ReadFile(scriptPath)
	if err != nil {
		return fmt.Errorf("read script: %w", err)
	}
	y, err := os.ReadFile(yamlPath)
	if err != nil {
		return fmt.Errorf("read YAML: %w", err)
	}
	out, err := inline.Inline(y, sc)
	if err != nil {
		return fmt.Errorf("%s: %w", yamlPath, err)
	}
	if bytes.Equal(out, y) {
		return nil
	}
	if err := os.WriteFile(yamlPath, out, 0o644); err != nil {
		return fmt.Errorf("write YAML: %w", err)
	}
	return nil
}
