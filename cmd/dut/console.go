package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

// exitKey ends an interactive console: Ctrl-], as in telnet. Ctrl-B, which
// the old CLI used three times, is tmux's prefix and, five times in a row,
// the DUTlink firmware's own escape from console mode.
const exitKey = 0x1d

// readerDrain bounds the wait for the console's reader to stop after the
// console was closed.
const readerDrain = 2 * time.Second

func (a *app) consoleCmd() *cobra.Command {
	var powerOn bool
	cmd := &cobra.Command{
		Use:   "console DEV",
		Short: "Attach this terminal to the DUT's serial console (exit with Ctrl-])",
		Long: `Attach to the DUT's serial console: what the DUT prints appears here, what
you type goes to the DUT, byte for byte (the terminal is put in raw mode, so
Ctrl-C, Ctrl-D and Ctrl-Z go to the DUT too).

Press Ctrl-] to leave (as in telnet). The terminal is restored however the
console ends: Ctrl-], the console closing, dut being killed with SIGTERM or
SIGHUP. When standard input is not a terminal (a pipe), its bytes are sent
as they are and the console ends at its end or at a Ctrl-] byte.

--power-on opens the console first, then connects the storage to the DUT
and powers it on, so the whole boot is seen. The DUT keeps running when the
console ends; the device stays locked only while the console is attached.
A sim or qemu device, whose power ends with the dut command, is powered off
when the console ends: one dut console DEV --power-on session is how to see
one boot and use it by hand.`,
		Example: `  dut console bench-1
  dut console bench-1 --power-on        # watch it boot from the first line
  dut --timeout 30m console bench-1     # wait for a test holding it to finish`,
		Args: positional([]string{"DEV"}),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withDevice(cmd, args[0], func(ctx context.Context, cfg config, d driver.Device) error {
				return a.console(ctx, cfg, d, powerOn)
			})
		},
	}
	cmd.Flags().BoolVar(&powerOn, "power-on", false, "connect the storage to the DUT and power it on once the console is open")
	return cmd
}

// console runs an interactive console session on d until the exit key,
// the end of stdin (when it is not a terminal), the console ending or ctx
// ending.
func (a *app) console(ctx context.Context, cfg config, d driver.Device, powerOn bool) (err error) {
	port, err := driver.As[driver.ConsolePort](d)
	if err != nil {
		return err
	}
	var con io.ReadWriteCloser
	if err := step(ctx, cfg, "open console", func(ctx context.Context) (err error) {
		con, err = port.OpenConsole(ctx)
		return err
	}); err != nil {
		return err
	}
	readerDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(a.stdout, con)
		readerDone <- err
	}()
	defer func() {
		// Close ends the reader's pending Read; wait for it, bounded, so
		// that nothing is printed after the command returned.
		cerr := con.Close()
		t := time.NewTimer(readerDrain)
		defer t.Stop()
		select {
		case <-readerDone:
		case <-t.C:
		}
		if cerr != nil && err == nil {
			err = fmt.Errorf("closing the console: %w", cerr)
		}
	}()

	if powerOn {
		pw, err := driver.As[driver.Power](d)
		if err != nil {
			return err
		}
		a.noteEphemeral(d, "it is powered off again when this console ends")
		if err := storageToDUT(ctx, cfg, d, powerOpts{}); err != nil {
			return err
		}
		if err := step(ctx, cfg, "power on", pw.PowerOn); err != nil {
			return err
		}
	}

	nl := "\n"
	if f, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		state, err := term.MakeRaw(int(f.Fd()))
		if err != nil {
			return fmt.Errorf("putting the terminal in raw mode: %w", err)
		}
		// Deferred, so that every way out (including a panic) restores it.
		defer func() {
			if rerr := term.Restore(int(f.Fd()), state); rerr != nil && err == nil {
				err = fmt.Errorf("restoring the terminal: %w", rerr)
			}
			fmt.Fprintf(a.stderr, "\ndut: console of %s closed\n", d.Name())
		}()
		nl = "\r\n" // raw mode: no newline translation
	}
	fmt.Fprintf(a.stderr, "dut: connected to the console of %s; press Ctrl-] to exit%s", d.Name(), nl)

	inputDone := make(chan error, 1)
	go func() { inputDone <- forwardInput(a.stdin, con) }()

	select {
	case err := <-inputDone:
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("console of %s: %w", d.Name(), err)
		}
		return nil
	case err := <-readerDone:
		readerDone <- err // for the deferred drain
		if err == nil {
			err = io.EOF
		}
		return fmt.Errorf("console of %s ended: %w", d.Name(), err)
	case <-ctx.Done():
		return fmt.Errorf("console of %s: %w", d.Name(), ctx.Err())
	}
}

// forwardInput copies in to con until the exit key (nil) or the end of in
// (io.EOF).
func forwardInput(in io.Reader, con io.Writer) error {
	buf := make([]byte, 4096)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			p := buf[:n]
			i := bytes.IndexByte(p, exitKey)
			if i >= 0 {
				p = p[:i]
			}
			if len(p) > 0 {
				if _, werr := con.Write(p); werr != nil {
					return fmt.Errorf("writing to the console: %w", werr)
				}
			}
			if i >= 0 {
				return nil
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			return fmt.Errorf("reading standard input: %w", err)
		}
	}
}
