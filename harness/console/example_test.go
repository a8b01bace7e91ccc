package console_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/console"
)

// board is a stand-in for a serial port: it prints a boot log.
type board struct{ io.Reader }

func (board) Write(p []byte) (int, error) { return len(p), nil }
func (board) Close() error                { return nil }

func ExampleConsole_Expect() {
	port := board{strings.NewReader("U-Boot 2024.01\r\n\x1b[1mStarting kernel\x1b[0m ...\r\nLinux version 6.1.0-13-arm64\r\n")}
	c := console.New(port, console.Options{Name: "dut"})
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Escape codes and CRLF are cleaned away before matching.
	if _, err := c.Expect(ctx, console.String("Starting kernel ...\n")); err != nil {
		fmt.Println(err)
		return
	}
	// A regexp anchored with $ matches complete lines only.
	m, err := c.Expect(ctx, console.RE(`Linux version (\S+)$`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("kernel", m.Groups[1])
	// Output: kernel 6.1.0-13-arm64
}

func ExampleConsole_Watch() {
	port := board{strings.NewReader("booting\r\nKernel panic - not syncing: VFS: Unable to mount root fs\r\n")}
	c := console.New(port, console.Options{Name: "dut"})
	defer c.Close()
	c.Watch("panic", console.String("Kernel panic"))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Expect(ctx, console.MustPrompt(`login: `))
	var we *console.WatchError
	if errors.As(err, &we) {
		fmt.Println("watcher fired:", we.Watch)
	}
	// Output: watcher fired: panic
}
