// Command bootbench measures what the harness costs on top of booting the
// QEMU virtual DUT by hand, and how virtual DUTs scale when several boot in
// parallel. It answers two questions with numbers from this machine:
//
//   - Overhead: from the compressed image dut-1.0.0.img.zst to a logged-in
//     shell, how much slower is the harness (harness.Open, Session.Flash of
//     the .zst, PowerOn, Login) than the bare minimum: `zstd -d` to a disk
//     file, then the very QEMU command line the qemu driver runs (read from
//     a QEMU the driver started, paths adapted), driven by a plain expect
//     script (bare.exp: socat to the console and QMP sockets, cont, wait for
//     "login: ", send root, wait for the shell prompt). The goal is at most
//     +10%.
//   - Scale: N virtual DUTs (N = 1, 2, 4), each its own qemu device with its
//     own disk, flashed and logged in through the harness at the same time:
//     the wall time until all are logged in, the time of each, the peak RSS
//     of each QEMU (VmHWM, read from /proc just before the DUT is closed) and
//     the peak RSS of this Go process (getrusage).
//
// The serial runs alternate bare and harness (B H H B B H ...) so both share
// the machine's noise; each phase is reported as median and minimum. Every
// step is bounded by a context deadline; every DUT is closed (powered off,
// unlocked) on the way out, also on Ctrl-C, and at the end the command
// checks /proc that no QEMU (or socat/expect) of its own is left running.
// Disks, locks and sockets live in a private temporary directory, removed
// at the end; other users of the qemu driver on this host are not touched.
//
// It needs qemu-system-x86_64, zstd, expect and socat, and the images of
// `make qemu-images`. Run it from the repository root:
//
//	go run ./cmd/bootbench [-runs 3] [-parallel 1,2,4] [-images out/qemu-images]
//
// A default run takes about a minute on a 2-core host without KVM. The
// environment's DUT_QEMU_MEMORY, DUT_QEMU_ARGS and DUT_QEMU_BINARY apply to
// both paths (the bare command line is the driver's); DUT_QEMU_DIR and
// DUT_QEMU_DEVICES are set by the command. Timings are wall-clock times on a
// shared machine: other processes running at the same time (look at the load
// and "other QEMUs" it prints) make them slower and noisier.
package main

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

//go:embed bare.exp
var bareScript []byte

type options struct {
	runs     int
	parallel []int
	images   string
	image    string
	release  string
	timeout  time.Duration
	verbose  bool
}

func main() {
	var o options
	par := "1,2,4"
	flag.IntVar(&o.runs, "runs", 3, "serial runs of each path (bare and harness), alternated")
	flag.StringVar(&par, "parallel", par, "comma-separated numbers of virtual DUTs to boot at the same time through the harness; empty: none")
	flag.StringVar(&o.images, "images", "out/qemu-images", "directory of the images of `make qemu-images`")
	flag.StringVar(&o.image, "image", "dut-1.0.0.img.zst", "the compressed image, in -images")
	flag.StringVar(&o.release, "release", "1.0.0", "what the image's /etc/dut-release says (checked after every login)")
	flag.DurationVar(&o.timeout, "timeout", 8*time.Minute, "deadline of the whole run")
	flag.BoolVar(&o.verbose, "v", false, "print the harness's step log and the bare script's events")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: go run ./cmd/bootbench [-runs N] [-parallel 1,2,4] [-images DIR]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	var err error
	if o.parallel, err = parseCounts(par); err != nil {
		fmt.Fprintf(os.Stderr, "bootbench: -parallel: %v\n", err)
		os.Exit(2)
	}
	if o.runs < 1 {
		fmt.Fprintln(os.Stderr, "bootbench: -runs must be at least 1")
		os.Exit(2)
	}
	os.Exit(run(o))
}

// parseCounts parses "1,2,4".
func parseCounts(s string) ([]int, error) {
	var ns []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 16 {
			return nil, fmt.Errorf("%q is not a number of DUTs from 1 to 16", f)
		}
		ns = append(ns, n)
	}
	return ns, nil
}

func run(o options) (code int) {
	for _, tool := range []struct{ bin, pkg string }{
		{"zstd", "zstd"}, {"expect", "expect"}, {"socat", "socat"},
	} {
		if _, err := exec.LookPath(tool.bin); err != nil {
			fmt.Fprintf(os.Stderr, "bootbench: %s not found: install it (apt-get install %s)\n", tool.bin, tool.pkg)
			return 1
		}
	}
	images, err := filepath.Abs(o.images)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bootbench: %v\n", err)
		return 1
	}
	img := filepath.Join(images, o.image)
	imgInfo, err := os.Stat(img)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bootbench: %v (build the images with `make qemu-images`, or point -images at them)\n", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeoutCause(ctx, o.timeout, fmt.Errorf("bootbench: the whole run took longer than -timeout %s", o.timeout))
	defer cancel()

	tmp, err := os.MkdirTemp("", "bootbench-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "bootbench: %v\n", err)
		return 1
	}
	defer func() {
		// Last: nothing of ours may run on, and nothing may stay behind.
		if left := sweep(tmp); len(left) > 0 {
			fmt.Printf("\nleftover check: FAILED: killed %d process(es) of this run still running:\n", len(left))
			for _, p := range left {
				fmt.Printf("  pid %d: %s\n", p.pid, p.cmdline)
			}
			code = 1
		} else {
			fmt.Printf("\nleftover check: no QEMU (nor socat, expect) of this run is running (scanned /proc for %s)\n", tmp)
		}
		_ = os.RemoveAll(tmp)
	}()

	b := &bench{opts: o, image: img, tmp: tmp, logOut: os.Stderr}
	if err := b.setup(); err != nil {
		fmt.Fprintf(os.Stderr, "bootbench: %v\n", err)
		return 1
	}
	b.printHeader(imgInfo.Size())

	// The driver's command line, taken from a QEMU it starts (this also
	// warms the caches for QEMU and its firmware).
	if err := b.probe(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "bootbench: reading the driver's QEMU command line: %v\n", err)
		return 1
	}
	fmt.Printf("driver's QEMU command line (probe power-on):\n  %s\n", shellQuote(b.driverArgs))
	fmt.Printf("bare QEMU command line (same, paths adapted: %s):\n  %s\n\n", strings.Join(b.adapted, "; "), shellQuote(b.bareArgs))

	ok := true
	if err := b.serial(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "bootbench: serial runs: %v\n", err)
		ok = false
	}
	if ok && len(o.parallel) > 0 {
		if err := b.parallelRuns(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "bootbench: parallel runs: %v\n", err)
			ok = false
		}
	}
	fmt.Printf("\nload average at the end: %s; other QEMU processes on this host: %d\n", loadavg(), otherQEMUs(tmp))
	fmt.Printf("Go process peak RSS (getrusage maxrss, whole run): %s\n", mib(maxRSS()))
	if !ok {
		return 1
	}
	return 0
}

// bench holds the state shared by the runs.
type bench struct {
	opts    options
	image   string
	tmp     string
	logOut  *os.File
	lockDir string
	qemuDir string
	script  string

	driverArgs []string // the QEMU command line the driver ran
	bareArgs   []string // the same with the bare run's paths
	adapted    []string // what was adapted, for the report
	bareRun    string   // the bare run's socket directory
	bareDisk   string

	bare    []bareResult
	harness []harnessResult
}

func (b *bench) setup() error {
	b.lockDir = filepath.Join(b.tmp, "locks")
	b.qemuDir = filepath.Join(b.tmp, "qemu")
	b.script = filepath.Join(b.tmp, "bare.exp")
	b.bareRun = filepath.Join(b.tmp, "bare", "run")
	b.bareDisk = filepath.Join(b.tmp, "bare", "disk.img")
	if err := os.MkdirAll(filepath.Dir(b.bareDisk), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(b.script, bareScript, 0o644); err != nil {
		return err
	}
	devices := 1
	if len(b.opts.parallel) > 0 {
		devices = max(devices, slices.Max(b.opts.parallel))
	}
	// The registered qemu driver reads these at every Discover: private
	// disks, enough devices for the largest parallel run.
	os.Setenv("DUT_QEMU_DIR", b.qemuDir)
	os.Setenv("DUT_QEMU_DEVICES", strconv.Itoa(devices))
	return nil
}

func (b *bench) printHeader(imgSize int64) {
	host, _ := os.Hostname()
	fmt.Printf("bootbench: %s, %d CPUs, GOMAXPROCS %d, %s\n", host, runtime.NumCPU(), runtime.GOMAXPROCS(0), qemuVersion())
	fmt.Printf("image: %s (%s compressed)\n", b.image, mib(imgSize>>10))
	fmt.Printf("load average at the start: %s; other QEMU processes on this host: %d\n", loadavg(), otherQEMUs(b.tmp))
	var env []string
	for _, k := range []string{"DUT_QEMU_MEMORY", "DUT_QEMU_ARGS", "DUT_QEMU_BINARY"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	if len(env) > 0 {
		fmt.Printf("from the environment: %s\n", strings.Join(env, " "))
	}
	fmt.Printf("work dir: %s\n\n", b.tmp)
}

// serial runs each path opts.runs times, alternating, and prints the table.
func (b *bench) serial(ctx context.Context) error {
	n := b.opts.runs
	fmt.Printf("serial runs: %d of each path, alternating (B H H B B H ...)\n", n)
	for i := range n {
		order := []bool{false, true} // harness?
		if i%2 == 1 {
			order = []bool{true, false}
		}
		for _, h := range order {
			rctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
			others := otherQEMUs(b.tmp)
			if h {
				r := b.harnessBoot(rctx, "qemu-0", nil)
				cancel()
				if r.err != nil {
					return fmt.Errorf("harness run %d: %w", i+1, r.err)
				}
				b.harness = append(b.harness, r)
				fmt.Printf("  run %d harness: open %s  flash %s  power on -> prompt %s  login %s  total %s  (QEMU VmHWM %s; other QEMUs %d)\n",
					i+1, secs(r.open), secs(r.flash), secs(r.toPrompt), secs(r.login), secs(r.total), mib(r.hwmKiB), others)
			} else {
				r, err := b.bareBoot(rctx)
				cancel()
				if err != nil {
					return fmt.Errorf("bare run %d: %w", i+1, err)
				}
				b.bare = append(b.bare, r)
				fmt.Printf("  run %d bare:    zstd -d %s  power on -> prompt %s  login %s  total %s  (QEMU VmHWM %s; other QEMUs %d)\n",
					i+1, secs(r.decompress), secs(r.toPrompt), secs(r.login), secs(r.total), mib(r.hwmKiB), others)
			}
		}
	}
	b.printSerial()
	return nil
}

func (b *bench) printSerial() {
	bare, h := b.bare, b.harness
	col := func(rs []time.Duration) (string, string) {
		if rs == nil {
			return "-", "-"
		}
		return secs(median(rs)), secs(slices.Min(rs))
	}
	bareOf := func(f func(bareResult) time.Duration) []time.Duration { return mapped(bare, f) }
	harnOf := func(f func(harnessResult) time.Duration) []time.Duration { return mapped(h, f) }
	rows := []struct {
		name string
		b, h []time.Duration
	}{
		{"acquire: discover, lock, power off, open console", nil, harnOf(func(r harnessResult) time.Duration { return r.open })},
		{"image -> disk: zstd -d | Flash .zst (+sha256, fsync)", bareOf(func(r bareResult) time.Duration { return r.decompress }), harnOf(func(r harnessResult) time.Duration { return r.flash })},
		{"power on: QEMU up, sockets connected, cont", bareOf(func(r bareResult) time.Duration { return r.powerOn }), harnOf(func(r harnessResult) time.Duration { return r.powerOn })},
		{"power on -> login prompt (boot)", bareOf(func(r bareResult) time.Duration { return r.toPrompt }), harnOf(func(r harnessResult) time.Duration { return r.toPrompt })},
		{"login prompt -> shell (harness: + marker probe)", bareOf(func(r bareResult) time.Duration { return r.login }), harnOf(func(r harnessResult) time.Duration { return r.login })},
		{"power on -> shell", bareOf(func(r bareResult) time.Duration { return r.boot }), harnOf(func(r harnessResult) time.Duration { return r.boot })},
		{"TOTAL: start -> shell", bareOf(func(r bareResult) time.Duration { return r.total }), harnOf(func(r harnessResult) time.Duration { return r.total })},
	}
	fmt.Printf("\nOVERHEAD: %s -> logged-in shell, %d run(s) each, seconds\n", filepath.Base(b.image), len(bare))
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	const cpuRow = "CPU beside QEMU (expect+socat | harness), power on -> shell"
	width := len(cpuRow)
	for _, r := range rows {
		width = max(width, len(r.name))
	}
	left := func(s string) string { return fmt.Sprintf("%-*s", width, s) } // the writer aligns right
	fmt.Fprintf(w, "%s\tbare median\tbare min\tharness median\tharness min\tdelta median\t\n", left("phase"))
	for _, r := range rows {
		bm, bmin := col(r.b)
		hm, hmin := col(r.h)
		d := "-"
		if r.b != nil && r.h != nil {
			d = fmt.Sprintf("%+.3f", (median(r.h) - median(r.b)).Seconds())
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t\n", left(r.name), bm, bmin, hm, hmin, d)
	}
	bc, hc := bareOf(func(r bareResult) time.Duration { return r.cpu }), harnOf(func(r harnessResult) time.Duration { return r.cpu })
	bcm, bcmin := col(bc)
	hcm, hcmin := col(hc)
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%+.3f\t\n", left(cpuRow), bcm, bcmin, hcm, hcmin, (median(hc) - median(bc)).Seconds())
	bh := mappedInt(bare, func(r bareResult) int64 { return r.hwmKiB })
	hh := mappedInt(h, func(r harnessResult) int64 { return r.hwmKiB })
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t\t\n", left("QEMU peak RSS (VmHWM), MiB"), mibN(medianInt(bh)), mibN(slices.Min(bh)), mibN(medianInt(hh)), mibN(slices.Min(hh)))
	w.Flush()

	bt := bareOf(func(r bareResult) time.Duration { return r.total })
	ht := harnOf(func(r harnessResult) time.Duration { return r.total })
	ratio := median(ht).Seconds() / median(bt).Seconds()
	var pairs []float64
	for i := range min(len(bt), len(ht)) {
		pairs = append(pairs, ht[i].Seconds()/bt[i].Seconds())
	}
	spread := ""
	if len(pairs) > 0 {
		spread = fmt.Sprintf(" (pairs spread %.2f-%.2f: boot-time noise)", slices.Min(pairs), slices.Max(pairs))
	}
	// The harness adds work before the boot (acquire, flash) and after it
	// (the marker probe); during the boot it only reads the console. The
	// boot itself is the guest's, and the noisiest phase on a shared host.
	fixed := func(f func(harnessResult) time.Duration, g func(bareResult) time.Duration) time.Duration {
		return median(harnOf(f)) - median(bareOf(g))
	}
	added := median(harnOf(func(r harnessResult) time.Duration { return r.open })) +
		fixed(func(r harnessResult) time.Duration { return r.flash }, func(r bareResult) time.Duration { return r.decompress }) +
		fixed(func(r harnessResult) time.Duration { return r.powerOn }, func(r bareResult) time.Duration { return r.powerOn }) +
		fixed(func(r harnessResult) time.Duration { return r.login }, func(r bareResult) time.Duration { return r.login })
	// The verdict rests on the harness's own steps: the boot between them
	// is the guest's, the same in both paths, and the noisiest phase.
	own := added.Seconds() / median(bt).Seconds()
	verdict := "within the +10% goal"
	if own > 0.10 {
		verdict = "ABOVE the +10% goal"
	}
	fmt.Printf("OVERHEAD VERDICT: the harness's own steps (acquire + flash, power on, login deltas of the medians) add %+.3f s = %+.1f%% of the bare total: %s\n",
		added.Seconds(), own*100, verdict)
	fmt.Printf("total harness/bare: %.3fx (%+.1f%%) on medians%s; min/min %.3fx; per-pair ratios %s\n",
		ratio, (ratio-1)*100, spread, slices.Min(ht).Seconds()/slices.Min(bt).Seconds(), ratios(pairs))
}

func ratios(rs []float64) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = fmt.Sprintf("%.3f", r)
	}
	return strings.Join(s, " ")
}

func mapped[T any](rs []T, f func(T) time.Duration) []time.Duration {
	out := make([]time.Duration, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

func mappedInt[T any](rs []T, f func(T) int64) []int64 {
	out := make([]int64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

// median returns the median (the mean of the middle two for an even count).
func median[T ~int64 | ~float64](xs []T) T {
	if len(xs) == 0 {
		var zero T
		return zero
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return s[m-1] + (s[m]-s[m-1])/2
}

func medianInt(xs []int64) int64 { return median(xs) }

func secs(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }

// mib renders KiB as MiB.
func mib(kib int64) string { return fmt.Sprintf("%.0f MiB", float64(kib)/1024) }

func mibN(kib int64) string { return fmt.Sprintf("%.0f", float64(kib)/1024) }

// maxRSS returns this process's peak RSS in KiB.
func maxRSS() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss // KiB on Linux
}

// selfCPU returns the CPU time (user + system) this process used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// vmHWM returns the peak RSS of process pid in KiB, from /proc/PID/status.
func vmHWM(pid int) (int64, error) {
	if pid <= 0 {
		return 0, errors.New("no process")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func qemuVersion() string {
	bin := cmp.Or(os.Getenv("DUT_QEMU_BINARY"), "qemu-system-x86_64")
	out, err := exec.Command(bin, "-version").Output()
	if err != nil {
		return "QEMU version unknown"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

// proc is a process found in /proc.
type proc struct {
	pid     int
	cmdline string
}

// procs returns the processes whose command line satisfies keep.
func procs(keep func(args []string) bool) []proc {
	entries, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue // gone, kernel thread or zombie
		}
		args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if keep(args) {
			out = append(out, proc{pid, strings.Join(args, " ")})
		}
	}
	return out
}

// otherQEMUs counts the QEMU processes on this host that are not this run's.
func otherQEMUs(tmp string) int {
	return len(procs(func(args []string) bool {
		return strings.HasPrefix(filepath.Base(args[0]), "qemu-system") && !strings.Contains(strings.Join(args, " "), tmp)
	}))
}

// sweep kills (SIGKILL) the processes whose command line names tmp — this
// run's QEMUs, socats and expects — and returns them; none should be left.
func sweep(tmp string) []proc {
	left := procs(func(args []string) bool { return strings.Contains(strings.Join(args, " "), tmp) })
	for _, p := range left {
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	return left
}

// shellQuote renders args as a POSIX shell command line.
func shellQuote(args []string) string {
	var sb strings.Builder
	for i, a := range args {
		if i > 0 {
			sb.WriteByte(' ')
		}
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-") == "" {
			sb.WriteString(a)
			continue
		}
		sb.WriteString("'" + strings.ReplaceAll(a, "'", `'\''`) + "'")
	}
	return sb.String()
}
