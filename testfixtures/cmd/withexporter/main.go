// Command withexporter runs a command against a `dut serve` exporter of its
// own: it starts the exporter in another process on a fresh unix socket,
// waits until it answers, runs the command with DUT_EXPORTER naming the
// socket, then stops the exporter with SIGTERM (which ends every lease:
// devices powered off) and fails when it did not stop cleanly.
//
// Usage:
//
//	withexporter -dut PATH [-timeout 30m] [-- SERVE-ARGS...] -- COMMAND [ARGS...]
//
// For example, the examples through the remote driver against QEMU
// virtual DUTs served by another process:
//
//	withexporter -dut out/bin/dut -- --driver qemu -- env DUT_DRIVER=remote go test ./examples/
//
// SERVE-ARGS are passed to `dut serve` after --listen; the exporter gets the
// environment without DUT_DRIVER and DUT_EXPORTER* (a test run's), and logs
// on stderr. withexporter exits with the command's status, or 1 when the
// exporter failed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet("withexporter", flag.ContinueOnError)
	dut := fs.String("dut", "dut", "the dut binary")
	timeout := fs.Duration("timeout", 30*time.Minute, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	serveArgs, command := split(fs.Args())
	if len(command) == 0 {
		fmt.Fprintln(os.Stderr, "usage: withexporter -dut PATH [-- SERVE-ARGS...] -- COMMAND [ARGS...]")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "withexporter-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "withexporter:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "dut.sock")
	srv := exec.Command(*dut, append([]string{"serve", "--listen", "unix://" + sock, "--cache-dir", filepath.Join(dir, "cache")}, serveArgs...)...)
	srv.Env = serverEnv(os.Environ())
	srv.Stdout, srv.Stderr = os.Stderr, os.Stderr
	if err := srv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "withexporter: start dut serve:", err)
		return 1
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	if err := waitHealthy(ctx, sock, exited); err != nil {
		_ = srv.Process.Kill()
		fmt.Fprintln(os.Stderr, "withexporter:", err)
		return 1
	}
	cmd := exec.CommandContext(ctx, command[0], command[1:]...)
	cmd.Env = append(os.Environ(), "DUT_EXPORTER=unix://"+sock)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	code := 0
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			fmt.Fprintln(os.Stderr, "withexporter:", err)
			code = 1
		} else {
			code = ee.ExitCode()
		}
	}
	if err := stop(srv, exited); err != nil {
		fmt.Fprintln(os.Stderr, "withexporter: dut serve:", err)
		return max(code, 1)
	}
	return code
}

// split separates SERVE-ARGS from COMMAND: with two "--" the first part is
// for dut serve.
func split(args []string) (serve, command []string) {
	if i := slices.Index(args, "--"); i >= 0 {
		return args[:i], args[i+1:]
	}
	return nil, args
}

// serverEnv is env without a test run's remote driver settings.
func serverEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		return strings.HasPrefix(kv, "DUT_DRIVER=") || strings.HasPrefix(kv, "DUT_EXPORTER")
	})
}

// waitHealthy waits until the exporter answers GET /healthz on sock, it
// exits, or ctx ends.
func waitHealthy(ctx context.Context, sock string, exited <-chan error) error {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}, Timeout: time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if resp, err := hc.Get("http://exporter/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("dut serve exited before it answered: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("dut serve did not answer on %s: %w", sock, ctx.Err())
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM and waits (up to a minute) for a clean exit.
func stop(srv *exec.Cmd, exited <-chan error) error {
	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case err := <-exited:
		return err
	case <-time.After(time.Minute):
		_ = srv.Process.Kill()
		return errors.New("did not exit within a minute of SIGTERM")
	}
}
