// Command flashbench measures the flash engine (harness/flash) against the
// tools people use by hand to put an OS image on a disk: `dd bs=4M
// oflag=direct conv=fsync` and `bmaptool copy`, side by side in one run on
// the same target and the same images.
//
// It builds, in a private scratch directory, what the selected cases need:
//
//   - dense.img: a raw image of -size bytes (default 1 GiB), every 1 MiB half
//     pseudo-random (incompressible) and half repetitive text;
//   - sparse.img: a raw image of the same size with about 20 % mapped (1 MiB
//     of data every 5 MiB, the holes made by seeking) and sparse.img.bmap
//     made by `bmaptool create`;
//   - dense.img.zst, sparse.img.zst (`zstd -T0 -3`), dense.img.xz,
//     sparse.img.xz (`xz -T0 -1`) and dense.img.bz2, sparse.img.bz2
//     (`lbzip2 -9`: standard single-stream bzip2).
//
// The cases, each saying which rule of the engine it measures (the
// report's Mode, checked on every flash):
//
//   - dense raw, zst, xz, bz2: the whole image (mode full);
//   - sparse raw, zst, xz, bz2 + bmap: the bmap's mapped ranges (mode bmap);
//     bmaptool copy --bmap;
//   - sparse raw, no bmap: the engine's default without a bmap (mode full:
//     the target ends byte-identical to the image, its holes zeroed on the
//     target by punch-hole or BLKZEROOUT, and read back as zeros), run with
//     -nobmap so that sparse.img.bmap beside it is refused; against dd and
//     bmaptool copy --nobmap, which write every byte;
//   - sparse raw, skip-holes: Options.SkipHoles (mode skip-holes: the holes
//     left as they were on the target); against `dd conv=sparse`, which
//     also leaves the target under all-zero blocks as it was.
//
// The default cases (-cases) are the flash goals': dense raw, dense zst,
// sparse raw+bmap and sparse xz+bmap; -cases all runs every one.
//
// For each image it flashes a regular file (and with -loop a loop device
// with direct I/O, `losetup --direct-io=on`, over a file, when losetup
// works) with each tool, -runs times, in a rotating order, dropping the
// page cache before each flash when allowed (`echo 3 >
// /proc/sys/vm/drop_caches`). The peers are dd (for compressed images
// `zstd -dc | dd iflag=fullblock ...`, `xz -dc | dd ...`, and for bzip2
// both `bzip2 -dc | dd ...` and `lbzip2 -dc | dd ...`) and `bmaptool copy`
// (given --bmap for the bmap cases and --nobmap for the others). Our engine
// runs in a child process (`flashbench -write-one IMAGE TARGET`) as a first
// flash (the image's SHA-256 not in the hash cache) with
// Options.DeferHash, three ways: verified, write-only (-noverify), and
// verified with the hash cached. Its time runs from the parent starting the
// child to Write returning; the child then waits for the deferred hash
// (the "hash after" column: how long it ran on, as while a DUT boots) and
// fails the run without it. Its peak RSS is the child's plus its largest
// decoder command's (xz); a peer's is the largest process of its pipeline.
//
// The table gives per case and tool the median seconds, their spread
// (min-max), MB/s (10^6 bytes of the unpacked image per second, holes
// included, as bmaptool counts) and peak RSS; then per peer its time over
// ours (above 1: we are faster) and informational pass/fail goal lines:
// dense at least as fast as dd; sparse with a bmap at least 1.5x faster
// than bmaptool; sparse without a bmap faster than dd and bmaptool
// --nobmap; skip-holes at least as fast as dd conv=sparse; compressed
// faster than every peer.
//
// It needs bmaptool (apt-get install bmap-tools), zstd, xz, bzip2, lbzip2,
// dd and sh (testfixtures/qemuimage/deps.sh installs them); -loop needs
// root and losetup. Run it from the repository root:
//
//	go run ./cmd/flashbench [-quick] [-size 1GiB] [-runs 3] [-dir DIR] [-loop] [-cases A,B|all] [-only CASE]
//
// Scratch space is about 5 times -size (6 with -loop); it is removed at the
// end, also on Ctrl-C. Every step is bounded by a context deadline
// (-step-timeout) and the whole run by -timeout. Times are wall-clock on a
// shared machine: expect noise, look at the medians over several runs.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/benchimage"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-write-one" {
		os.Exit(writeOne(os.Args[2:]))
	}
	var (
		sizeFlag    = flag.String("size", "1GiB", "size of the unpacked images (suffix KiB, MiB, GiB; a multiple of 1 MiB)")
		runs        = flag.Int("runs", 3, "flashes per tool, case and target")
		dir         = flag.String("dir", "", "directory for the scratch directory (default: $TMPDIR)")
		loop        = flag.Bool("loop", false, "also flash a loop device over a file (needs root and losetup)")
		timeout     = flag.Duration("timeout", 90*time.Minute, "bound on the whole run")
		stepTimeout = flag.Duration("step-timeout", 10*time.Minute, "bound on each step (making an image, one flash)")
		only        = flag.String("only", "", "run only the cases whose name contains this (e.g. bz2, \"no bmap\")")
		cases       = flag.String("cases", strings.Join(issueCases, ","), "comma-separated case names to run, or \"all\"")
		quick       = flag.Bool("quick", false, "iterate: 256MiB images, 3 runs (unless -size or -runs are given)")
	)
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: flashbench [-quick] [-size 1GiB] [-runs 3] [-dir DIR] [-loop] [-cases A,B|all] [-only CASE]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["size"] {
			*sizeFlag = "256MiB"
		}
		if !set["runs"] {
			*runs = 3
		}
	}
	size, err := benchimage.ParseSize(*sizeFlag)
	if err != nil || *runs < 1 || flag.NArg() != 0 {
		if err != nil {
			fmt.Fprintln(os.Stderr, "flashbench:", err)
		}
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	b := &bench{size: size, runs: *runs, step: *stepTimeout, out: os.Stdout, only: *only, cases: *cases}
	err = b.run(ctx, *dir, *loop)
	if err != nil {
		fmt.Fprintln(os.Stderr, "flashbench:", err)
		os.Exit(1)
	}
}

// oneResult is what `flashbench -write-one` prints as JSON.
type oneResult struct {
	Report flash.Report
	// Returned is how long Write took to return, from the parent's
	// start of the child; HashDone when the image's hash was complete
	// (after Returned with -defer-hash); HashDuration how long it took.
	Returned, HashDone, HashDuration time.Duration
	// MaxRSSKiB is the child's peak RSS, ChildMaxRSSKiB the largest of
	// its own children's (a decoder command such as xz).
	MaxRSSKiB, ChildMaxRSSKiB int64
	// CPUAtReturn is the CPU time (user and system) the child had used
	// when Write returned.
	CPUAtReturn time.Duration
	Error       string `json:",omitempty"`
}

// cpuTime returns the CPU time this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// maxRSS returns the peak RSS of this process and of its largest child, in
// KiB.
func maxRSS() (self, children int64) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		self = ru.Maxrss
	}
	if syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru) == nil {
		children = ru.Maxrss
	}
	return self, children
}

// writeOne is the child mode: flash one image with verification on and
// print the report as JSON on stdout.
func writeOne(args []string) int {
	fs := flag.NewFlagSet("write-one", flag.ContinueOnError)
	bmap := fs.String("bmap", "", "bmap file")
	noVerify := fs.Bool("noverify", false, "skip the read-back")
	noBmap := fs.Bool("nobmap", false, "refuse any bmap (Options.NoBmap)")
	skipHoles := fs.Bool("skip-holes", false, "leave the target under a raw image's holes as it was (Options.SkipHoles)")
	hashCache := fs.String("hash-cache", "", "remember image hashes in this directory (default: compute every time)")
	timeout := fs.Duration("timeout", 10*time.Minute, "bound on the flash")
	deferHash := fs.Bool("defer-hash", false, "return before the image's SHA-256 is complete (Options.DeferHash), then wait for it")
	noDirect := fs.Bool("nodirect", false, "Options.NoDirect")
	syncEvery := fs.Int64("sync-every", 0, "Options.SyncEvery")
	inFlight := fs.Int("inflight", 0, "Options.InFlight")
	bufSize := fs.Int("buffer", 0, "Options.BufferSize")
	buffers := fs.Int("buffers", 0, "Options.Buffers")
	t0 := fs.Int64("t0", 0, "the parent's clock (Unix ns) when it started this child: Returned is measured from it")
	if err := fs.Parse(args); err != nil || fs.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: flashbench -write-one [-bmap B] [-nobmap] [-skip-holes] [-noverify] IMAGE TARGET")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	if *t0 != 0 {
		start = time.Unix(0, *t0)
	}
	rep, err := flash.Write(ctx, fs.Arg(0), fs.Arg(1), flash.Options{
		Bmap: *bmap, NoBmap: *noBmap, SkipHoles: *skipHoles, NoVerify: *noVerify,
		HashCacheDir: *hashCache, NoHashCache: *hashCache == "", DeferHash: *deferHash,
		NoDirect: *noDirect, SyncEvery: *syncEvery, InFlight: *inFlight, BufferSize: *bufSize, Buffers: *buffers,
	})
	res := oneResult{Report: rep, Returned: time.Since(start)}
	cpuAtReturn := cpuTime()
	if err == nil && rep.Hash != nil {
		// The hash is exact evidence only once complete: wait for it
		// (after Returned), as a test does before it ends.
		rep.SHA256, err = rep.Hash.Wait(ctx)
		res.Report.SHA256, res.HashDone, res.HashDuration = rep.SHA256, time.Since(start), rep.Hash.Duration()
	}
	res.MaxRSSKiB, res.ChildMaxRSSKiB = maxRSS()
	res.CPUAtReturn = cpuAtReturn
	if err != nil {
		res.Error = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(res)
	if err != nil {
		fmt.Fprintln(os.Stderr, "flashbench -write-one:", err)
		return 1
	}
	return 0
}

type bench struct {
	size  int64
	runs  int
	step  time.Duration
	out   io.Writer
	only  string // a filter on the case names
	cases string // the case names to run, comma-separated, or "all"
	self  string
	// hashCache is the hash cache directory of toolOursCached.
	hashCache string
	// dropOK says whether dropping the page cache works here.
	dropOK bool
}

// image is one case: a file to flash and how each tool is told about it.
type image struct {
	name, path, bmap string
	// kind is the goal class: "dense", "sparse" (with a bmap), "full"
	// (sparse, no bmap: byte-identical), "skip-holes"; compressed when
	// comp != "".
	kind string
	comp string // "", "zstd", "xz", "bzip2"
	// mode is the flash.Mode our engine must report for this case.
	mode flash.Mode
	// peers are the other tools flashed, by label (see peerCmd).
	peers []string
}

// sample is one flash by one tool.
type sample struct {
	wall, write, verify time.Duration
	// hashAfter is how long our deferred hash ran on after Write
	// returned.
	hashAfter time.Duration
	// maxRSS is the peak RSS in KiB: of a peer's pipeline the largest
	// process, of ours the engine plus its largest decoder command.
	maxRSS int64
	// how says what our engine did: its mode, and how much it zeroed.
	how string
}

const (
	toolOurs = "ours"
	// toolOursCached is our engine with the image's SHA-256 remembered
	// from an earlier flash of the same file (the hash cache), as when a
	// test suite flashes one image many times.
	toolOursCached = "ours-cached"
	// toolOursNoVerify is our engine without the read-back (first
	// flash, hash deferred): the write-only figure.
	toolOursNoVerify = "ours-noverify"
	toolDD           = "dd"
	toolDDSparse     = "dd conv=sparse"
	toolLbzip2DD     = "lbzip2 -dc | dd" // the parallel peer of bzip2 -dc | dd
	toolBmap         = "bmaptool copy"
)

func (b *bench) run(ctx context.Context, parent string, loop bool) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	b.self = self
	for _, t := range []string{"bmaptool", "zstd", "xz", "bzip2", "lbzip2", "dd", "sh"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s not found (testfixtures/qemuimage/deps.sh, or apt-get install -y bmap-tools zstd xz-utils bzip2 lbzip2 coreutils): %w", t, err)
		}
	}
	dir, err := os.MkdirTemp(parent, "flashbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b.dropOK = benchimage.DropCaches() == nil
	b.hashCache = filepath.Join(dir, "hash-cache")
	fmt.Fprintf(b.out, "flashbench: size %s, %d run(s), scratch %s, drop caches: %v\n", benchimage.Human(b.size), b.runs, dir, b.dropOK)

	images, err := b.makeImages(ctx, dir)
	if err != nil {
		return err
	}
	type target struct{ name, path, backing string }
	targets := []target{{name: "file", path: filepath.Join(dir, "target.img")}}
	if loop {
		backing := filepath.Join(dir, "loop-backing.img")
		dev, err := setupLoop(ctx, backing, b.size)
		if err != nil {
			fmt.Fprintf(b.out, "loop device skipped: %v\n", err)
		} else {
			defer detachLoop(dev)
			targets = append(targets, target{name: "loop " + dev, path: dev, backing: backing})
		}
	}
	var fails int
	var summary strings.Builder
	for _, t := range targets {
		fmt.Fprintf(b.out, "\n== target: %s ==\n", t.name)
		tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "case\ttool\tmedian s\tspread s\tMB/s\twrite s\tverify s\thash after s\tpeak RSS MiB\t")
		var goals []string
		for _, img := range images {
			res, err := b.rounds(ctx, img, t.path, t.backing == "")
			if err != nil {
				return fmt.Errorf("%s on %s: %w", img.name, t.name, err)
			}
			ours, wonly, cached := median(res[toolOurs]), median(res[toolOursNoVerify]), median(res[toolOursCached])
			mbps := func(d time.Duration) string { return fmt.Sprintf("%.0f", float64(b.size)/1e6/d.Seconds()) }
			mib := func(k int64) string { return fmt.Sprintf("%.1f", float64(k)/1024) }
			row := func(label string, m sample, all []sample, ourFields bool) {
				if ourFields {
					fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%s\t%.2f\t%.2f\t%.2f\t%s\t\n", img.name, label, m.wall.Seconds(), spread(all), mbps(m.wall), m.write.Seconds(), m.verify.Seconds(), m.hashAfter.Seconds(), mib(m.maxRSS))
					return
				}
				fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%s\t\t\t\t%s\t\n", img.name, label, m.wall.Seconds(), spread(all), mbps(m.wall), mib(m.maxRSS))
			}
			row("ours verified ["+ours.how+"]", ours, res[toolOurs], true)
			row("ours write-only", wonly, res[toolOursNoVerify], true)
			row("ours verified, hash cached", cached, res[toolOursCached], true)
			peers := map[string]sample{}
			for _, p := range img.peers {
				m := median(res[p])
				peers[p] = m
				row(peerLabel(p, img), m, res[p], false)
				fmt.Fprintf(&summary, "%-9s %-24s %-26s verified %.2fx  write-only %.2fx  cached %.2fx\n", strings.Fields(t.name)[0], img.name, peerLabel(p, img),
					ratio(m.wall, ours.wall), ratio(m.wall, wonly.wall), ratio(m.wall, cached.wall))
			}
			goals = append(goals, goalLines(img, ours, wonly, peers, &fails)...)
		}
		tw.Flush()
		fmt.Fprintln(b.out, "\ngoals (first flash, hash deferred; verified [write-only]):")
		for _, g := range goals {
			fmt.Fprintln(b.out, "  "+g)
		}
	}
	fmt.Fprintf(b.out, "\npeer time / our time, medians (above 1: ours is faster; ours = until Write returned, first flash, hash deferred):\n%s", summary.String())
	fmt.Fprintf(b.out, "\n%d goal(s) missed with verification on\n", fails)
	return nil
}

// rounds flashes img onto target with every tool, b.runs times each, in a
// rotating order (the page cache dropped before each flash); fresh makes
// a new sparse target file before each.
func (b *bench) rounds(ctx context.Context, img image, target string, fresh bool) (map[string][]sample, error) {
	res := map[string][]sample{}
	// An untimed flash fills the hash cache of toolOursCached.
	if fresh {
		if err := freshFile(target, b.size); err != nil {
			return nil, err
		}
	}
	if _, err := b.flashOnce(ctx, toolOursCached, img, target); err != nil {
		return nil, fmt.Errorf("%s: %w", toolOursCached, err)
	}
	tools := append([]string{toolOurs}, img.peers...)
	tools = append(tools, toolOursNoVerify, toolOursCached)
	for r := 0; r < b.runs; r++ {
		k := r % len(tools)
		order := append(slices.Clone(tools[k:]), tools[:k]...)
		for _, tool := range order {
			if fresh {
				if err := freshFile(target, b.size); err != nil {
					return nil, err
				}
			}
			s, err := b.flashOnce(ctx, tool, img, target)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", tool, err)
			}
			res[tool] = append(res[tool], s)
		}
	}
	return res, nil
}

// spread returns the range of the wall times, "min-max".
func spread(s []sample) string {
	if len(s) == 0 {
		return ""
	}
	lo, hi := s[0].wall, s[0].wall
	for _, x := range s {
		lo, hi = min(lo, x.wall), max(hi, x.wall)
	}
	return fmt.Sprintf("%.2f-%.2f", lo.Seconds(), hi.Seconds())
}

// peerLabel names a peer tool for img in the tables.
func peerLabel(tool string, img image) string {
	switch tool {
	case toolDD:
		if img.comp != "" {
			return img.comp + " -dc | dd"
		}
		return "dd"
	case toolBmap:
		if img.bmap != "" {
			return "bmaptool copy --bmap"
		}
		return "bmaptool copy --nobmap"
	}
	return tool
}

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return a.Seconds() / b.Seconds()
}

// goalLines returns the pass/fail lines of one case and counts the goals
// missed by our verified flash with the hash computed.
func goalLines(img image, ours, wonly sample, peers map[string]sample, fails *int) []string {
	var meets func(time.Duration) bool
	var what string
	faster := func(tools ...string) {
		var names []string
		for _, t := range tools {
			names = append(names, fmt.Sprintf("%s (%.2fs)", peerLabel(t, img), peers[t].wall.Seconds()))
		}
		meets = func(d time.Duration) bool {
			for _, t := range tools {
				if d >= peers[t].wall {
					return false
				}
			}
			return true
		}
		what = "faster than " + strings.Join(names, " and ")
	}
	switch {
	case img.comp != "":
		faster(img.peers...)
	case img.kind == "dense":
		meets = func(d time.Duration) bool { return d <= peers[toolDD].wall }
		what = fmt.Sprintf("at least as fast as dd (%.2fs)", peers[toolDD].wall.Seconds())
	case img.kind == "full":
		faster(toolDD, toolBmap)
	case img.kind == "skip-holes":
		meets = func(d time.Duration) bool { return d <= peers[toolDDSparse].wall }
		what = fmt.Sprintf("at least as fast as dd conv=sparse (%.2fs)", peers[toolDDSparse].wall.Seconds())
	default:
		bm := peers[toolBmap].wall
		meets = func(d time.Duration) bool { return ratio(bm, d) >= 1.5 }
		what = fmt.Sprintf("at least 1.5x faster than bmaptool (%.2fs)", bm.Seconds())
	}
	pf := func(d time.Duration) string {
		if meets(d) {
			return fmt.Sprintf("PASS %.2fs", d.Seconds())
		}
		return fmt.Sprintf("FAIL %.2fs", d.Seconds())
	}
	if !meets(ours.wall) {
		*fails++
	}
	return []string{fmt.Sprintf("%-22s %s: %s [%s]", img.name, what, pf(ours.wall), pf(wonly.wall))}
}

// median returns the per-field medians of the samples.
func median(s []sample) sample {
	pick := func(f func(sample) int64) int64 {
		v := make([]int64, len(s))
		for i := range s {
			v[i] = f(s[i])
		}
		slices.Sort(v)
		if len(v) == 0 {
			return 0
		}
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return sample{
		wall:      time.Duration(pick(func(x sample) int64 { return int64(x.wall) })),
		write:     time.Duration(pick(func(x sample) int64 { return int64(x.write) })),
		verify:    time.Duration(pick(func(x sample) int64 { return int64(x.verify) })),
		maxRSS:    pick(func(x sample) int64 { return x.maxRSS }),
		hashAfter: time.Duration(pick(func(x sample) int64 { return int64(x.hashAfter) })),
		how:       s[0].how,
	}
}

// flashOnce runs one flash of img onto target with tool, in a child
// process, and measures it.
func (b *bench) flashOnce(ctx context.Context, tool string, img image, target string) (sample, error) {
	if b.dropOK {
		_ = benchimage.DropCaches()
	}
	ctx, cancel := context.WithTimeout(ctx, b.step)
	defer cancel()
	var cmd *exec.Cmd
	dd := "dd bs=4M oflag=direct conv=fsync status=none of=" + shq(target)
	pipe := func(decoder string) *exec.Cmd {
		// iflag=fullblock: from a pipe dd reads short, and without it
		// writes each short read as it came (64 KiB O_DIRECT writes).
		return shell(ctx, "(set -o pipefail) 2>/dev/null && set -o pipefail; "+decoder+" -dc "+shq(img.path)+" | "+dd+" iflag=fullblock")
	}
	switch tool {
	case toolOurs, toolOursCached, toolOursNoVerify:
		args := []string{"-write-one", "-timeout", b.step.String(), "-defer-hash", "-t0", strconv.FormatInt(time.Now().UnixNano(), 10)}
		switch tool {
		case toolOursCached:
			args = append(args, "-hash-cache", b.hashCache)
		case toolOursNoVerify:
			args = append(args, "-noverify")
		}
		switch {
		case img.bmap != "":
			args = append(args, "-bmap", img.bmap)
		case img.mode == flash.ModeSkipHoles:
			args = append(args, "-nobmap", "-skip-holes")
		default:
			args = append(args, "-nobmap") // e.g. sparse.img.bmap beside sparse.img
		}
		cmd = exec.CommandContext(ctx, b.self, append(args, img.path, target)...)
	case toolDD:
		if img.comp == "" {
			cmd = shell(ctx, dd+" if="+shq(img.path))
		} else {
			cmd = pipe(img.comp)
		}
	case toolDDSparse:
		cmd = shell(ctx, "dd bs=4M oflag=direct conv=sparse,fsync status=none if="+shq(img.path)+" of="+shq(target))
	case toolLbzip2DD:
		cmd = pipe("lbzip2")
	case toolBmap:
		args := []string{"copy", "--nobmap"}
		if img.bmap != "" {
			args = []string{"copy", "--bmap", img.bmap}
		}
		cmd = exec.CommandContext(ctx, "bmaptool", append(args, img.path, target)...)
	default:
		return sample{}, fmt.Errorf("unknown tool %q", tool)
	}
	setGroup(cmd)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return sample{}, fmt.Errorf("%s: %w: %s", cmd, err, tail(stderr.String()))
	}
	s := sample{wall: wall, write: wall}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		s.maxRSS = ru.Maxrss
	}
	if tool == toolOurs || tool == toolOursCached || tool == toolOursNoVerify {
		var res oneResult
		if err := json.Unmarshal([]byte(stdout.String()), &res); err != nil {
			return sample{}, fmt.Errorf("reading the child's report: %w: %q", err, tail(stdout.String()))
		}
		if !res.Report.Verified && tool != toolOursNoVerify {
			return sample{}, errors.New("our engine did not verify")
		}
		if len(res.Report.SHA256) != 64 {
			return sample{}, errors.New("our engine gave no image hash")
		}
		// The flash is over when Write returns; the deferred hash
		// completes after it (hashAfter), as while a DUT boots.
		s.wall = res.Returned
		s.hashAfter = res.HashDone - res.Returned
		s.maxRSS = res.MaxRSSKiB + res.ChildMaxRSSKiB
		if res.Report.Bytes != b.size {
			return sample{}, fmt.Errorf("our engine wrote an image of %d bytes, want %d", res.Report.Bytes, b.size)
		}
		if res.Report.Mode != img.mode {
			return sample{}, fmt.Errorf("our engine flashed %s in mode %q, this case measures %q", img.name, res.Report.Mode, img.mode)
		}
		s.write, s.verify = res.Report.Duration, res.Report.VerifyDuration
		s.how = fmt.Sprintf("%s, %.0f%% written", res.Report.Mode, 100*res.Report.MappedFraction)
		if res.Report.ZeroedBytes > 0 {
			s.how += fmt.Sprintf(", %.0f%% zeroed by %s", 100*float64(res.Report.ZeroedBytes)/float64(res.Report.Bytes), res.Report.ZeroedBy)
		}
		if d := res.Report.Decoder; d != "none" && d != "" {
			s.how += ", " + filepath.Base(d)
		}
	}
	return s, nil
}

// shell returns `sh -c script`.
func shell(ctx context.Context, script string) *exec.Cmd {
	return exec.CommandContext(ctx, "sh", "-c", script)
}

// setGroup puts cmd in its own process group and kills the whole group
// when its context ends, so that a pipeline does not outlive it.
func setGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	return s
}

// freshFile (re)creates path as a sparse file of size bytes.
func freshFile(path string, size int64) error {
	os.Remove(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// issueCases are the cases of the flash goals: make bench-flash's
// default.
var issueCases = []string{"dense raw", "dense zst", "sparse raw+bmap", "sparse xz+bmap"}

// makeImages writes the images of the selected cases: the raw images, the
// bmap and the compressed copies they need.
func (b *bench) makeImages(ctx context.Context, dir string) ([]image, error) {
	dense := filepath.Join(dir, "dense.img")
	sparse := filepath.Join(dir, "sparse.img")
	bmap := sparse + ".bmap"
	std := []string{toolDD, toolBmap}
	bz := []string{toolDD, toolLbzip2DD, toolBmap}
	imgs := []image{
		{name: "dense raw", path: dense, kind: "dense", mode: flash.ModeFull, peers: std},
		{name: "sparse raw+bmap", path: sparse, bmap: bmap, kind: "sparse", mode: flash.ModeBmap, peers: std},
		{name: "sparse raw, no bmap", path: sparse, kind: "full", mode: flash.ModeFull, peers: std},
		{name: "sparse raw, skip-holes", path: sparse, kind: "skip-holes", mode: flash.ModeSkipHoles, peers: []string{toolDDSparse}},
		{name: "dense zst", path: dense + ".zst", kind: "dense", comp: "zstd", mode: flash.ModeFull, peers: std},
		{name: "sparse zst+bmap", path: sparse + ".zst", bmap: bmap, kind: "sparse", comp: "zstd", mode: flash.ModeBmap, peers: std},
		{name: "dense xz", path: dense + ".xz", kind: "dense", comp: "xz", mode: flash.ModeFull, peers: std},
		{name: "sparse xz+bmap", path: sparse + ".xz", bmap: bmap, kind: "sparse", comp: "xz", mode: flash.ModeBmap, peers: std},
		{name: "dense bz2", path: dense + ".bz2", kind: "dense", comp: "bzip2", mode: flash.ModeFull, peers: bz},
		{name: "sparse bz2+bmap", path: sparse + ".bz2", bmap: bmap, kind: "sparse", comp: "bzip2", mode: flash.ModeBmap, peers: bz},
	}
	if b.cases != "" && b.cases != "all" {
		want := map[string]bool{}
		for _, c := range strings.Split(b.cases, ",") {
			want[strings.TrimSpace(c)] = true
		}
		imgs = slices.DeleteFunc(imgs, func(im image) bool { return !want[im.name] })
	}
	if b.only != "" {
		imgs = slices.DeleteFunc(imgs, func(im image) bool { return !strings.Contains(im.name, b.only) })
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("no case selected (-cases %q, -only %q)", b.cases, b.only)
	}
	need := map[string]bool{}
	for _, im := range imgs {
		need[im.path] = true
		if im.bmap != "" {
			need[im.bmap] = true
		}
	}
	start := time.Now()
	for _, raw := range []string{dense, sparse} {
		needed := false
		for p := range need {
			needed = needed || strings.HasPrefix(p, raw)
		}
		if !needed {
			continue
		}
		if err := benchimage.Write(raw, b.size, raw == sparse, "flash"); err != nil {
			return nil, err
		}
	}
	steps := map[string][]string{
		bmap:            {"bmaptool", "create", "-o", bmap, sparse},
		dense + ".zst":  {"zstd", "-q", "-T0", "-3", "-k", "-f", dense},
		sparse + ".zst": {"zstd", "-q", "-T0", "-3", "-k", "-f", sparse},
		dense + ".xz":   {"xz", "-T0", "-1", "-k", "-f", dense},
		sparse + ".xz":  {"xz", "-T0", "-1", "-k", "-f", sparse},
		dense + ".bz2":  {"lbzip2", "-9", "-k", "-f", dense},
		sparse + ".bz2": {"lbzip2", "-9", "-k", "-f", sparse},
	}
	for _, out := range slices.Sorted(maps.Keys(steps)) {
		if need[out] {
			if err := b.runStep(ctx, steps[out]...); err != nil {
				return nil, err
			}
		}
	}
	fmt.Fprintf(b.out, "images made in %.1fs:", time.Since(start).Seconds())
	shown := map[string]bool{}
	for _, im := range imgs {
		if shown[im.path] {
			continue
		}
		shown[im.path] = true
		if st, err := os.Stat(im.path); err == nil {
			fmt.Fprintf(b.out, " %s %.0f MiB;", filepath.Base(im.path), float64(st.Size())/(1<<20))
		}
	}
	if m, err := benchimage.Mapped(sparse); err == nil {
		fmt.Fprintf(b.out, " sparse.img mapped %.0f %%", 100*float64(m)/float64(b.size))
	}
	fmt.Fprintln(b.out)
	return imgs, nil
}

func (b *bench) runStep(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, b.step)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	setGroup(cmd)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, tail(string(out)))
	}
	return nil
}

// setupLoop makes backing a file of size bytes and attaches a loop device
// to it.
func setupLoop(ctx context.Context, backing string, size int64) (string, error) {
	if err := freshFile(backing, size); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "losetup", "--direct-io=on", "-f", "--show", backing).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("losetup: %w: %s", err, tail(string(out)))
	}
	dev := strings.TrimSpace(string(out))
	if !strings.HasPrefix(dev, "/dev/") {
		return "", fmt.Errorf("losetup printed %q", dev)
	}
	return dev, nil
}

func detachLoop(dev string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "losetup", "-d", dev).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "flashbench: losetup -d %s: %v: %s\n", dev, err, out)
	}
}
