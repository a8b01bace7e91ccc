package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/simimage"
)

// Identity of the simulated board and its software, as shown on the console.
const (
	firmwareVersion = "SimBIOS 1.0"
	kernelRelease   = "6.1.0-sim"
	kernelVersion   = "#1 SMP PREEMPT"
	machine         = "aarch64"
	tty             = "ttyS0"
)

// Control flow of the board goroutine. They never leave the package.
var (
	// errReboot restarts the boot from the firmware, booting the disk.
	errReboot = errors.New("reboot")
	// errRescueReset restarts the firmware in rescue mode.
	errRescueReset = errors.New("reset into rescue mode")
	// errHalt halts the board until it is powered off.
	errHalt = errors.New("halt")
	// errLogout ends the login session.
	errLogout = errors.New("logout")
	// errInterrupt is a Ctrl-C typed on the console.
	errInterrupt = errors.New("interrupt")
)

// kmsg is a kernel message due at a time, printed whatever the board does.
type kmsg struct {
	at   time.Time
	text string
}

// board is the software of a powered board: firmware, kernel, login and
// shell. It runs in one goroutine per run and owns all its fields; it talks
// to the device only through the device's locked methods.
type board struct {
	d   *Device
	r   *run
	ctx context.Context

	cfg       bootConfig
	bootStart time.Time
	img       *simimage.Image
	kmsgs     []kmsg

	// The tty line discipline (canonical mode).
	ttyOpen bool     // whether a program has the tty open; else input is lost
	echo    bool     // whether typed characters are echoed
	line    []byte   // the line being typed
	lines   []string // typed lines not read yet
	lastCR  bool     // the last byte was '\r', so a following '\n' is ignored
	intr    bool     // Ctrl-C was typed and not handled yet
	eof     bool     // Ctrl-D was typed on an empty line and not handled yet
}

func newBoard(d *Device, r *run, ctx context.Context) *board {
	return &board{d: d, r: r, ctx: ctx}
}

// main runs the board until it is stopped, then closes r.done.
func (b *board) main(mode bootMode) {
	defer close(b.r.done)
	for {
		err := b.boot(mode)
		switch {
		case errors.Is(err, errReboot):
			mode = bootNormal
			continue
		case errors.Is(err, errRescueReset):
			mode = bootRescue
			continue
		case err == nil, errors.Is(err, errHalt):
			b.d.setActivity(b.r, actHalted)
			b.closeTTY()
			_ = b.wait(time.Time{}, nil) // until stopped
		}
		return
	}
}

// out prints s on the console, turning "\n" into "\r\n" as a tty's onlcr
// does.
func (b *board) out(s string) {
	if s == "" {
		return
	}
	b.d.emit(b.r, []byte(strings.ReplaceAll(s, "\n", "\r\n")))
}

// at waits until permille thousandths of the boot time have passed since
// the boot started. at(1000) is exactly the boot time.
func (b *board) at(permille int64) error {
	bt := b.cfg.bootTime
	d := bt/1000*permille + bt%1000*permille/1000
	return b.wait(b.bootStart.Add(time.Duration(d)), nil)
}

// wait runs the tty and the kernel log until done reports true, the
// deadline passes (the zero time: never) or the board is stopped, which
// returns the context's error.
func (b *board) wait(deadline time.Time, done func() bool) error {
	for {
		if err := b.ctx.Err(); err != nil {
			return err
		}
		b.feed()
		now := time.Now()
		for len(b.kmsgs) > 0 && !now.Before(b.kmsgs[0].at) {
			b.out(b.kmsgs[0].text)
			b.kmsgs = b.kmsgs[1:]
		}
		if done != nil && done() {
			return nil
		}
		if !deadline.IsZero() && !now.Before(deadline) {
			return nil
		}
		next := deadline
		if len(b.kmsgs) > 0 && (next.IsZero() || b.kmsgs[0].at.Before(next)) {
			next = b.kmsgs[0].at
		}
		var timer *time.Timer
		var fire <-chan time.Time
		if !next.IsZero() {
			timer = time.NewTimer(next.Sub(now))
			fire = timer.C
		}
		select {
		case <-b.ctx.Done():
		case <-b.r.inReady:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// sleep waits for d, or until Ctrl-C when interruptible, which returns
// errInterrupt.
func (b *board) sleep(d time.Duration, interruptible bool) error {
	var done func() bool
	if interruptible {
		done = func() bool { return b.intr }
	}
	if err := b.wait(time.Now().Add(d), done); err != nil {
		return err
	}
	if interruptible && b.intr {
		b.intr = false
		return errInterrupt
	}
	return nil
}

// openTTY opens the tty for a program, discarding earlier input as getty's
// flush does.
func (b *board) openTTY() {
	b.feed() // drop what was typed while the tty was closed
	b.ttyOpen, b.echo = true, true
	b.line, b.lines, b.lastCR, b.intr, b.eof = nil, nil, false, false, false
}

// closeTTY closes the tty: input is lost from now on.
func (b *board) closeTTY() {
	b.ttyOpen = false
	b.line, b.lines, b.intr, b.eof = nil, nil, false, false
}

// feed runs the line discipline over the input that arrived.
func (b *board) feed() {
	in := b.d.takeInput(b.r)
	if len(in) == 0 || !b.ttyOpen {
		return
	}
	var echo strings.Builder
	for _, c := range in {
		if b.lastCR && c == '\n' {
			b.lastCR = false
			continue // "\r\n" ends one line, not two
		}
		b.lastCR = c == '\r'
		switch c {
		case '\r', '\n':
			b.lines = append(b.lines, string(b.line))
			b.line = nil
			if b.echo {
				echo.WriteString("\n")
			}
		case 0x03: // Ctrl-C (VINTR): flush the input, signal
			b.intr = true
			b.line, b.lines = nil, nil
			if b.echo {
				echo.WriteString("^C")
			}
		case 0x04: // Ctrl-D (VEOF)
			if len(b.line) == 0 {
				b.eof = true
			} else {
				b.lines = append(b.lines, string(b.line))
				b.line = nil
			}
		case 0x7f, 0x08: // erase
			if len(b.line) > 0 {
				b.line = b.line[:len(b.line)-1]
				if b.echo {
					echo.WriteString("\b \b")
				}
			}
		case 0x15: // Ctrl-U (VKILL)
			if b.echo {
				echo.WriteString(strings.Repeat("\b \b", len(b.line)))
			}
			b.line = nil
		default:
			b.line = append(b.line, c)
			if b.echo {
				echo.WriteByte(c)
			}
		}
	}
	b.out(echo.String())
}

// readLine reads a line from the tty. Ctrl-C returns errInterrupt and
// Ctrl-D on an empty line io.EOF.
func (b *board) readLine() (string, error) {
	if err := b.wait(time.Time{}, func() bool { return b.intr || b.eof || len(b.lines) > 0 }); err != nil {
		return "", err
	}
	switch {
	case b.intr:
		b.intr = false
		return "", errInterrupt
	case len(b.lines) > 0:
		l := b.lines[0]
		b.lines = b.lines[1:]
		return l, nil
	default:
		b.eof = false
		return "", io.EOF
	}
}

// boot runs the firmware and what it boots. It returns nil when the board
// halts, an errReboot-like error to boot again, or the context's error.
func (b *board) boot(mode bootMode) error {
	b.cfg = b.d.bootConfig()
	b.bootStart = time.Now()
	b.img, b.kmsgs = nil, nil
	b.closeTTY()
	b.d.setActivity(b.r, actBooting)
	b.out(fmt.Sprintf("%s (%s)\nDRAM:  512 MiB\n", firmwareVersion, b.cfg.host))
	if mode == bootRescue {
		return b.rescue()
	}
	return b.bootDisk()
}

// bootDisk boots the image on the disk, from the firmware's boot device
// message on.
func (b *board) bootDisk() error {
	if err := b.at(50); err != nil {
		return err
	}
	b.out("Boot device: mmc0\n")
	if st := b.d.StorageState(); st != driver.StorageDUT {
		b.out(fmt.Sprintf("Boot failed: storage not connected to the DUT (the storage mux is at %s)\nNo bootable device.\n", st))
		return nil
	}
	img, err := readDisk(b.d.diskPath)
	switch {
	case errors.Is(err, simimage.ErrNoImage):
		b.out("No bootable device.\n")
		return nil
	case err != nil:
		// A corrupt image's error reads "image corrupt: <reason>".
		b.out("Boot failed: " + err.Error() + "\n")
		return nil
	}
	b.img = img
	v, host := img.Version, b.cfg.host
	steps := []struct {
		at   int64
		text string
	}{
		{100, "Loading kernel from mmc0 ...\n"},
		{150, "Starting kernel ...\n\n"},
		{200, "[    0.000000] Booting Linux on physical CPU 0x0\n"},
		{200, fmt.Sprintf("[    0.000000] Linux version %s (%s) (gcc (Debian 12.2.0-14) 12.2.0) %s\n", kernelRelease, v, kernelVersion)},
		{250, "[    0.000000] Machine model: Jumpstarter Sim Board\n"},
		{300, "[    0.000000] Kernel command line: console=" + tty + ",115200 root=/dev/mmcblk0p1 rootwait\n"},
		{400, "[    0.612345] mmc0: new high speed SDHC card at address 0001\n"},
	}
	for _, s := range steps {
		if err := b.at(s.at); err != nil {
			return err
		}
		b.out(s.text)
	}
	if err := b.at(500); err != nil {
		return err
	}
	if img.Panic {
		const msg = "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(179,1)"
		b.out("[    1.234567] " + msg + "\n[    1.234567] ---[ end " + msg + " ]---\n")
		return nil
	}
	b.out("[    1.234567] EXT4-fs (mmcblk0p1): mounted filesystem with ordered data mode. Quota mode: none.\n")
	steps = []struct {
		at   int64
		text string
	}{
		{600, "[    1.345678] Run /sbin/init as init process\n"},
		{700, fmt.Sprintf("[    1.456789] systemd[1]: Hostname set to <%s>.\n", host)},
		{800, fmt.Sprintf("\nWelcome to %s %s!\n\n", simimage.OSName, v)},
	}
	for _, s := range steps {
		if err := b.at(s.at); err != nil {
			return err
		}
		b.out(s.text)
	}
	if img.Hang {
		return b.wait(time.Time{}, nil) // until stopped: the boot hangs
	}
	if err := b.at(900); err != nil {
		return err
	}
	b.out("[  OK  ] Reached target multi-user.target - Multi-User System.\n")
	if err := b.at(1000); err != nil {
		return err
	}
	// Kernel messages that arrive after the login prompt, as they do on
	// real boards.
	for _, m := range []struct {
		at   int64
		text string
	}{
		{100, "[    2.512345] random: crng init done\n"},
		{200, "[    2.723456] IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready\n"},
		{300, "[    3.034567] EXT4-fs (mmcblk0p1): re-mounted. Quota mode: none.\n"},
	} {
		bt := b.cfg.bootTime
		b.kmsgs = append(b.kmsgs, kmsg{at: time.Now().Add(time.Duration(bt/1000*m.at + bt%1000*m.at/1000)), text: m.text})
	}
	return b.login()
}

// readDisk reads the image on the disk at path.
func readDisk(path string) (*simimage.Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read mmc0: %w", err)
	}
	defer f.Close()
	return simimage.Read(f)
}

// issue is the text getty prints before the first login prompt.
func (b *board) issue() string {
	return fmt.Sprintf("\n%s %s %s %s\n\n", simimage.OSName, b.img.Version, b.cfg.host, tty)
}

// login runs getty and login: it prompts for a user name (and a password
// unless the user's is empty) and runs a shell for the user.
func (b *board) login() error {
	getty := true
	for {
		if getty {
			b.openTTY()
			b.d.setActivity(b.r, actIdle)
			b.out(b.issue())
			getty = false
		}
		b.out(b.cfg.host + " login: ")
		user, err := b.readLine()
		switch {
		case errors.Is(err, errInterrupt), errors.Is(err, io.EOF):
			b.out("\n")
			continue
		case err != nil:
			return err
		}
		user = strings.TrimSpace(user)
		if user == "" {
			continue
		}
		pw, known := b.cfg.users[user]
		ok := known && pw == ""
		if !ok {
			b.out("Password: ")
			b.echo = false
			got, err := b.readLine()
			b.echo = true
			switch {
			case errors.Is(err, errInterrupt):
				b.out("\n")
				continue
			case err != nil && !errors.Is(err, io.EOF):
				return err
			}
			b.out("\n")
			ok = known && got == pw
		}
		if !ok {
			b.out("\nLogin incorrect\n")
			continue
		}
		err = newShell(b, user).interact()
		if errors.Is(err, errLogout) {
			getty = true
			continue
		}
		return err
	}
}

// rescue runs the firmware's rescue prompt.
func (b *board) rescue() error {
	if err := b.at(100); err != nil {
		return err
	}
	b.out("Boot straps select rescue mode: not booting from mmc0\n")
	if err := b.at(150); err != nil {
		return err
	}
	b.out("\n*** " + firmwareVersion + " rescue mode ***\nType 'help' for the commands.\n")
	if err := b.at(200); err != nil {
		return err
	}
	b.openTTY()
	b.d.setActivity(b.r, actIdle)
	for {
		b.out("rescue> ")
		line, err := b.readLine()
		switch {
		case errors.Is(err, errInterrupt), errors.Is(err, io.EOF):
			b.out("\n")
			continue
		case err != nil:
			return err
		}
		switch cmd := strings.TrimSpace(line); cmd {
		case "":
		case "help":
			b.out("help     show this help\nversion  show the firmware version\nboot     boot the OS from mmc0\nreset    reset the board (into rescue mode)\n")
		case "version":
			b.out(firmwareVersion + "\n")
		case "boot":
			b.closeTTY()
			b.d.setActivity(b.r, actBooting)
			b.bootStart = time.Now()
			return b.bootDisk()
		case "reset":
			b.out("resetting ...\n")
			return errRescueReset
		default:
			b.out(fmt.Sprintf("Unknown command '%s' - try 'help'\n", strings.Fields(cmd)[0]))
		}
	}
}
