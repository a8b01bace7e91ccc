package sim

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/simimage"
)

// goldenBoot is the console output of powering on sim-0 with image 1.2.0,
// waiting for the kernel messages after the login prompt, logging in as
// root and running cat /etc/dut-release.
const goldenBoot = "SimBIOS 1.0 (sim-0)\r\n" +
	"DRAM:  512 MiB\r\n" +
	"Boot device: mmc0\r\n" +
	"Loading kernel from mmc0 ...\r\n" +
	"Starting kernel ...\r\n" +
	"\r\n" +
	"[    0.000000] Booting Linux on physical CPU 0x0\r\n" +
	"[    0.000000] Linux version 6.1.0-sim (1.2.0) (gcc (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT\r\n" +
	"[    0.000000] Machine model: Jumpstarter Sim Board\r\n" +
	"[    0.000000] Kernel command line: console=ttyS0,115200 root=/dev/mmcblk0p1 rootwait\r\n" +
	"[    0.612345] mmc0: new high speed SDHC card at address 0001\r\n" +
	"[    1.234567] EXT4-fs (mmcblk0p1): mounted filesystem with ordered data mode. Quota mode: none.\r\n" +
	"[    1.345678] Run /sbin/init as init process\r\n" +
	"[    1.456789] systemd[1]: Hostname set to <sim-0>.\r\n" +
	"\r\n" +
	"Welcome to Jumpstarter Sim Linux 1.2.0!\r\n" +
	"\r\n" +
	"[  OK  ] Reached target multi-user.target - Multi-User System.\r\n" +
	"\r\n" +
	"Jumpstarter Sim Linux 1.2.0 sim-0 ttyS0\r\n" +
	"\r\n" +
	"sim-0 login: " +
	"[    2.512345] random: crng init done\r\n" +
	"[    2.723456] IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready\r\n" +
	"[    3.034567] EXT4-fs (mmcblk0p1): re-mounted. Quota mode: none.\r\n" +
	"root\r\n" +
	rootPrompt +
	"cat /etc/dut-release\r\n" +
	"1.2.0\r\n" +
	rootPrompt

func TestGoldenBootTranscript(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newTestDevice(t, Options{})
		flash(t, d, simimage.Spec{Version: "1.2.0"})
		tm := openTerm(t, d)
		if err := d.PowerOn(t.Context()); err != nil {
			t.Fatal(err)
		}
		tm.login()
		if got := tm.run("cat /etc/dut-release"); got != "1.2.0\r\n" {
			t.Errorf("cat /etc/dut-release = %q", got)
		}
		if got := tm.all(); got != goldenBoot {
			t.Errorf("transcript differs from the golden one:\ngot  %q\nwant %q", got, goldenBoot)
		}
	})
}

func TestBootTakesBootTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const bootTime = 1234 * time.Millisecond
		d := newTestDevice(t, Options{BootTime: bootTime})
		flash(t, d, simimage.Spec{Version: "1"})
		tm := openTerm(t, d)
		start := time.Now()
		if err := d.PowerOn(t.Context()); err != nil {
			t.Fatal(err)
		}
		tm.expect("Welcome to")
		if got, want := time.Since(start), bootTime*8/10; got != want {
			t.Errorf("welcome banner after %v, want %v", got, want)
		}
		tm.expect("sim-0 login: ")
		if got := time.Since(start); got != bootTime {
			t.Errorf("login prompt after %v, want exactly the boot time %v", got, bootTime)
		}
		// The kernel messages follow the prompt at a tenth of the boot
		// time apart.
		tm.expect("crng init done\r\n")
		if got, want := time.Since(start), bootTime+bootTime/10; got != want {
			t.Errorf("first message after the prompt at %v, want %v", got, want)
		}
		tm.expect(lastNoise)
		if got, want := time.Since(start), bootTime+bootTime*3/10; got != want {
			t.Errorf("last message after the prompt at %v, want %v", got, want)
		}

		// The rescue prompt comes after a fifth of the boot time.
		start = time.Now()
		if err := d.Rescue(t.Context()); err != nil {
			t.Fatal(err)
		}
		tm.expect("rescue> ")
		if got, want := time.Since(start), bootTime/5; got != want {
			t.Errorf("rescue prompt after %v, want %v", got, want)
		}
	})
}

func TestBootIsDeterministic(t *testing.T) {
	var transcripts []string
	for range 2 {
		synctest.Test(t, func(t *testing.T) {
			d := newTestDevice(t, Options{})
			flash(t, d, simimage.Spec{Version: "7.7", Files: map[string]string{"etc/motd": "Have fun.\n"}})
			tm := openTerm(t, d)
			if err := d.PowerOn(t.Context()); err != nil {
				t.Fatal(err)
			}
			tm.login()
			tm.run("uname -a; cat /proc/version /etc/os-release; printf '%s|' a b c; echo; ls /etc")
			tm.run("sleep 2.5; uptime; cat /proc/uptime")
			transcripts = append(transcripts, tm.all())
		})
	}
	if transcripts[0] != transcripts[1] {
		t.Errorf("two runs differ:\n%q\n%q", transcripts[0], transcripts[1])
	}
	for _, want := range []string{
		"Have fun.\r\n" + rootPrompt,
		"Linux sim-0 6.1.0-sim #1 SMP PREEMPT Jumpstarter Sim Linux 7.7 aarch64 GNU/Linux\r\n",
		"a|b|c|\r\n",
		"dut-release  motd  os-release\r\n",
		// 0.39 s from power-on to the last kernel message, then 2.5 s.
		" 12:00:02 up 0 min,  1 user,  load average: 0.00, 0.00, 0.00\r\n2.89 10.40\r\n",
	} {
		if !strings.Contains(transcripts[0], want) {
			t.Errorf("transcript lacks %q:\n%q", want, transcripts[0])
		}
	}
}

func TestFlashAThenB(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		d := newTestDevice(t, Options{})
		tm := openTerm(t, d)

		// A is longer than B: B is flashed over A's tail, as dd does.
		flash(t, d, simimage.Spec{Version: "A-1.0.0", Files: map[string]string{"opt/a/data": strings.Repeat("a", 10000)}})
		if err := d.PowerOn(ctx); err != nil {
			t.Fatal(err)
		}
		tm.expect("Welcome to Jumpstarter Sim Linux A-1.0.0!")
		tm.login()
		if got := tm.run("cat /etc/dut-release"); got != "A-1.0.0\r\n" {
			t.Errorf("A: cat /etc/dut-release = %q", got)
		}
		if err := d.PowerOff(ctx); err != nil {
			t.Fatal(err)
		}

		flash(t, d, simimage.Spec{Version: "B-2.0.0"})
		if err := d.PowerOn(ctx); err != nil {
			t.Fatal(err)
		}
		tm.expect("Linux version 6.1.0-sim (B-2.0.0)")
		tm.login()
		if got := tm.run("cat /etc/dut-release"); got != "B-2.0.0\r\n" {
			t.Errorf("B: cat /etc/dut-release = %q", got)
		}
		if got := tm.run("ls /opt"); !strings.Contains(got, "No such file or directory") {
			t.Errorf("A's files survived flashing B: ls /opt = %q", got)
		}

		// A reboot from the shell reads the disk again too.
		if err := d.SetStorage(ctx, driver.StorageHost); err != nil {
			t.Fatal(err)
		}
		p, err := d.BlockTarget(ctx)
		if err != nil {
			t.Fatal(err)
		}
		img, err := simimage.Encode(simimage.Spec{Version: "C-3.0.0"})
		if err != nil {
			t.Fatal(err)
		}
		writeDisk(t, p, img)
		if err := d.SetStorage(ctx, driver.StorageDUT); err != nil {
			t.Fatal(err)
		}
		tm.send("reboot\r")
		tm.expect("reboot: Restarting system\r\nSimBIOS 1.0 (sim-0)\r\n")
		tm.expect("Welcome to Jumpstarter Sim Linux C-3.0.0!")
	})
}

func TestBootFailures(t *testing.T) {
	good, err := simimage.Encode(simimage.Spec{Version: "9.9"})
	if err != nil {
		t.Fatal(err)
	}
	corrupt := append([]byte{}, good...)
	corrupt[len(corrupt)-1000] ^= 0x55
	zeros := make([]byte, len(good))

	cases := []struct {
		name    string
		disk    []byte // nil: leave the fresh disk as it is
		storage driver.StorageMode
		want    string
		watts   float64
	}{
		{"fresh disk", nil, driver.StorageDUT, "Boot device: mmc0\r\nNo bootable device.\r\n", ampsHalted * supplyVolts},
		{"blank", zeros, driver.StorageDUT, "Boot device: mmc0\r\nNo bootable device.\r\n", ampsHalted * supplyVolts},
		{"corrupt", corrupt, driver.StorageDUT, "Boot device: mmc0\r\nBoot failed: image corrupt: payload sha256 mismatch: expected ", ampsHalted * supplyVolts},
		{"storage on host", good, driver.StorageHost, "Boot device: mmc0\r\nBoot failed: storage not connected to the DUT (the storage mux is at host)\r\nNo bootable device.\r\n", ampsHalted * supplyVolts},
		{"storage off", good, driver.StorageOff, "Boot failed: storage not connected to the DUT (the storage mux is at off)\r\nNo bootable device.\r\n", ampsHalted * supplyVolts},
		{"panic", mustEncode(t, simimage.Spec{Version: "p1", Panic: true}), driver.StorageDUT,
			"[    1.234567] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(179,1)\r\n" +
				"[    1.234567] ---[ end Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(179,1) ]---\r\n", ampsHalted * supplyVolts},
		{"hang", mustEncode(t, simimage.Spec{Version: "h1", Hang: true}), driver.StorageDUT, "Welcome to Jumpstarter Sim Linux h1!\r\n\r\n", ampsBooting * supplyVolts},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := t.Context()
				d := newTestDevice(t, Options{})
				if c.disk != nil {
					flashBytes(t, d, c.disk)
				}
				if err := d.SetStorage(ctx, c.storage); err != nil {
					t.Fatal(err)
				}
				tm := openTerm(t, d)
				if err := d.PowerOn(ctx); err != nil {
					t.Fatal(err)
				}
				tm.expect(c.want)
				if !strings.HasSuffix(c.want, "\n") {
					tm.expect("\r\n")
				}
				// Nothing follows, however long one waits, and typing
				// gets no answer.
				tm.send("root\r")
				time.Sleep(time.Hour)
				synctest.Wait()
				if rest := tm.unread(); rest != "" {
					t.Errorf("the board printed %q after failing", rest)
				}
				if strings.Contains(tm.all(), "login:") {
					t.Error("a login prompt appeared")
				}
				r, err := d.ReadPower(ctx)
				if err != nil || r.Watts != c.watts || r.Volts != supplyVolts {
					t.Errorf("ReadPower = %+v, %v; want %v W at %v V", r, err, c.watts, supplyVolts)
				}
			})
		})
	}
}

func mustEncode(t *testing.T, s simimage.Spec) []byte {
	t.Helper()
	b, err := simimage.Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCorruptMessageNamesChecksums(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newTestDevice(t, Options{})
		img := mustEncode(t, simimage.Spec{Version: "1"})
		img[len(img)-1] ^= 1
		flashBytes(t, d, img)
		tm := openTerm(t, d)
		if err := d.PowerOn(t.Context()); err != nil {
			t.Fatal(err)
		}
		tm.expect("Boot failed: image corrupt: payload sha256 mismatch: expected ")
		line := tm.expect("\r\n")
		expected, got, ok := strings.Cut(strings.TrimSuffix(line, "\r\n"), ", got ")
		if !ok || len(expected) != 64 || len(got) != 64 || expected == got {
			t.Errorf("corrupt message does not give both checksums: %q", line)
		}
	})
}

func TestRescue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		d := newTestDevice(t, Options{})
		flash(t, d, simimage.Spec{Version: "5"})
		tm := openTerm(t, d)
		if err := d.Rescue(ctx); err != nil {
			t.Fatal(err)
		}
		if d.PowerState() != PowerStateOn {
			t.Error("Rescue left the power off")
		}
		got := tm.expect("rescue> ")
		for _, want := range []string{"SimBIOS 1.0 (sim-0)\r\n", "rescue mode", "Type 'help' for the commands.\r\n"} {
			if !strings.Contains(got, want) {
				t.Errorf("rescue banner %q lacks %q", got, want)
			}
		}
		if strings.Contains(got, "Linux version") {
			t.Error("the board booted the OS in rescue mode")
		}
		if got := tm.runPrompt("help", "rescue> "); !strings.Contains(got, "boot     boot the OS from mmc0") {
			t.Errorf("help = %q", got)
		}
		if got := tm.runPrompt("frobnicate now", "rescue> "); got != "Unknown command 'frobnicate' - try 'help'\r\n" {
			t.Errorf("unknown command = %q", got)
		}
		if got := tm.runPrompt("reset", "rescue> "); !strings.Contains(got, "resetting ...\r\nSimBIOS 1.0") {
			t.Errorf("reset = %q", got)
		}
		tm.send("boot\r")
		tm.expect("Welcome to Jumpstarter Sim Linux 5!")
		tm.login()

		// Rescue on a running board power-cycles it into rescue mode.
		if err := d.Rescue(ctx); err != nil {
			t.Fatal(err)
		}
		tm.expect("SimBIOS 1.0 (sim-0)\r\n")
		tm.expect("rescue> ")
	})
}

func TestResetAndPins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		d := newTestDevice(t, Options{})
		if err := d.Reset(ctx); !errors.Is(err, ErrPoweredOff) {
			t.Errorf("Reset while off = %v, want ErrPoweredOff", err)
		}
		flash(t, d, simimage.Spec{Version: "6"})
		tm := openTerm(t, d)
		if err := d.PowerOn(ctx); err != nil {
			t.Fatal(err)
		}
		tm.login()
		if err := d.Reset(ctx); err != nil {
			t.Fatal(err)
		}
		tm.expect("SimBIOS 1.0 (sim-0)\r\n")
		tm.expect("sim-0 login: ")

		if got := d.PinNames(); strings.Join(got, ",") != "reset,a,b,c,d" {
			t.Errorf("PinNames = %q", got)
		}
		if d.Pin("a") != driver.PinFloating {
			t.Errorf("pin a starts at %q, want floating", d.Pin("a"))
		}
		if err := d.SetPin(ctx, "a", driver.PinHigh); err != nil || d.Pin("a") != driver.PinHigh {
			t.Errorf("SetPin(a, high) = %v; pin is %q", err, d.Pin("a"))
		}
		if err := d.SetPin(ctx, "e", driver.PinHigh); err == nil || !strings.Contains(err.Error(), "reset, a, b, c, d") {
			t.Errorf("SetPin(e) = %v, want an error listing the pins", err)
		}
		if err := d.SetPin(ctx, "a", "medium"); err == nil {
			t.Error("SetPin(a, medium) succeeded")
		}

		// Holding reset low stops the board; releasing it boots again.
		tm.skip()
		if err := d.SetPin(ctx, PinReset, driver.PinLow); err != nil {
			t.Fatal(err)
		}
		r, _ := d.ReadPower(ctx)
		if r.Watts != ampsInReset*supplyVolts {
			t.Errorf("power while held in reset = %+v", r)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if rest := tm.unread(); rest != "" {
			t.Errorf("board held in reset printed %q", rest)
		}
		if err := d.PowerOff(ctx); err != nil {
			t.Fatal(err)
		}
		if err := d.PowerOn(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if rest := tm.unread(); rest != "" {
			t.Errorf("board powered on while held in reset printed %q", rest)
		}
		if err := d.SetPin(ctx, PinReset, driver.PinHigh); err != nil {
			t.Fatal(err)
		}
		tm.expect("SimBIOS 1.0 (sim-0)\r\n")
		tm.expect("sim-0 login: ")
	})
}

func TestStorageMux(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		d := newTestDevice(t, Options{})
		if d.StorageState() != driver.StorageOff {
			t.Errorf("storage starts at %q, want off", d.StorageState())
		}
		for _, m := range []driver.StorageMode{driver.StorageOff, driver.StorageDUT} {
			if err := d.SetStorage(ctx, m); err != nil {
				t.Fatal(err)
			}
			_, err := d.BlockTarget(ctx)
			if !errors.Is(err, ErrStorageNotOnHost) || !strings.Contains(err.Error(), "set storage to host first") {
				t.Errorf("BlockTarget at %s = %v, want ErrStorageNotOnHost", m, err)
			}
		}
		if err := d.SetStorage(ctx, driver.StorageHost); err != nil {
			t.Fatal(err)
		}
		if p, err := d.BlockTarget(ctx); err != nil || p != d.DiskPath() {
			t.Errorf("BlockTarget at host = %q, %v; want %q", p, err, d.DiskPath())
		}
		if err := d.SetStorage(ctx, "usb"); err == nil || d.StorageState() != driver.StorageHost {
			t.Errorf("SetStorage(usb) = %v, storage now %q", err, d.StorageState())
		}

		// A running board loses its files when the storage leaves it.
		flash(t, d, simimage.Spec{Version: "4"})
		tm := openTerm(t, d)
		if err := d.PowerOn(ctx); err != nil {
			t.Fatal(err)
		}
		tm.login()
		if err := d.SetStorage(ctx, driver.StorageHost); err != nil {
			t.Fatal(err)
		}
		if got := tm.run("cat /etc/dut-release; echo $?"); got != "cat: /etc/dut-release: Input/output error\r\n1\r\n" {
			t.Errorf("cat without storage = %q", got)
		}
		if got := tm.run("cat /proc/version"); !strings.HasPrefix(got, "Linux version 6.1.0-sim (4)") {
			t.Errorf("cat /proc/version without storage = %q", got)
		}
	})
}

func TestDiskNeverTruncated(t *testing.T) {
	dir := t.TempDir()
	disk := dir + "/sim-0.disk"
	img := mustEncode(t, simimage.Spec{Version: "kept"})
	if err := os.WriteFile(disk, img, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := NewDevice("sim-0", "", nil, disk, Options{DiskSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got, err := os.ReadFile(disk)
	if err != nil || string(got) != string(img) {
		t.Errorf("NewDevice changed the existing disk (%d bytes, was %d): %v", len(got), len(img), err)
	}

	fresh := dir + "/sim-1.disk"
	d1, err := NewDevice("sim-1", "", nil, fresh, Options{DiskSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer d1.Close()
	if fi, err := os.Stat(fresh); err != nil || fi.Size() != 1<<20 {
		t.Errorf("fresh disk: %v, %v; want 1 MiB", fi, err)
	}
	if _, err := NewDevice("sim-2", "", nil, dir+"/missing/sim-2.disk", Options{}); err == nil {
		t.Error("NewDevice with a disk in a missing directory succeeded")
	}
	if _, err := NewDevice("bad name", "", nil, dir+"/x.disk", Options{}); err == nil {
		t.Error("NewDevice with a bad name succeeded")
	}
	if _, err := NewDevice("x", "", nil, dir+"/x.disk", Options{BootTime: -1}); err == nil {
		t.Error("NewDevice with a negative boot time succeeded")
	}
}

// TestRealTime runs a boot on real timers (no synctest bubble).
func TestRealTime(t *testing.T) {
	d := newTestDevice(t, Options{BootTime: 20 * time.Millisecond})
	flash(t, d, simimage.Spec{Version: "rt-1"})
	tm := openTerm(t, d)
	ctx := context.Background()
	if err := d.PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	tm.login()
	if got := tm.run("cat /etc/dut-release; sleep 0.01; echo done"); got != "rt-1\r\ndone\r\n" {
		t.Errorf("output = %q", got)
	}
	tm.send("yes\r")
	tm.expect("y\r\ny\r\ny\r\n")
	tm.send("\x03")
	tm.expect("^C\r\n" + rootPrompt)
	if err := d.PowerOff(ctx); err != nil {
		t.Fatal(err)
	}
}
