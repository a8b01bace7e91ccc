package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// bareResult is one bare run: zstd -d, then bare.exp with the driver's QEMU
// command line.
type bareResult struct {
	decompress time.Duration // zstd -d to the disk file
	powerOn    time.Duration // expect started -> QEMU running (QMP cont answered)
	toPrompt   time.Duration // expect started -> "login: "
	login      time.Duration // "login: " -> shell prompt
	boot       time.Duration // expect started -> shell prompt
	total      time.Duration // zstd started -> shell prompt
	cpu        time.Duration // CPU time of expect and its socats (not QEMU) up to the shell prompt
	hwmKiB     int64
	release    string
}

// adaptArgs returns the driver's QEMU command line with each old path
// replaced by the new one, and what it replaced. Every old path must occur
// (else the driver's command line changed shape and bootbench must follow),
// and none may remain.
func adaptArgs(args []string, repl [][2]string) ([]string, []string, error) {
	out := make([]string, len(args))
	copy(out, args)
	var did []string
	for _, r := range repl {
		old, new := r[0], r[1]
		if strings.Contains(new, ",") {
			return nil, nil, fmt.Errorf("path %s holds a comma, which QEMU's option syntax would need escaped", new)
		}
		n := 0
		for i, a := range out {
			if strings.Contains(a, old) {
				out[i] = strings.ReplaceAll(a, old, new)
				n++
			}
		}
		if n == 0 {
			return nil, nil, fmt.Errorf("the driver's command line does not name %s: %s", old, shellQuote(args))
		}
		did = append(did, old+" -> "+new)
	}
	return out, did, nil
}

// runDirOf returns the runtime directory of a driver's QEMU command line:
// the directory of its QMP socket (-qmp unix:DIR/qmp,server=on,...).
func runDirOf(args []string) (string, error) {
	for i, a := range args {
		if a == "-qmp" && i+1 < len(args) {
			p, ok := strings.CutPrefix(args[i+1], "unix:")
			if !ok {
				break
			}
			p, _, _ = strings.Cut(p, ",")
			return filepath.Dir(p), nil
		}
	}
	return "", fmt.Errorf("no -qmp unix:... in the driver's command line: %s", shellQuote(args))
}

// bareBoot runs the bare baseline once.
func (b *bench) bareBoot(ctx context.Context) (bareResult, error) {
	var r bareResult
	if err := os.Remove(b.bareDisk); err != nil && !os.IsNotExist(err) {
		return r, err
	}

	t0 := time.Now()
	zstd := exec.CommandContext(ctx, "zstd", "-d", "-q", "-f", "-o", b.bareDisk, b.image)
	if out, err := zstd.CombinedOutput(); err != nil {
		return r, fmt.Errorf("zstd -d: %w: %s", err, bytes.TrimSpace(out))
	}
	r.decompress = time.Since(t0)

	t1 := time.Now()
	cmd := exec.CommandContext(ctx, "expect", append([]string{"-f", b.script, b.bareRun}, b.bareArgs...)...)
	// expect and the QEMU it starts share a process group: on a deadline
	// or Ctrl-C the whole group is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return r, err
	}
	if err := cmd.Start(); err != nil {
		return r, fmt.Errorf("starting expect: %w", err)
	}
	defer syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // nothing of the group may outlive the run

	events := map[string]time.Time{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if b.opts.verbose {
			fmt.Fprintf(b.logOut, "    [bare] %s\n", line)
		}
		key, val, _ := strings.Cut(line, " ")
		switch key {
		case "started", "running", "login", "shell":
			us, err := strconv.ParseInt(val, 10, 64)
			if err == nil {
				events[key] = time.UnixMicro(us)
			}
			if key == "shell" {
				r.cpu = treeCPU(cmd.Process.Pid)
			}
		case "release":
			r.release = strings.TrimSpace(val)
		case "hwm":
			r.hwmKiB, _ = strconv.ParseInt(val, 10, 64)
		}
	}
	if err := cmd.Wait(); err != nil {
		if cerr := context.Cause(ctx); ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, cerr)
		}
		return r, fmt.Errorf("bare.exp: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	for _, k := range []string{"running", "login", "shell"} {
		if events[k].IsZero() {
			return r, fmt.Errorf("bare.exp printed no %q event: %s", k, bytes.TrimSpace(stderr.Bytes()))
		}
	}
	if r.release != b.opts.release {
		return r, fmt.Errorf("the DUT says its release is %q, want %q", r.release, b.opts.release)
	}
	// Wall-clock times (expect's clock) against Go's: both from the same
	// system clock.
	t1w := t1.Round(0)
	r.powerOn = events["running"].Sub(t1w)
	r.toPrompt = events["login"].Sub(t1w)
	r.login = events["shell"].Sub(events["login"])
	r.boot = events["shell"].Sub(t1w)
	r.total = events["shell"].Sub(t0.Round(0))
	return r, nil
}

// treeCPU returns the CPU time (user + system) that process pid and its
// children, QEMU excepted, have used so far, from /proc (clock ticks of 10 ms).
func treeCPU(pid int) time.Duration {
	var total time.Duration
	for _, p := range procStats() {
		if (p.pid == pid || p.ppid == pid) && !strings.HasPrefix(p.comm, "qemu-system") {
			total += p.cpu
		}
	}
	return total
}

type procStat struct {
	pid, ppid int
	comm      string
	cpu       time.Duration
}

// procStats reads /proc/PID/stat of every process.
func procStats() []procStat {
	entries, _ := os.ReadDir("/proc")
	var out []procStat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(s[close+1:]) // f[0] is the state (field 3)
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		out = append(out, procStat{pid: pid, ppid: ppid, comm: s[open+1 : close], cpu: time.Duration(utime+stime) * 10 * time.Millisecond})
	}
	return out
}
