package harness_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/console"
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

// A hardware test: acquire, flash, boot, log in, run commands. Run it with
// DUT_DRIVER=sim DUT_IMAGE=/tmp/sim.img go test ./... (or put those in a
// dut.env beside the test); without a DUT configured it skips.
func ExampleAcquire() {
	testBoots := func(t *testing.T) {
		dut := harness.Acquire(t) // select, lock, power off, storage off
		dut.Flash()               // $DUT_IMAGE onto the DUT's storage, verified
		dut.PowerOn()
		sh := dut.Login()                         // through the boot to a shell
		release := sh.Run("cat /etc/dut-release") // exact output; exit code 0 or the test fails
		if release == "" {
			t.Error("no release")
		}
		out, code := sh.RunCode("grep -q debug /proc/cmdline") // the exit code is the result
		t.Logf("debug kernel: %v (%q)", code == 0, out)
	}
	_ = testBoots
}

// An expect with its own timeout, instead of DUT_COMMAND_TIMEOUT: the test
// fails after 10 s when the line does not come, showing the console's tail.
func ExampleConsole_Within() {
	testLink := func(t *testing.T) {
		dut := harness.Acquire(t)
		dut.Flash()
		dut.PowerOn()
		sh := dut.Login()
		sh.Run("ip link set eth0 up")
		dut.Console().Within(10 * time.Second).Expect(console.RE(`eth0: link up, (\d+)Mbps`))
	}
	_ = testLink
}

// Login and Run on the error-returning core: the output of a command, and
// its exit code, which is not an error.
func ExampleSession_Run() {
	s, image, done := openSimExample("ExampleSession_Run")
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
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
	fmt.Printf("release %s", res.Output)
	res, err = s.Run(ctx, "cat /no/such/file")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("exit code", res.ExitCode)
	// Output:
	// release 2.1.0
	// exit code 1
}

// A direct expect on the console engine, bounded by its own context: here
// the firmware's first line after power-on, within 5 s.
func ExampleSession_Console() {
	s, image, done := openSimExample("ExampleSession_Console")
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.Flash(ctx, image, nil); err != nil {
		fmt.Println(err)
		return
	}
	con, err := s.Console()
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := s.PowerOn(ctx); err != nil {
		fmt.Println(err)
		return
	}
	ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, err := con.Expect(ectx, console.RE(`DRAM: +(\d+) MiB`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("memory:", m.Groups[1], "MiB")
	// Output: memory: 512 MiB
}

// openSimExample opens the simulated DUT sim-1 in a private folder with a
// release 2.1.0 image; done closes it and removes the folder.
func openSimExample(name string) (s *harness.Session, image string, done func()) {
	dir, err := os.MkdirTemp("", "jumpstarter-example")
	if err != nil {
		panic(err)
	}
	os.Setenv("DUT_SIM_DIR", dir)
	image = filepath.Join(dir, "os.img")
	if err := simimage.WriteFile(image, simimage.Spec{Version: "2.1.0"}); err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := harness.Config{Driver: "sim", Name: "sim-1", LockDir: filepath.Join(dir, "locks")}
	s, err = harness.Open(ctx, cfg, harness.Holder{Test: name, PID: os.Getpid()}, nil)
	if err != nil {
		panic(err)
	}
	return s, image, func() {
		_ = s.Close(context.Background())
		os.Unsetenv("DUT_SIM_DIR")
		os.RemoveAll(dir)
	}
}
