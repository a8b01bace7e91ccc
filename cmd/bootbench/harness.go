package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/qemu"
)

// harnessResult is one boot through the harness.
type harnessResult struct {
	name     string
	open     time.Duration // harness.Open: discover, lock, power off, storage off, open console
	flash    time.Duration // Session.Flash of the .zst
	powerOn  time.Duration // Session.PowerOn: storage dut, QEMU started and connected, cont
	toPrompt time.Duration // PowerOn called -> first login prompt (LoginResult.PromptAt)
	login    time.Duration // login prompt -> Login returned (shell proved by a marker command)
	boot     time.Duration // PowerOn called -> Login returned
	total    time.Duration // Open called -> Login returned
	cpu      time.Duration // this process's CPU time from PowerOn to Login returned (serial runs only)
	loggedIn time.Time
	hwmKiB   int64
	release  string
	err      error
}

// config is the harness configuration of device name, private to this run.
func (b *bench) config(name string) harness.Config {
	return harness.Config{
		Driver:         qemu.DriverName,
		Name:           name,
		LockDir:        b.lockDir,
		Image:          b.image,
		AcquireTimeout: 30 * time.Second,
		BootTimeout:    2 * time.Minute,
		CommandTimeout: 30 * time.Second,
	}
}

func holder() harness.Holder { return harness.Holder{Test: "bootbench", PID: os.Getpid()} }

// stepLog collects the harness's step log of one session; printed live with
// -v, and after a failure.
type stepLog struct {
	mu      sync.Mutex
	name    string
	start   time.Time
	lines   []string
	verbose bool
}

func (l *stepLog) logf(format string, args ...any) {
	line := fmt.Sprintf("%7.3fs %s", time.Since(l.start).Seconds(), fmt.Sprintf(format, args...))
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	if l.verbose {
		fmt.Fprintf(os.Stderr, "    [harness %s] %s\n", l.name, line)
	}
}

func (l *stepLog) dump() {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(os.Stderr, "harness step log of %s:\n", l.name)
	for _, line := range l.lines {
		fmt.Fprintf(os.Stderr, "  %s\n", line)
	}
}

// closeSession closes s with a deadline of its own: it must run also when
// ctx has ended.
func closeSession(ctx context.Context, s *harness.Session, l *stepLog) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := s.Close(cctx); err != nil {
		fmt.Fprintf(os.Stderr, "bootbench: closing %s: %v\n", s.Device().Name(), err)
		l.dump()
	}
}

// probe opens device qemu-0 through the harness, powers it on (on its
// blank disk: only the command line matters), reads the QEMU command line
// from /proc and closes it; then it derives the bare command line.
func (b *bench) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	l := &stepLog{name: "probe", start: time.Now(), verbose: b.opts.verbose}
	s, err := harness.Open(ctx, b.config("qemu-0"), holder(), l.logf)
	if err != nil {
		return err
	}
	defer closeSession(ctx, s, l)
	if err := s.PowerOn(ctx); err != nil {
		return err
	}
	dev, ok := s.Device().(*qemu.Device)
	if !ok {
		return fmt.Errorf("device %s is a %T, not a *qemu.Device", s.Device().Name(), s.Device())
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", dev.PID()))
	if err != nil {
		return fmt.Errorf("reading QEMU's command line: %w (driver's: %s)", err, dev.CommandLine())
	}
	b.driverArgs = strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
	if got, want := shellQuote(b.driverArgs), dev.CommandLine(); got != want {
		return fmt.Errorf("QEMU runs %s, the driver says %s", got, want)
	}
	runDir, err := runDirOf(b.driverArgs)
	if err != nil {
		return err
	}
	b.bareArgs, b.adapted, err = adaptArgs(b.driverArgs, [][2]string{
		{runDir + "/", b.bareRun + "/"},
		{dev.DiskPath(), b.bareDisk},
		{dev.PidFile(), filepath.Join(filepath.Dir(b.bareDisk), "qemu.pid")},
	})
	return err
}

// harnessBoot acquires device name, flashes the image, powers it on and
// logs in, timing each step; then (after hold, when not nil) it checks the
// release, reads QEMU's peak RSS and closes the session.
func (b *bench) harnessBoot(ctx context.Context, name string, hold func()) (r harnessResult) {
	r.name = name
	l := &stepLog{name: name, start: time.Now(), verbose: b.opts.verbose}
	defer func() {
		if r.err != nil {
			l.dump()
		}
	}()

	t0 := time.Now()
	s, err := harness.Open(ctx, b.config(name), holder(), l.logf)
	if err != nil {
		r.err = err
		return r
	}
	defer closeSession(ctx, s, l)
	r.open = time.Since(t0)

	t := time.Now()
	if _, err := s.Flash(ctx, b.image, nil); err != nil {
		r.err = err
		return r
	}
	r.flash = time.Since(t)

	cpu0 := selfCPU()
	pon := time.Now()
	if err := s.PowerOn(ctx); err != nil {
		r.err = err
		return r
	}
	r.powerOn = time.Since(pon)
	res, err := s.Login(ctx)
	end := time.Now()
	r.cpu = selfCPU() - cpu0
	if err != nil {
		r.err = err
		return r
	}
	r.loggedIn = end
	r.toPrompt = res.PromptAt.Sub(pon)
	r.login = end.Sub(res.PromptAt)
	r.boot = end.Sub(pon)
	r.total = end.Sub(t0)

	if hold != nil {
		hold()
	}
	out, err := s.Run(ctx, "cat /etc/dut-release")
	if err != nil {
		r.err = err
		return r
	}
	if r.release = strings.TrimSpace(out.Output); r.release != b.opts.release {
		r.err = fmt.Errorf("%s says its release is %q, want %q", name, r.release, b.opts.release)
		return r
	}
	pid := s.Device().(*qemu.Device).PID()
	if r.hwmKiB, err = vmHWM(pid); err != nil {
		r.err = fmt.Errorf("peak RSS of %s's QEMU (pid %d): %w", name, pid, err)
	}
	return r
}

// parallelRuns boots N DUTs at once for each N of -parallel and prints the
// tables.
func (b *bench) parallelRuns(ctx context.Context) error {
	type stage struct {
		n       int
		wall    time.Duration
		results []harnessResult
		goRSS   int64
	}
	var stages []stage
	fmt.Printf("\nparallel runs: %v virtual DUTs at once through the harness\n", b.opts.parallel)
	for _, n := range b.opts.parallel {
		pctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
		others := otherQEMUs(b.tmp)
		results := make([]harnessResult, n)
		// Every DUT holds its QEMU until all are logged in (or failed),
		// so that the peak RSS of each is read while all run.
		var arrived, wg sync.WaitGroup
		arrived.Add(n)
		start := time.Now()
		for i := range n {
			wg.Go(func() {
				done := sync.OnceFunc(arrived.Done)
				defer done()
				results[i] = b.harnessBoot(pctx, fmt.Sprintf("qemu-%d", i), func() { done(); arrived.Wait() })
			})
		}
		wg.Wait()
		cancel()
		st := stage{n: n, results: results, goRSS: maxRSS()}
		for _, r := range results {
			if r.err != nil {
				return fmt.Errorf("%d in parallel: %s: %w", n, r.name, r.err)
			}
			st.wall = max(st.wall, r.loggedIn.Sub(start))
		}
		stages = append(stages, st)
		fmt.Printf("  %d DUT(s): all logged in after %s s (other QEMUs %d)\n", n, secs(st.wall), others)
	}

	fmt.Printf("\nPARALLEL: N virtual DUTs at once, each: Open, Flash .zst, PowerOn, Login; seconds\n")
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "N\tDUT\topen\tflash\tpower on -> prompt\tprompt -> shell\ttotal\tQEMU VmHWM MiB\t")
	for _, st := range stages {
		for _, r := range st.results {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", st.n, r.name, secs(r.open), secs(r.flash), secs(r.toPrompt), secs(r.login), secs(r.total), mibN(r.hwmKiB))
		}
	}
	w.Flush()

	fmt.Println()
	w = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "N\twall: all logged in\tper-DUT total median\tmin\tmax\twall vs N=1\tQEMU VmHWM/DUT MiB median\tmax\tall QEMUs MiB\tGo peak RSS MiB\t")
	var base time.Duration // the wall time of one DUT alone
	for _, st := range stages {
		if st.n == 1 {
			base = st.wall
		}
	}
	for _, st := range stages {
		totals := mapped(st.results, func(r harnessResult) time.Duration { return r.total })
		hwm := mappedInt(st.results, func(r harnessResult) int64 { return r.hwmKiB })
		var sum int64
		for _, h := range hwm {
			sum += h
		}
		rel := "-"
		if base > 0 {
			rel = fmt.Sprintf("%.2fx", st.wall.Seconds()/base.Seconds())
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", st.n, secs(st.wall), secs(median(totals)), secs(slices.Min(totals)), secs(slices.Max(totals)),
			rel, mibN(medianInt(hwm)), mibN(slices.Max(hwm)), mibN(sum), mibN(st.goRSS))
	}
	w.Flush()
	fmt.Println("(Go peak RSS is this process's high-water mark so far: getrusage maxrss, cumulative over the run.)")
	return nil
}
