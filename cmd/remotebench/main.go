// Command remotebench measures the remote path (package remote and its
// exporter, remote/exporter) against the same work done locally, side by
// side in one run, on QEMU-free simulated devices (testfixtures/sim) whose
// storage is a disk file:
//
//  1. flash: a dense zstd image and a sparse raw image with its bmap (of
//     -size bytes unpacked, made as cmd/flashbench makes them) flashed
//     through an exporter over loopback TCP with TLS (a self-signed
//     certificate made in-process) and token auth, against flash.Write onto
//     the same disk file. The remote first flash (the image not in the
//     exporter's cache, nor its SHA-256 in the client's hash cache: hash,
//     upload, flash) is compared with a local first flash (its hash
//     computed too); the remote second flash (zero bytes sent, the hash
//     known on both sides) with both local figures. Each first flash gets a
//     fresh exporter with an empty image cache.
//  2. latency: the same first flash through a TCP proxy in this program
//     that delays every chunk it reads by -delay (25 ms) each way before
//     forwarding it, order preserved (a pipeline: the delay is a latency,
//     not a bandwidth cap).
//  3. console: how fast the harness's console (harness/console Expect, with
//     the harness's default watchers) consumes a flood of output from the
//     sim shell's `yes LINE` (1 KiB lines), remote (the exporter's console
//     transcript streamed; this part's exporter keeps 4 floods of
//     transcript) against local (the sim's port), each flood on a fresh
//     logged-in session; and the round trip of Session.Run("true") on a
//     logged-in shell, median and p90 over -run-count runs. Local and
//     remote take turns.
//  4. lease: remote driver Open+Close of a device (lease on the exporter,
//     session attached, released) against a local lease.Acquire+Release on
//     the same lock directory, median and p90 over -lease-count runs, by
//     turns.
//  5. memory: the peak RSS (VmHWM) of an exporter process (this program
//     re-run in -exporter mode) serving 4 sim devices with 4 clients holding
//     leases (3 booted and logged in, their consoles streaming) while one
//     first flash of the dense image runs.
//
// The page cache is dropped before each flash when allowed (root; -nodrop
// turns it off). Goal lines (first flash >= 0.9x local, second >= 1.0x
// local) are informational: the exit status is 0 unless a step failed to
// run. Every step is bounded by -step-timeout and the whole run by
// -timeout. Run it from anywhere:
//
//	go run ./cmd/remotebench [-quick] [-size 1GiB] [-runs 3] [-parts flash,proxy,console,lease,memory]
//
// It needs zstd and bmaptool (testfixtures/qemuimage/deps.sh). Scratch space
// is about 5 times -size, removed at the end.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/benchimage"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/console"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/lease"
	"github.com/jumpstarter-dev/jumpstarter-go/remote"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/exporter"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/imagecache"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/simimage"
)

// token is the client token every exporter of the bench knows.
const token = "remotebench-token"

// The sim devices: flashDev's disk is the flash target (of -size bytes);
// the others hold a bootable sim image, for the console parts.
const (
	flashDev   = "sim-0"
	consoleDev = "sim-1"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-exporter" {
		os.Exit(exporterChild(os.Args[2:]))
	}
	cfg, err := parseFlags(flag.CommandLine, os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "remotebench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "remotebench:", err)
		os.Exit(1)
	}
}

// config is the parsed command line.
type config struct {
	size        int64
	runs        int
	consoleMB   int64
	runCount    int
	leaseCount  int
	delay       time.Duration
	timeout     time.Duration
	stepTimeout time.Duration
	dir         string
	parts       map[string]bool
	noDrop      bool
}

var allParts = []string{"flash", "proxy", "console", "lease", "memory"}

func parseFlags(fs *flag.FlagSet, args []string) (config, error) {
	var c config
	sizeFlag := fs.String("size", "1GiB", "unpacked size of the images (a multiple of 1 MiB)")
	quick := fs.Bool("quick", false, "iterate: 256MiB images (unless -size is given)")
	fs.IntVar(&c.runs, "runs", 3, "flashes per case and path, and console floods per path")
	consoleMB := fs.String("console-size", "64MiB", "output of each console flood")
	fs.IntVar(&c.runCount, "run-count", 200, "Run(\"true\") round trips per path")
	fs.IntVar(&c.leaseCount, "lease-count", 50, "lease round trips per path")
	fs.DurationVar(&c.delay, "delay", 25*time.Millisecond, "the proxy's delay each way")
	fs.DurationVar(&c.timeout, "timeout", time.Hour, "bound on the whole run")
	fs.DurationVar(&c.stepTimeout, "step-timeout", 10*time.Minute, "bound on each step (an image, a flash, a flood, a series of round trips)")
	fs.StringVar(&c.dir, "dir", "", "directory for the scratch directory (default $TMPDIR)")
	parts := fs.String("parts", strings.Join(allParts, ","), "comma-separated parts to run: "+strings.Join(allParts, ","))
	fs.BoolVar(&c.noDrop, "nodrop", false, "do not drop the page cache before each flash")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() != 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick && !set["size"] {
		*sizeFlag = "256MiB"
	}
	var err error
	if c.size, err = benchimage.ParseSize(*sizeFlag); err != nil {
		return c, err
	}
	if c.consoleMB, err = benchimage.ParseSize(*consoleMB); err != nil {
		return c, err
	}
	if c.runs < 1 || c.runCount < 1 || c.leaseCount < 1 {
		return c, errors.New("-runs, -run-count and -lease-count must be at least 1")
	}
	c.parts = map[string]bool{}
	for _, p := range strings.Split(*parts, ",") {
		p = strings.TrimSpace(p)
		if p == "all" {
			for _, a := range allParts {
				c.parts[a] = true
			}
			continue
		}
		if !slices.Contains(allParts, p) {
			return c, fmt.Errorf("unknown part %q (want %s)", p, strings.Join(allParts, ","))
		}
		c.parts[p] = true
	}
	return c, nil
}

// bench is one run's state.
type bench struct {
	config
	out, log io.Writer
	scratch  string
	simDir   string // the sim devices' disks, shared by every exporter and the local driver
	lockDir  string // the host's lock directory (the exporters') and the clients'
	tls      *tls.Config
	pool     *x509.CertPool
	certPEM  []byte
	keyPEM   []byte
	seq      int // names fresh directories
	dropOK   bool
}

// lockedWriter serialises the writes of the log, which the exporter
// child's stderr shares.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "remotebench: "+format+"\n", args...)
}

// fresh returns a new empty directory in the scratch directory.
func (b *bench) fresh(prefix string) (string, error) {
	b.seq++
	d := filepath.Join(b.scratch, fmt.Sprintf("%s-%d", prefix, b.seq))
	return d, os.MkdirAll(d, 0o755)
}

// stepCtx bounds one step.
func (b *bench) stepCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.stepTimeout)
}

func run(ctx context.Context, c config, out, log io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	for _, t := range []string{"zstd", "bmaptool"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s not found (testfixtures/qemuimage/deps.sh, or apt-get install -y zstd bmap-tools): %w", t, err)
		}
	}
	scratch, err := os.MkdirTemp(c.dir, "remotebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	b := &bench{config: c, out: out, log: &lockedWriter{w: log}, scratch: scratch, simDir: filepath.Join(scratch, "sims"), lockDir: filepath.Join(scratch, "locks")}
	if err := b.setup(); err != nil {
		return err
	}
	b.dropOK = !c.noDrop && benchimage.DropCaches() == nil
	fmt.Fprintf(out, "remotebench: images %s, %d run(s), console flood %s, %d Run round trips, %d lease round trips, proxy delay %s each way, drop caches: %v\n",
		benchimage.Human(c.size), c.runs, benchimage.Human(c.consoleMB), c.runCount, c.leaseCount, c.delay, b.dropOK)
	var goals []string
	var imgs []benchImage
	if c.parts["flash"] || c.parts["proxy"] || c.parts["memory"] {
		if imgs, err = b.makeImages(ctx); err != nil {
			return err
		}
	}
	if c.parts["flash"] || c.parts["proxy"] {
		g, err := b.flashPart(ctx, imgs)
		if err != nil {
			return fmt.Errorf("flash: %w", err)
		}
		goals = append(goals, g...)
	}
	if c.parts["console"] {
		if err := b.consolePart(ctx); err != nil {
			return fmt.Errorf("console: %w", err)
		}
	}
	if c.parts["lease"] {
		if err := b.leasePart(ctx); err != nil {
			return fmt.Errorf("lease: %w", err)
		}
	}
	if c.parts["memory"] {
		if err := b.memoryPart(ctx, imgs[0]); err != nil {
			return fmt.Errorf("memory: %w", err)
		}
	}
	if len(goals) > 0 {
		fmt.Fprintln(out, "\ngoals (informational):")
		for _, g := range goals {
			fmt.Fprintln(out, "  "+g)
		}
	}
	return nil
}

// setup makes the sim disks and the TLS certificate.
func (b *bench) setup() error {
	if err := os.MkdirAll(b.simDir, 0o755); err != nil {
		return err
	}
	for i := 1; i < 4; i++ {
		if err := simimage.WriteFile(filepath.Join(b.simDir, fmt.Sprintf("sim-%d.disk", i)), simimage.Spec{Version: "1.0.0"}); err != nil {
			return err
		}
	}
	cert, pool, certPEM, keyPEM, err := selfSigned()
	if err != nil {
		return err
	}
	b.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	b.pool, b.certPEM, b.keyPEM = pool, certPEM, keyPEM
	return nil
}

// selfSigned makes a self-signed ECDSA certificate for 127.0.0.1 and
// localhost, its own CA.
func selfSigned() (tls.Certificate, *x509.CertPool, []byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "remotebench exporter"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(48 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, nil, nil, err
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(parsed)
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, nil, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: parsed}, pool, certPEM, keyPEM, nil
}

// simDriver is a sim driver of n devices on the bench's disks.
func simDriver(dir string, n int, diskSize int64) *sim.Driver {
	return sim.New(sim.Options{Devices: n, Dir: dir, DiskSize: diskSize, BootTime: 100 * time.Millisecond})
}

// server is an exporter serving in this process.
type server struct {
	exp    *exporter.Exporter
	url    string
	cancel context.CancelFunc
	done   chan error
}

// startExporter serves the sim devices over TLS on a loopback port, with
// an image cache in cacheDir.
func startExporter(simDir, lockDir, cacheDir string, devices int, diskSize int64, tlsCfg *tls.Config, mod ...func(*exporter.Config)) (*server, error) {
	cache, err := imagecache.Open(cacheDir, 8<<30)
	if err != nil {
		return nil, err
	}
	cfg := exporter.Config{
		Name: "bench-lab", Drivers: []driver.Driver{simDriver(simDir, devices, diskSize)}, LockDir: lockDir,
		Tokens: map[string]string{token: "bench"}, Images: cache,
	}
	for _, m := range mod {
		m(&cfg)
	}
	exp, err := exporter.New(cfg)
	if err != nil {
		return nil, err
	}
	l := exporter.Listener{Address: "https://127.0.0.1:0", TLS: tlsCfg}
	ln, err := exp.Listen(l)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{exp: exp, url: "https://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- exp.ServeOn(ctx, ln, l) }()
	return s, nil
}

// stop ends the exporter's leases and its server.
func (s *server) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := s.exp.Shutdown(ctx)
	s.cancel()
	return errors.Join(err, <-s.done)
}

// client is a remote driver of the exporter at url.
func (b *bench) client(url string) *remote.Driver {
	return remote.New(remote.Options{Exporters: []string{url}, Token: token, RootCAs: b.pool})
}

var holder = lease.Holder{Test: "remotebench"}

// ---- images ----

// benchImage is a flash case.
type benchImage struct {
	name, path string
	mode       flash.Mode
}

// makeImages writes dense.img.zst (dense.img compressed with zstd -3, the
// raw image then removed) and sparse.img with sparse.img.bmap.
func (b *bench) makeImages(ctx context.Context) ([]benchImage, error) {
	start := time.Now()
	dir := filepath.Join(b.scratch, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	dense, sparse := filepath.Join(dir, "dense.img"), filepath.Join(dir, "sparse.img")
	if err := benchimage.Write(dense, b.size, false, "remote"); err != nil {
		return nil, err
	}
	if err := benchimage.Write(sparse, b.size, true, "remote"); err != nil {
		return nil, err
	}
	if err := b.runCmd(ctx, "zstd", "-q", "-T0", "-3", "-f", "--rm", dense); err != nil {
		return nil, err
	}
	if err := b.runCmd(ctx, "bmaptool", "create", "-o", sparse+".bmap", sparse); err != nil {
		return nil, err
	}
	imgs := []benchImage{{"dense zst", dense + ".zst", flash.ModeFull}, {"sparse raw+bmap", sparse, flash.ModeBmap}}
	if err := settle(ctx, dense+".zst", sparse, sparse+".bmap"); err != nil {
		return nil, err
	}
	fmt.Fprintf(b.out, "images made in %.1fs:", time.Since(start).Seconds())
	for _, im := range imgs {
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

// hashCacheWindow is a little more than the flash engine's hash cache's
// racy window (harness/flash: a file whose status changed less than 2 s
// ago is not remembered, its times proving nothing yet).
const hashCacheWindow = 2500 * time.Millisecond

// settle waits until the files' last status change is older than the hash
// cache's racy window, so that the "hash cached" flashes are: at small
// sizes the first flash would come too soon after the image was made.
func settle(ctx context.Context, paths ...string) error {
	var last time.Time
	for _, p := range paths {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			return err
		}
		if ct := time.Unix(st.Ctim.Unix()); ct.After(last) {
			last = ct
		}
	}
	t := time.NewTimer(time.Until(last.Add(hashCacheWindow)))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *bench) runCmd(ctx context.Context, args ...string) error {
	ctx, cancel := b.stepCtx(ctx)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (b *bench) drop() {
	if b.dropOK {
		_ = benchimage.DropCaches()
	}
}

// ---- part 1 and 2: flash ----

// flashSample is one flash.
type flashSample struct {
	wall time.Duration
	// engine is the flash engine's own time (Report.Duration plus
	// VerifyDuration): the rest of wall is hashing, the round trips and
	// the upload.
	engine time.Duration
	sent   int64
	mode   flash.Mode
}

const (
	pathLocal       = "local first (hash computed)"
	pathLocalCached = "local, hash cached"
	pathRemote1     = "remote first (hash, upload, flash)"
	pathRemote2     = "remote second (cached on exporter)"
	pathProxy1      = "remote first via proxy"
)

func (b *bench) flashPart(ctx context.Context, imgs []benchImage) ([]string, error) {
	var goals []string
	type row struct {
		img     benchImage
		samples map[string][]flashSample
	}
	var rows []row
	for _, img := range imgs {
		res := map[string][]flashSample{}
		for r := range b.runs {
			b.logf("%s: round %d/%d", img.name, r+1, b.runs)
			if err := b.flashRound(ctx, img, res); err != nil {
				return nil, fmt.Errorf("%s: %w", img.name, err)
			}
		}
		rows = append(rows, row{img, res})
	}
	mbps := func(d time.Duration) float64 { return float64(b.size) / 1e6 / d.Seconds() }
	if b.parts["flash"] {
		fmt.Fprintf(b.out, "\n== 1. flash over loopback TCP+TLS (token auth) vs flash.Write on the same sim disk file: median of %d, MB/s of the unpacked %s ==\n", b.runs, benchimage.Human(b.size))
		tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "case\tpath\tmedian s\tspread s\tMB/s\tengine s\tsent MiB\tremote/local first\tremote/local cached\t")
		for _, rw := range rows {
			local, cached := medianFlash(rw.samples[pathLocal]), medianFlash(rw.samples[pathLocalCached])
			for _, p := range []string{pathLocal, pathLocalCached, pathRemote1, pathRemote2} {
				m := medianFlash(rw.samples[p])
				r1, r2 := "", ""
				if p == pathRemote1 || p == pathRemote2 {
					r1 = fmt.Sprintf("%.2fx", ratio(local.wall, m.wall))
					r2 = fmt.Sprintf("%.2fx", ratio(cached.wall, m.wall))
				}
				fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%.0f\t%.2f\t%.1f\t%s\t%s\t\n", rw.img.name, p, m.wall.Seconds(), spreadFlash(rw.samples[p]), mbps(m.wall), m.engine.Seconds(), float64(m.sent)/(1<<20), r1, r2)
			}
			first, second := medianFlash(rw.samples[pathRemote1]), medianFlash(rw.samples[pathRemote2])
			goals = append(goals,
				goal(fmt.Sprintf("%s first flash >= 0.9x local first", rw.img.name), ratio(local.wall, first.wall), 0.9),
				goal(fmt.Sprintf("%s second flash >= 1.0x local first", rw.img.name), ratio(local.wall, second.wall), 1.0),
				goal(fmt.Sprintf("%s second flash >= 1.0x local, hash cached", rw.img.name), ratio(cached.wall, second.wall), 1.0))
			if second.sent != 0 {
				goals = append(goals, fmt.Sprintf("FAIL  %s second flash sent %d bytes (want 0)", rw.img.name, second.sent))
			}
		}
		tw.Flush()
		fmt.Fprintln(b.out, "(median s: wall time of the whole call; engine s: the flash engine's write, sync and read-back, on the exporter for remote rows; ratios: local time over remote time, above 1 remote is faster)")
	}
	if b.parts["proxy"] {
		fmt.Fprintf(b.out, "\n== 2. first flash through a proxy adding %s each way (RTT %s) vs local: median of %d ==\n", b.delay, 2*b.delay, b.runs)
		tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "case\tpath\tmedian s\tspread s\tMB/s\tengine s\tsent MiB\tproxied/local first\tproxied/loopback first\t")
		for _, rw := range rows {
			local, first, prox := medianFlash(rw.samples[pathLocal]), medianFlash(rw.samples[pathRemote1]), medianFlash(rw.samples[pathProxy1])
			fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%.0f\t%.2f\t%.1f\t%.2fx\t%.2fx\t\n", rw.img.name, pathProxy1, prox.wall.Seconds(), spreadFlash(rw.samples[pathProxy1]), mbps(prox.wall), prox.engine.Seconds(), float64(prox.sent)/(1<<20), ratio(local.wall, prox.wall), ratio(first.wall, prox.wall))
		}
		tw.Flush()
	}
	return goals, nil
}

// flashRound flashes img once by each path.
func (b *bench) flashRound(ctx context.Context, img benchImage, res map[string][]flashSample) error {
	disk := filepath.Join(b.simDir, flashDev+".disk")
	// The disk exists at its size before the first local flash, as the
	// exporter's sim driver makes it.
	if _, err := simDriver(b.simDir, 4, b.size).Discover(ctx); err != nil {
		return err
	}
	if b.parts["flash"] {
		hc, err := b.fresh("hash-local")
		if err != nil {
			return err
		}
		for _, p := range []string{pathLocal, pathLocalCached} {
			s, err := b.localFlash(ctx, img, disk, hc)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			res[p] = append(res[p], s)
		}
		err = b.remoteFlash(ctx, img, false, func(s flashSample) { res[pathRemote1] = append(res[pathRemote1], s) },
			func(s flashSample) { res[pathRemote2] = append(res[pathRemote2], s) })
		if err != nil {
			return err
		}
	}
	if b.parts["proxy"] {
		if !b.parts["flash"] {
			hc, err := b.fresh("hash-local")
			if err != nil {
				return err
			}
			s, err := b.localFlash(ctx, img, disk, hc)
			if err != nil {
				return fmt.Errorf("%s: %w", pathLocal, err)
			}
			res[pathLocal] = append(res[pathLocal], s)
		}
		if err := b.remoteFlash(ctx, img, true, func(s flashSample) { res[pathProxy1] = append(res[pathProxy1], s) }, nil); err != nil {
			return err
		}
	}
	return nil
}

// localFlash is flash.Write of img onto disk, the image's hash remembered
// in hashCache.
func (b *bench) localFlash(ctx context.Context, img benchImage, disk, hashCache string) (flashSample, error) {
	ctx, cancel := b.stepCtx(ctx)
	defer cancel()
	b.drop()
	start := time.Now()
	rep, err := flash.Write(ctx, img.path, disk, flash.Options{HashCacheDir: hashCache})
	s := flashSample{wall: time.Since(start), engine: rep.Duration + rep.VerifyDuration, mode: rep.Mode}
	if err == nil && rep.Mode != img.mode {
		err = fmt.Errorf("mode %s, want %s", rep.Mode, img.mode)
	}
	return s, err
}

// remoteFlash starts an exporter with an empty image cache, opens the
// flash device through it (via the delaying proxy when proxied) with an
// empty client hash cache, and flashes img: first reports the first
// flash; second, when not nil, the second.
func (b *bench) remoteFlash(ctx context.Context, img benchImage, proxied bool, first, second func(flashSample)) error {
	cacheDir, err := b.fresh("exporter-cache")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cacheDir)
	srv, err := startExporter(b.simDir, b.lockDir, cacheDir, 4, b.size, b.tls)
	if err != nil {
		return err
	}
	url := srv.url
	var px *proxy
	if proxied {
		if px, err = startProxy(strings.TrimPrefix(srv.url, "https://"), b.delay); err != nil {
			return errors.Join(err, srv.stop())
		}
		url = "https://" + px.addr()
	}
	err = b.flashThrough(ctx, url, img, first, second)
	if px != nil {
		px.close()
	}
	return errors.Join(err, srv.stop())
}

func (b *bench) flashThrough(ctx context.Context, url string, img benchImage, first, second func(flashSample)) error {
	hc, err := b.fresh("hash-remote")
	if err != nil {
		return err
	}
	octx, cancel := b.stepCtx(ctx)
	defer cancel()
	l, err := lease.Acquire(octx, lease.Request{Drivers: []driver.Driver{b.client(url)}, Name: flashDev, Dir: b.lockDir}, holder)
	if err != nil {
		return err
	}
	defer l.Release()
	dev, err := l.Open(octx)
	if err != nil {
		return err
	}
	rd := dev.(*remote.Device)
	defer rd.Close()
	once := func() (flashSample, error) {
		ctx, cancel := b.stepCtx(ctx)
		defer cancel()
		b.drop()
		start := time.Now()
		rep, sent, err := rd.Flash(ctx, img.path, flash.Options{HashCacheDir: hc})
		s := flashSample{wall: time.Since(start), engine: rep.Duration + rep.VerifyDuration, sent: sent.ImageBytes + sent.BmapBytes, mode: rep.Mode}
		if err == nil && rep.Mode != img.mode {
			err = fmt.Errorf("mode %s, want %s", rep.Mode, img.mode)
		}
		return s, err
	}
	s, err := once()
	if err != nil {
		return fmt.Errorf("remote first flash: %w", err)
	}
	first(s)
	if second != nil {
		if s, err = once(); err != nil {
			return fmt.Errorf("remote second flash: %w", err)
		}
		second(s)
	}
	return nil
}

func medianFlash(s []flashSample) flashSample {
	if len(s) == 0 {
		return flashSample{wall: time.Nanosecond}
	}
	c := slices.Clone(s)
	slices.SortFunc(c, func(a, b flashSample) int { return int(a.wall - b.wall) })
	return c[len(c)/2]
}

func spreadFlash(s []flashSample) string {
	if len(s) == 0 {
		return "-"
	}
	lo, hi := s[0].wall, s[0].wall
	for _, x := range s {
		lo, hi = min(lo, x.wall), max(hi, x.wall)
	}
	return fmt.Sprintf("%.2f-%.2f", lo.Seconds(), hi.Seconds())
}

// ratio is how many times faster the second duration's path is: above 1
// the measured path is faster than its reference.
func ratio(ref, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return ref.Seconds() / d.Seconds()
}

func goal(what string, got, want float64) string {
	verdict := "PASS"
	if got < want {
		verdict = "FAIL"
	}
	return fmt.Sprintf("%s  %s: %.2fx", verdict, what, got)
}

// ---- the delaying proxy ----

// proxy forwards TCP connections to a target, delaying every chunk it
// reads by delay before writing it on, in both directions, in order.
type proxy struct {
	ln     net.Listener
	target string
	delay  time.Duration
	mu     sync.Mutex
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func startProxy(target string, delay time.Duration) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{ln: ln, target: target, delay: delay, conns: map[net.Conn]bool{}}
	p.wg.Go(p.accept)
	return p, nil
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() {
			t, err := net.DialTimeout("tcp", p.target, 10*time.Second)
			if err != nil {
				c.Close()
				return
			}
			if !p.track(c) || !p.track(t) {
				c.Close()
				t.Close()
				return
			}
			var wg sync.WaitGroup
			wg.Go(func() { p.pipe(t, c) })
			wg.Go(func() { p.pipe(c, t) })
			wg.Wait()
			c.Close()
			t.Close()
		})
	}
}

// pipe copies src to dst, each chunk read written delay after it was read:
// a reader goroutine stamps the chunks, this one waits out each stamp.
func (p *proxy) pipe(dst, src net.Conn) {
	type piece struct {
		data []byte
		due  time.Time
	}
	q := make(chan piece, 1024)
	go func() {
		defer close(q)
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				q <- piece{slices.Clone(buf[:n]), time.Now().Add(p.delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	t := time.NewTimer(0)
	<-t.C
	failed := false
	for pc := range q {
		if failed {
			continue // drain, so that the reader ends
		}
		if d := time.Until(pc.due); d > 0 {
			t.Reset(d)
			<-t.C
		}
		if _, err := dst.Write(pc.data); err != nil {
			failed = true
			src.Close()
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// ---- part 3: console ----

// yesLine is what `yes` repeats: 1 KiB lines with the newline (the sim's
// yes prints 64 lines, then pauses 1 ms: up to 64 MB/s).
var yesLine = strings.Repeat("y", 1023)

// consoleResult is one path's console figures.
type consoleResult struct {
	floods []time.Duration
	runs   []time.Duration
}

func (b *bench) consolePart(ctx context.Context) error {
	srv, err := b.mainExporter()
	if err != nil {
		return err
	}
	local, rem, err := b.consoles(ctx, srv.url)
	if err = errors.Join(err, srv.stop()); err != nil {
		return err
	}
	fmt.Fprintf(b.out, "\n== 3. console: Expect consuming `yes` output (%s per flood, 1 KiB lines, median of %d) and Run(\"true\") on a logged-in shell (%d runs each, interleaved) ==\n", benchimage.Human(b.consoleMB), b.runs, b.runCount)
	tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "measure\tlocal\tremote\tremote/local\t")
	lf, rf := medianDur(local.floods), medianDur(rem.floods)
	mb := func(d time.Duration) float64 { return float64(b.consoleMB) / 1e6 / d.Seconds() }
	rng := func(s []time.Duration) string {
		return fmt.Sprintf("%.1f-%.1f", mb(slices.Max(s)), mb(slices.Min(s)))
	}
	fmt.Fprintf(tw, "Expect throughput MB/s\t%.1f\t%.1f\t%.2fx\t\n", mb(lf), mb(rf), mb(rf)/mb(lf))
	fmt.Fprintf(tw, "  its spread, MB/s\t%s\t%s\t\t\n", rng(local.floods), rng(rem.floods))
	lm, rm := medianDur(local.runs), medianDur(rem.runs)
	l9, r9 := p90(local.runs), p90(rem.runs)
	fmt.Fprintf(tw, "Run(\"true\") median ms\t%.3f\t%.3f\t%.2fx\t\n", ms(lm), ms(rm), ms(rm)/ms(lm))
	fmt.Fprintf(tw, "Run(\"true\") p90 ms\t%.3f\t%.3f\t%.2fx\t\n", ms(l9), ms(r9), ms(r9)/ms(l9))
	tw.Flush()
	fmt.Fprintln(b.out, "(throughput ratio: above 1x the remote path is faster; round trips: remote time over local time)")
	return nil
}

// mainExporter serves the sim devices for the console and lease parts. It
// keeps 4 floods' worth of console transcript (the default is 16 MiB): the
// sim's yes outruns the consumer, and a reader that falls further behind
// than the transcript kept fails by design, which would end the part
// rather than measure it.
func (b *bench) mainExporter() (*server, error) {
	cacheDir, err := b.fresh("exporter-cache")
	if err != nil {
		return nil, err
	}
	return startExporter(b.simDir, b.lockDir, cacheDir, 4, b.size, b.tls, func(c *exporter.Config) {
		c.TranscriptBytes = max(16<<20, 4*b.consoleMB)
	})
}

// consoles measures the console locally (the sim driver, sim-2) and
// through the exporter at url (sim-1) by turns, so that the machine's load
// drifts over both alike: first the Run round trips on a logged-in shell
// of each, then the floods, each on a fresh session (logged in anew), so
// that what yes printed after the count was reached, still unread, goes
// with the session instead of being read through.
func (b *bench) consoles(ctx context.Context, url string) (local, rem consoleResult, err error) {
	type path struct {
		what, name string
		drv        driver.Driver
		res        *consoleResult
		sess       *harness.Session
	}
	paths := []*path{{"local", "sim-2", simDriver(b.simDir, 4, b.size), &local, nil}, {"remote", consoleDev, b.client(url), &rem, nil}}
	octx, cancel := b.stepCtx(ctx)
	defer cancel()
	for _, p := range paths {
		if p.sess, err = b.shell(octx, p.drv, p.name); err != nil {
			return local, rem, fmt.Errorf("%s: %w", p.what, err)
		}
		defer closeSession(ctx, p.sess)
	}
	b.logf("console: %d Run round trips each", b.runCount)
	for r := range b.runCount {
		for k := range paths {
			p := paths[(k+r)%2]
			start := time.Now()
			res, err := p.sess.Run(octx, "true")
			if err != nil {
				return local, rem, fmt.Errorf("%s: %w", p.what, err)
			}
			if res.ExitCode != 0 {
				return local, rem, fmt.Errorf("%s: true exited %d", p.what, res.ExitCode)
			}
			p.res.runs = append(p.res.runs, time.Since(start))
		}
	}
	for _, p := range paths {
		closeSession(ctx, p.sess)
	}
	for r := range b.runs {
		for k := range paths {
			p := paths[(k+r)%2]
			b.logf("console %s: flood %d/%d", p.what, r+1, b.runs)
			d, err := b.floodOn(ctx, p.drv, p.name)
			if err != nil {
				return local, rem, fmt.Errorf("%s: flood: %w", p.what, err)
			}
			p.res.floods = append(p.res.floods, d)
		}
	}
	return local, rem, nil
}

// floodOn logs in on device name through drv, floods, and ends the session.
func (b *bench) floodOn(ctx context.Context, drv driver.Driver, name string) (time.Duration, error) {
	ctx, cancel := b.stepCtx(ctx)
	defer cancel()
	sess, err := b.shell(ctx, drv, name)
	if err != nil {
		return 0, err
	}
	defer closeSession(ctx, sess)
	con, err := sess.Console()
	if err != nil {
		return 0, err
	}
	return b.flood(ctx, con)
}

// shell opens device name through drv with the harness, powers it on and
// logs in.
func (b *bench) shell(ctx context.Context, drv driver.Driver, name string) (*harness.Session, error) {
	sess, err := harness.Open(ctx, harness.Config{Drivers: []driver.Driver{drv}, Name: name, LockDir: b.lockDir, CommandTimeout: b.stepTimeout}, holder, nil)
	if err != nil {
		return nil, err
	}
	err = sess.PowerOn(ctx)
	if err == nil {
		_, err = sess.Login(ctx)
	}
	if err == nil {
		_, err = sess.Run(ctx, "true")
	}
	if err != nil {
		closeSession(ctx, sess)
		return nil, err
	}
	return sess, nil
}

// closeSession powers the device off and ends the session.
func closeSession(ctx context.Context, s *harness.Session) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	_ = s.Close(cctx)
}

// flood starts `yes LINE` and expects its lines until consoleMB bytes have
// been consumed past the cursor; yes goes on until the session ends.
func (b *bench) flood(ctx context.Context, con *console.Console) (time.Duration, error) {
	ctx, cancel := b.stepCtx(ctx)
	defer cancel()
	con.Discard()
	from := con.Cursor()
	pat := console.String(yesLine + "\n")
	start := time.Now()
	if err := con.Send(ctx, "yes "+yesLine+"\n"); err != nil {
		return 0, err
	}
	for int64(con.Cursor()-from) < b.consoleMB {
		if _, err := con.Expect(ctx, pat); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

func medianDur(s []time.Duration) time.Duration {
	if len(s) == 0 {
		return time.Nanosecond
	}
	c := slices.Clone(s)
	slices.Sort(c)
	return c[len(c)/2]
}

func p90(s []time.Duration) time.Duration {
	if len(s) == 0 {
		return time.Nanosecond
	}
	c := slices.Clone(s)
	slices.Sort(c)
	i := (len(c)*9+9)/10 - 1
	return c[max(i, 0)]
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// ---- part 4: lease ----

func (b *bench) leasePart(ctx context.Context) error {
	srv, err := b.mainExporter()
	if err != nil {
		return err
	}
	local, rem, err := b.leases(ctx, srv.url)
	if err = errors.Join(err, srv.stop()); err != nil {
		return err
	}
	fmt.Fprintf(b.out, "\n== 4. lease round trip: remote driver Open+Close vs local lease.Acquire+Release (%d runs each, interleaved) ==\n", b.leaseCount)
	tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "measure\tlocal\tremote\tremote/local\t")
	fmt.Fprintf(tw, "median ms\t%.3f\t%.3f\t%.2fx\t\n", ms(medianDur(local)), ms(medianDur(rem)), ms(medianDur(rem))/ms(medianDur(local)))
	fmt.Fprintf(tw, "p90 ms\t%.3f\t%.3f\t%.2fx\t\n", ms(p90(local)), ms(p90(rem)), ms(p90(rem))/ms(p90(local)))
	tw.Flush()
	fmt.Fprintln(b.out, "(remote: the exporter's lease.TryAcquire on its host lock, the session attached, the lease released; local: the same lease package on the same lock directory)")
	return nil
}

// leases times lease round trips of the console device, local and through
// the exporter at url by turns, so that the machine's load drifts over
// both alike.
func (b *bench) leases(ctx context.Context, url string) (local, rem []time.Duration, err error) {
	ctx, cancel := b.stepCtx(ctx)
	defer cancel()
	drv := b.client(url)
	infos, err := drv.Discover(ctx)
	if err != nil {
		return nil, nil, err
	}
	i := slices.IndexFunc(infos, func(in driver.Info) bool { return in.Name == consoleDev })
	if i < 0 {
		return nil, nil, fmt.Errorf("the exporter lists no %s", consoleDev)
	}
	req := lease.Request{Drivers: []driver.Driver{simDriver(b.simDir, 4, b.size)}, Name: consoleDev, Dir: b.lockDir}
	remoteOnce := func() error {
		start := time.Now()
		dev, err := drv.Open(ctx, infos[i])
		if err != nil {
			return fmt.Errorf("remote: %w", err)
		}
		if err := dev.(driver.Closer).Close(); err != nil {
			return fmt.Errorf("remote: %w", err)
		}
		rem = append(rem, time.Since(start))
		return nil
	}
	localOnce := func() error {
		start := time.Now()
		l, err := lease.Acquire(ctx, req, holder)
		if err != nil {
			return fmt.Errorf("local: %w", err)
		}
		if err := l.Release(); err != nil {
			return fmt.Errorf("local: %w", err)
		}
		local = append(local, time.Since(start))
		return nil
	}
	for k := range b.leaseCount {
		first, second := localOnce, remoteOnce
		if k%2 == 1 {
			first, second = second, first
		}
		if err := first(); err != nil {
			return nil, nil, err
		}
		if err := second(); err != nil {
			return nil, nil, err
		}
	}
	return local, rem, nil
}

// ---- part 5: the exporter's memory ----

func (b *bench) memoryPart(ctx context.Context, img benchImage) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := b.fresh("child")
	if err != nil {
		return err
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, b.certPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, b.keyPEM, 0o600); err != nil {
		return err
	}
	octx, cancel := b.stepCtx(ctx)
	defer cancel()
	cmd := exec.CommandContext(octx, self, "-exporter", "-sims", b.simDir, "-locks", b.lockDir, "-cache", filepath.Join(dir, "cache"),
		"-disk-size", strconv.FormatInt(b.size, 10), "-cert", certFile, "-key", keyFile)
	cmd.Stderr = b.log
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	stopChild := func() error {
		stdin.Close() // the child shuts down when its stdin closes
		return cmd.Wait()
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		return errors.Join(fmt.Errorf("the exporter child printed %q: %v", line, err), stopChild())
	}
	fig, err := b.memoryLoad(octx, url, pid, img)
	if serr := stopChild(); err == nil && serr != nil {
		err = fmt.Errorf("the exporter child: %w", serr)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(b.out, "\n== 5. exporter process memory (dut-serve-like child, 4 sim devices, 4 leases held by 4 clients) ==\n")
	tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "moment\tVmRSS MiB\tVmHWM MiB\t")
	for _, f := range fig {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t\n", f.moment, float64(f.rss)/1024, float64(f.hwm)/1024)
	}
	tw.Flush()
	return nil
}

type memFigure struct {
	moment   string
	rss, hwm int64 // KiB
}

// memoryLoad holds 4 leases on the child exporter at url (3 devices booted
// and logged in), flashes img on the fourth and reads the child's memory.
func (b *bench) memoryLoad(ctx context.Context, url string, pid int, img benchImage) ([]memFigure, error) {
	var figs []memFigure
	snap := func(moment string) error {
		rss, hwm, err := procMem(pid)
		if err == nil {
			figs = append(figs, memFigure{moment, rss, hwm})
		}
		return err
	}
	if err := snap("idle, no lease"); err != nil {
		return nil, err
	}
	var sessions []*harness.Session
	defer func() {
		for _, s := range sessions {
			closeSession(ctx, s)
		}
	}()
	for i := range 4 {
		// Each its own client, as 4 test processes would be.
		sess, err := harness.Open(ctx, harness.Config{Drivers: []driver.Driver{b.client(url)}, Name: fmt.Sprintf("sim-%d", i), LockDir: b.lockDir}, holder, nil)
		if err != nil {
			return nil, err
		}
		sessions = append(sessions, sess)
		if i == 0 {
			continue
		}
		if err := sess.PowerOn(ctx); err != nil {
			return nil, err
		}
		if _, err := sess.Login(ctx); err != nil {
			return nil, err
		}
		if _, err := sess.Run(ctx, "true"); err != nil {
			return nil, err
		}
	}
	if err := snap("4 leases, 3 shells"); err != nil {
		return nil, err
	}
	hc, err := b.fresh("hash-mem")
	if err != nil {
		return nil, err
	}
	b.logf("memory: first flash of %s through the exporter child", img.name)
	b.drop()
	var peakRSS int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if rss, _, err := procMem(pid); err == nil {
					peakRSS = max(peakRSS, rss)
				}
			}
		}
	})
	start := time.Now()
	_, sent, err := sessions[0].Device().(*remote.Device).Flash(ctx, img.path, flash.Options{HashCacheDir: hc})
	close(done)
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("flash: %w", err)
	}
	b.logf("memory: flash took %.2fs, sent %.0f MiB", time.Since(start).Seconds(), float64(sent.ImageBytes)/(1<<20))
	if err := snap(fmt.Sprintf("after the %s first flash", img.name)); err != nil {
		return nil, err
	}
	figs[len(figs)-1].moment += fmt.Sprintf(" (peak VmRSS sampled during it: %.1f MiB)", float64(peakRSS)/1024)
	return figs, nil
}

// procMem reads VmRSS and VmHWM (KiB) of process pid.
func procMem(pid int) (rss, hwm int64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	if hwm == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status has no VmHWM", pid)
	}
	return rss, hwm, nil
}

// exporterChild is the -exporter mode: an exporter of 4 sim devices over
// TLS on a loopback port, printed as "listening URL", served until stdin
// closes.
func exporterChild(args []string) int {
	fs := flag.NewFlagSet("exporter", flag.ContinueOnError)
	sims := fs.String("sims", "", "the sim disks' directory")
	locks := fs.String("locks", "", "the lock directory")
	cache := fs.String("cache", "", "the image cache directory")
	diskSize := fs.Int64("disk-size", 64<<20, "the size of a disk made")
	certFile := fs.String("cert", "", "the server certificate (PEM)")
	keyFile := fs.String("key", "", "the server key (PEM)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "remotebench -exporter:", err)
		return 1
	}
	srv, err := startExporter(*sims, *locks, *cache, 4, *diskSize, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		fmt.Fprintln(os.Stderr, "remotebench -exporter:", err)
		return 1
	}
	fmt.Printf("listening %s\n", srv.url)
	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := srv.stop(); err != nil {
		fmt.Fprintln(os.Stderr, "remotebench -exporter:", err)
		return 1
	}
	return 0
}
