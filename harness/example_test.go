package harness_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/simimage"
)

// Open is the error-returning core under Acquire, for tools and programs
// that are not tests: the same selection, lock, known state and console.
func ExampleOpen() {
	dir, err := os.MkdirTemp("", "jumpstarter-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	// The simulated DUT keeps its disks where DUT_SIM_DIR says.
	os.Setenv("DUT_SIM_DIR", dir)
	defer os.Unsetenv("DUT_SIM_DIR")
	image := filepath.Join(dir, "os.img")
	if err := simimage.WriteFile(image, simimage.Spec{Version: "1.4.2"}); err != nil {
		panic(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := harness.Config{Driver: "sim", Name: "sim-1", LockDir: filepath.Join(dir, "locks")}
	s, err := harness.Open(ctx, cfg, harness.Holder{Test: "ExampleOpen", PID: os.Getpid()}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close(context.WithoutCancel(ctx)) // power off, storage off, unlock

	if _, err := s.Flash(ctx, image, nil); err != nil {
		fmt.Println(err)
		return
	}
	if err := s.PowerOn(ctx); err != nil {
		fmt.Println(err)
		return
	}
	if _, err := s.Login(ctx); err != nil {
		fmt.Println(err)
		return
	}
	res, err := s.Run(ctx, "cat /etc/dut-release")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s booted %s", s.Device().Name(), res.Output)
	// Output: sim-1 booted 1.4.2
}
