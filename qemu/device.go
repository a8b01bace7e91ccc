package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/step"
)

// Errors a caller may need to tell apart; the errors of Device's methods wrap
// them (or [ErrExited], [ErrNoBinary]).
var (
	// ErrClosed means the device was closed with Close.
	ErrClosed = driver.ErrClosed
	// ErrPoweredOff means the operation needs the device powered on.
	ErrPoweredOff = driver.ErrPoweredOff
	// ErrDiskInUse means the storage cannot be connected to the host
	// because a running QEMU has the disk attached.
	ErrDiskInUse = driver.Refine(driver.ErrPoweredOn, "disk is attached to the running VM")
	// ErrStorageNotOnHost means the storage multiplexer does not connect
	// the storage to the host, so there is no block target.
	ErrStorageNotOnHost = driver.ErrStorageNotOnHost
	// ErrConsoleBusy means another console of the device is open.
	ErrConsoleBusy = driver.ErrConsoleBusy
)

// Device is a QEMU virtual machine as a device under test. It implements
// driver.Device and the capabilities Power, ForcePower, Resetter,
// StorageMux, ConsolePort and Closer. Its methods are safe for concurrent
// use; the operations that start or stop QEMU run one at a time.
type Device struct {
	name    string
	tags    []string
	disk    string // absolute
	pidfile string // absolute

	opMu sync.Mutex // serialises the operations that start or stop QEMU

	mu       sync.Mutex
	opts     Options
	storage  driver.StorageMode
	vm       *vm   // the QEMU process, from its start until it exits
	lastExit error // why the last QEMU died unexpectedly, until the next power-on
	cmdline  string
	closed   bool
	con      *consoleStream
}

// Compile-time checks of the capabilities.
var (
	_ driver.Device      = (*Device)(nil)
	_ driver.Power       = (*Device)(nil)
	_ driver.ForcePower  = (*Device)(nil)
	_ driver.Resetter    = (*Device)(nil)
	_ driver.StorageMux  = (*Device)(nil)
	_ driver.ConsolePort = (*Device)(nil)
	_ driver.Closer      = (*Device)(nil)
)

// NewDevice returns a QEMU device, powered off, with its storage off, tagged
// "qemu", "virtual" and "x86_64". Its disk is the file diskPath, created sparse with o.DiskSize
// bytes if missing (an existing file is used as it is); its pid file is
// diskPath without its ".disk" suffix plus ".pid". o.Devices and o.Dir are
// ignored. The device is not tied to any driver's discovery. NewDevice does
// not look for the QEMU binary; PowerOn does.
func NewDevice(name, diskPath string, o Options) (*Device, error) {
	o = o.withDefaults()
	if err := o.check(); err != nil {
		return nil, err
	}
	if name == "" || strings.ContainsAny(name, " \t\r\n/\\,") {
		return nil, fmt.Errorf("qemu: device name %q is empty or holds white space, commas or slashes", name)
	}
	disk, err := filepath.Abs(diskPath)
	if err != nil {
		return nil, fmt.Errorf("qemu: disk %s: %w", diskPath, err)
	}
	if err := ensureDisk(disk, o.DiskSize); err != nil {
		return nil, err
	}
	return &Device{
		name:    name,
		tags:    slices.Clone(deviceTags),
		disk:    disk,
		pidfile: strings.TrimSuffix(disk, ".disk") + ".pid",
		opts:    o,
		storage: driver.StorageOff,
	}, nil
}

// Name returns the device's name.
func (d *Device) Name() string { return d.name }

// Serial returns "": a virtual machine has no serial number.
func (d *Device) Serial() string { return "" }

// Tags returns the device's tags.
func (d *Device) Tags() []string { return slices.Clone(d.tags) }

// Driver returns DriverName.
func (d *Device) Driver() string { return DriverName }

// DiskPath returns the path of the file that holds the device's storage,
// whatever the storage multiplexer's position.
func (d *Device) DiskPath() string { return d.disk }

// PidFile returns the path of the file that holds the running QEMU's pid.
func (d *Device) PidFile() string { return d.pidfile }

// PID returns the process id of the running QEMU, or 0 when the device is
// powered off.
func (d *Device) PID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.vm == nil {
		return 0
	}
	return d.vm.pid
}

// PoweredOn reports whether QEMU runs.
func (d *Device) PoweredOn() bool { return d.PID() != 0 }

// Storage returns the storage multiplexer's position.
func (d *Device) Storage() driver.StorageMode {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.storage
}

// CommandLine returns the QEMU command line of the last power-on (also of
// one that failed), shell-quoted, or "" before the first.
func (d *Device) CommandLine() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmdline
}

// runDir returns the running QEMU's runtime directory, or "".
func (d *Device) runDir() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.vm == nil {
		return ""
	}
	return d.vm.runDir
}

func (d *Device) errClosed(op string) error {
	return fmt.Errorf("qemu %s: %s: %w", d.name, op, ErrClosed)
}

// ctxErr returns the error of op called with a context that has ended
// already: such a call does nothing.
func (d *Device) ctxErr(ctx context.Context, op string) error {
	if ctx.Err() != nil {
		return fmt.Errorf("qemu %s: %s: %w", d.name, op, context.Cause(ctx))
	}
	return nil
}

// PowerOn starts QEMU, paused, with the disk attached when the storage is at
// dut; connects the console stream (when open) and QMP; and lets the guest
// run. It does nothing when QEMU already runs. A QEMU that an earlier,
// killed test process left running on this device is killed first. Errors
// carry QEMU's stderr and command line.
func (d *Device) PowerOn(ctx context.Context) error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return d.errClosed("power on")
	}
	if d.vm != nil {
		d.mu.Unlock()
		return nil
	}
	o, storage := d.opts, d.storage
	d.lastExit = nil
	d.mu.Unlock()
	if err := d.start(ctx, o, storage); err != nil {
		return fmt.Errorf("qemu %s: power on: %w", d.name, err)
	}
	return nil
}

// ForceOn is PowerOn: a virtual machine has no power-on sequence.
func (d *Device) ForceOn(ctx context.Context) error { return d.PowerOn(ctx) }

// start starts QEMU; from the moment its command line is known, as the
// step "qemu start" with the command line as its argument cmdline, so
// that the log shows how to run the same VM by hand.
func (d *Device) start(ctx context.Context, o Options, storage driver.StorageMode) (err error) {
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	bin, err := lookBinary(o.Binary)
	if err != nil {
		return err
	}
	if err := killStale(ctx, d.pidfile, d.disk); err != nil {
		return err
	}
	disk := ""
	if storage == driver.StorageDUT {
		if err := ensureDisk(d.disk, o.DiskSize); err != nil {
			return err
		}
		disk = d.disk
	}
	sweepRunDirs(runtimeBase(), staleAge)
	runDir, err := os.MkdirTemp(runtimeBase(), runDirPrefix)
	if err != nil {
		return fmt.Errorf("creating QEMU's runtime directory: %w", err)
	}
	v := &vm{
		dev:     d.name,
		runDir:  runDir,
		conSock: filepath.Join(runDir, "con"),
		qmpSock: filepath.Join(runDir, "qmp"),
		disk:    disk,
		exited:  make(chan struct{}),
	}
	v.args = buildArgs(argsConfig{
		Binary: bin, Name: d.name, Memory: o.Memory, PidFile: d.pidfile,
		QMP: v.qmpSock, Console: v.conSock, Disk: disk, Extra: o.Args,
	})
	v.cmdline = shellQuote(v.args)
	d.mu.Lock()
	d.cmdline = v.cmdline
	d.mu.Unlock()
	ctx, st := step.Start(step.WithDevice(ctx, d.name), "qemu start", "cmdline", v.cmdline)
	defer func() { st.End(err) }()

	v.cmd = exec.Command(bin, v.args[1:]...)
	v.cmd.Args[0] = v.args[0]
	v.cmd.Stderr = &v.stderr
	// Its own process group: a Ctrl-C in the terminal goes to the test,
	// not to QEMU. Pdeathsig: QEMU dies with the test process.
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := spawn(v.cmd); err != nil {
		_ = os.RemoveAll(runDir)
		return fmt.Errorf("starting QEMU: %w; command line: %s", err, v.cmdline)
	}
	v.pid = v.cmd.Process.Pid
	d.mu.Lock()
	d.vm = v
	d.mu.Unlock()
	go v.waitProcess(d.exited)

	var seg *conSeg
	// fail stops the QEMU that did not start and says why it did not:
	// its own exit (an *ExitError) if it died by itself, else err.
	fail := func(err error) error {
		kerr := v.kill() // also waits for its stderr
		if seg != nil {
			seg.stream.detach(seg)
		}
		var ee *ExitError
		switch {
		case errors.As(err, &ee):
		case v.exitErr != nil:
			err = v.exitErr
		default:
			err = fmt.Errorf("%w; %s", err, v.describe())
		}
		return errors.Join(err, kerr)
	}
	if s := d.console(); s != nil {
		conn, err := dialRetry(ctx, v, v.conSock, "console")
		if err != nil {
			return fail(err)
		}
		seg = s.attach(v, conn)
	}
	qconn, err := dialRetry(ctx, v, v.qmpSock, "QMP")
	if err != nil {
		return fail(err)
	}
	q, err := newQMP(ctx, qconn, v.onEvent)
	if err != nil {
		_ = qconn.Close()
		return fail(err)
	}
	if !v.setQMP(q) {
		_ = q.Close()
		<-v.exited
		if v.exitErr != nil {
			return fail(v.exitErr)
		}
		return fail(fmt.Errorf("QEMU exited (%s) during power-on", v.status))
	}
	v.setRunning()
	if _, err := q.Execute(ctx, "cont", nil); err != nil {
		return fail(err)
	}
	return nil
}

// exited is called by a VM's waiting goroutine when its QEMU exited.
func (d *Device) exited(v *vm) {
	if readPidfile(d.pidfile) == v.pid {
		_ = os.Remove(d.pidfile)
	}
	d.mu.Lock()
	if d.vm == v {
		d.vm = nil
		if v.exitErr != nil {
			d.lastExit = v.exitErr
		}
	}
	d.mu.Unlock()
}

func (d *Device) current() (*vm, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrClosed
	}
	return d.vm, nil
}

// PowerOff cuts the VM's power: QMP quit, then it waits for QEMU to exit,
// bounded by ctx; when ctx ends first, QEMU is killed (SIGKILL). When QEMU
// does not run (also after the guest powered itself off) it only kills a
// QEMU that an earlier, killed test process left running on this device.
func (d *Device) PowerOff(ctx context.Context) error {
	if err := d.ctxErr(ctx, "power off"); err != nil {
		return err
	}
	d.opMu.Lock()
	defer d.opMu.Unlock()
	v, err := d.current()
	if err != nil {
		return d.errClosed("power off")
	}
	if v == nil {
		return d.offStale(ctx, "power off")
	}
	v.setStopping()
	if q := v.qmpClient(); q != nil {
		// The reply may be lost as QEMU exits: the exit decides.
		_, _ = q.Execute(ctx, "quit", nil)
	}
	select {
	case <-v.exited:
		return nil
	case <-ctx.Done():
	}
	return v.kill()
}

// ForceOff kills QEMU (SIGKILL) and waits for it to exit. When QEMU does
// not run it only kills a QEMU that an earlier, killed test process left
// running on this device.
func (d *Device) ForceOff(ctx context.Context) error {
	if err := d.ctxErr(ctx, "force off"); err != nil {
		return err
	}
	d.opMu.Lock()
	defer d.opMu.Unlock()
	v, err := d.current()
	if err != nil {
		return d.errClosed("force off")
	}
	if v == nil {
		return d.offStale(ctx, "force off")
	}
	return v.kill()
}

// offStale makes sure that no QEMU an earlier, killed test process started
// runs on this device (see killStale).
func (d *Device) offStale(ctx context.Context, op string) error {
	if err := killStale(ctx, d.pidfile, d.disk); err != nil {
		return fmt.Errorf("qemu %s: %s: %w", d.name, op, err)
	}
	return nil
}

// Reset resets the running VM (QMP system_reset), like a reset button. It
// fails with an error wrapping [ErrPoweredOff] when QEMU does not run (and
// [ErrExited] when it died unexpectedly).
func (d *Device) Reset(ctx context.Context) error {
	if err := d.ctxErr(ctx, "reset"); err != nil {
		return err
	}
	d.opMu.Lock()
	defer d.opMu.Unlock()
	v, err := d.current()
	if err != nil {
		return d.errClosed("reset")
	}
	if v == nil {
		d.mu.Lock()
		last := d.lastExit
		d.mu.Unlock()
		if last != nil {
			return fmt.Errorf("qemu %s: reset: %w: %w", d.name, ErrPoweredOff, last)
		}
		return fmt.Errorf("qemu %s: reset: %w", d.name, ErrPoweredOff)
	}
	q := v.qmpClient()
	if q == nil {
		return fmt.Errorf("qemu %s: reset: no QMP connection", d.name)
	}
	if _, err := q.Execute(ctx, "system_reset", nil); err != nil {
		// QMP ends with the process: say why it ended.
		t := time.NewTimer(2 * time.Second)
		defer t.Stop()
		select {
		case <-v.exited:
			if v.exitErr != nil {
				return fmt.Errorf("qemu %s: reset: %w", d.name, v.exitErr)
			}
			return fmt.Errorf("qemu %s: reset: %w (QEMU exited: %s)", d.name, ErrPoweredOff, v.status)
		case <-t.C:
		}
		return fmt.Errorf("qemu %s: reset: %w; %s", d.name, err, v.describe())
	}
	return nil
}

// SetStorage moves the storage multiplexer. At host the disk file is the
// block target; this fails with an error wrapping [ErrDiskInUse] while a
// running QEMU has the disk attached. At dut the next power-on attaches the
// disk to the VM; at off it boots without a disk. A running VM keeps the
// disk it was started with until it is powered off.
func (d *Device) SetStorage(ctx context.Context, mode driver.StorageMode) error {
	m, err := driver.ParseStorageMode(string(mode))
	if err != nil {
		return fmt.Errorf("qemu %s: %w", d.name, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("qemu %s: storage %s: %w", d.name, m, context.Cause(ctx))
	}
	d.opMu.Lock()
	defer d.opMu.Unlock()
	v, err := d.current()
	if err != nil {
		return d.errClosed("storage " + string(m))
	}
	if m == driver.StorageHost {
		if v != nil && v.disk != "" {
			return fmt.Errorf("qemu %s: cannot connect the storage to the host: %w (QEMU pid %d uses %s); power the device off first", d.name, ErrDiskInUse, v.pid, d.disk)
		}
		if v == nil {
			if err := d.offStale(ctx, "storage host"); err != nil {
				return err
			}
		}
		d.mu.Lock()
		size := d.opts.DiskSize
		d.mu.Unlock()
		if err := ensureDisk(d.disk, size); err != nil {
			return err
		}
	}
	d.mu.Lock()
	d.storage = m
	d.mu.Unlock()
	return nil
}

// BlockTarget returns the disk file's path while the storage is at host; it
// fails with an error wrapping [ErrStorageNotOnHost] otherwise.
func (d *Device) BlockTarget(ctx context.Context) (string, error) {
	if err := d.ctxErr(ctx, "block target"); err != nil {
		return "", err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return "", d.errClosed("block target")
	}
	if d.storage != driver.StorageHost {
		return "", fmt.Errorf("qemu %s: no block target: %w (it is at %s); set it to %s first", d.name, ErrStorageNotOnHost, d.storage, driver.StorageHost)
	}
	return d.disk, nil
}

// OpenConsole opens the VM's serial console: one stream for the device's
// lifetime, across power cycles (see the package documentation). Only one
// console can be open at a time; another OpenConsole fails with an error
// wrapping [ErrConsoleBusy].
func (d *Device) OpenConsole(ctx context.Context) (io.ReadWriteCloser, error) {
	if err := d.ctxErr(ctx, "open console"); err != nil {
		return nil, err
	}
	d.opMu.Lock()
	defer d.opMu.Unlock()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, d.errClosed("open console")
	}
	if d.con != nil {
		d.mu.Unlock()
		return nil, fmt.Errorf("qemu %s: open console: %w", d.name, ErrConsoleBusy)
	}
	s := newConsoleStream(d)
	d.con = s
	v := d.vm
	d.mu.Unlock()
	if v != nil {
		conn, err := dialRetry(ctx, v, v.conSock, "console")
		if err != nil {
			d.detachConsole(s)
			return nil, fmt.Errorf("qemu %s: open console: %w", d.name, err)
		}
		s.attach(v, conn)
	}
	return s, nil
}

func (d *Device) console() *consoleStream {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.con
}

func (d *Device) detachConsole(s *consoleStream) {
	d.mu.Lock()
	if d.con == s {
		d.con = nil
	}
	d.mu.Unlock()
}

// Close kills QEMU if it runs, waits for it to exit, removes its runtime
// files and closes the console. Later operations fail with errors wrapping
// [ErrClosed]. Closing twice is not an error.
func (d *Device) Close() error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	v, con := d.vm, d.con
	d.mu.Unlock()
	var err error
	if v != nil {
		err = v.kill()
	}
	if con != nil {
		_ = con.Close()
	}
	return err
}
