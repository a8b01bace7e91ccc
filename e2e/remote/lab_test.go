package remotee2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/remote"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/qemuimage"
)

// dutBin is the dut binary the labs run (built by TestMain).
var dutBin string

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "remote-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		defer os.RemoveAll(dir)
		dutBin = filepath.Join(dir, "dut")
		build := exec.Command("go", "build", "-o", dutBin, "github.com/jumpstarter-dev/jumpstarter-go/cmd/dut")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build dut:", err)
			return 2
		}
		return m.Run()
	}()
	os.Exit(code)
}

// need skips the test (fails it in CI) unless it can make network
// namespaces and boot the QEMU virtual DUT.
func need(t *testing.T) string {
	t.Helper()
	img, err := qemuimage.Path(qemuimage.DUT("1.0.0") + ".zst")
	if err == nil {
		_, err = exec.LookPath("qemu-system-x86_64")
	}
	if err == nil && os.Geteuid() != 0 {
		err = fmt.Errorf("network namespaces need root")
	}
	if err == nil {
		_, err = exec.LookPath("ip")
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("remote e2e: %v (CI runs as root with make qemu-images)", err)
		}
		t.Skipf("remote e2e: %v", err)
	}
	return img
}

// nsCount numbers the labs' namespaces and subnets.
var nsCount atomic.Int32

// lab is an exporter in a network namespace of its own, joined to this
// one by a veth pair, serving one QEMU virtual DUT over TLS with a client
// token: another host, as far as the network goes.
type lab struct {
	t        *testing.T
	ns       string // the exporter's namespace
	hostIf   string // this namespace's end of the veth pair
	url      string
	token    string
	caFile   string
	dir      string
	serveArg []string
	devices  int

	mu  sync.Mutex
	srv *exec.Cmd
	log *strings.Builder
	out chan struct{} // closed when srv exits
}

// newLab makes the namespace, the certificates and the token, and starts
// the exporter with extra dut serve flags.
func newLab(t *testing.T, extra ...string) *lab { return newLabOf(t, 1, extra...) }

// newLabOf is newLab with devices QEMU virtual DUTs.
func newLabOf(t *testing.T, devices int, extra ...string) *lab {
	t.Helper()
	n := nsCount.Add(1)
	l := &lab{t: t, ns: fmt.Sprintf("jsre2e-%d-%d", os.Getpid(), n), hostIf: fmt.Sprintf("jsh%d-%d", os.Getpid()%10000, n), dir: t.TempDir(), devices: devices}
	peerIf := l.hostIf + "p"
	hostIP, expIP := fmt.Sprintf("10.213.%d.1", n), fmt.Sprintf("10.213.%d.2", n)
	run(t, "ip", "netns", "add", l.ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", l.ns).Run() })
	run(t, "ip", "link", "add", l.hostIf, "type", "veth", "peer", "name", peerIf)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", l.hostIf).Run() })
	run(t, "ip", "link", "set", peerIf, "netns", l.ns)
	run(t, "ip", "addr", "add", hostIP+"/30", "dev", l.hostIf)
	run(t, "ip", "link", "set", l.hostIf, "up")
	run(t, "ip", "netns", "exec", l.ns, "ip", "addr", "add", expIP+"/30", "dev", peerIf)
	run(t, "ip", "netns", "exec", l.ns, "ip", "link", "set", peerIf, "up")
	run(t, "ip", "netns", "exec", l.ns, "ip", "link", "set", "lo", "up")

	cert, key := l.certificates(expIP)
	l.token = "e2e-" + randHex(16)
	tokens := filepath.Join(l.dir, "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("e2e "+l.token+"\n"), 0o600))
	l.url = "https://" + expIP + ":7443"
	l.serveArg = append([]string{"serve", "--name", "lab-" + fmt.Sprint(n), "--driver", "qemu",
		"--listen", l.url, "--tls-cert", cert, "--tls-key", key, "--tokens", tokens,
		"--cache-dir", filepath.Join(l.dir, "cache"), "--lock-dir", filepath.Join(l.dir, "locks")}, extra...)
	l.start()
	t.Cleanup(func() { l.stop(syscall.SIGTERM) })
	return l
}

// start starts the exporter and waits until it listens.
func (l *lab) start() {
	t := l.t
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.ns, dutBin}, l.serveArg...)...)
	cmd.Env = append(os.Environ(), "DUT_QEMU_DIR="+l.qemuDir(), fmt.Sprintf("DUT_QEMU_DEVICES=%d", l.devices))
	cmd.Env = filterEnv(cmd.Env, "DUT_DRIVER=", "DUT_EXPORTER")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	log := &strings.Builder{}
	listening := make(chan struct{})
	out := make(chan struct{})
	go func() {
		defer close(out)
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			l.mu.Lock()
			log.WriteString(sc.Text() + "\n")
			l.mu.Unlock()
			if strings.Contains(sc.Text(), "msg=listening") {
				once.Do(func() { close(listening) })
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case <-listening:
	case <-out:
		t.Fatalf("dut serve exited at start:\n%s", l.logText())
	case <-time.After(30 * time.Second):
		t.Fatalf("dut serve did not listen within 30s:\n%s", l.logText())
	}
	l.mu.Lock()
	l.srv, l.log, l.out = cmd, log, out
	l.mu.Unlock()
}

// qemuDir is where the exporter's virtual DUTs keep their disks.
func (l *lab) qemuDir() string { return filepath.Join(l.dir, "qemu") }

// stop signals the exporter and waits for it to exit.
func (l *lab) stop(sig syscall.Signal) {
	l.mu.Lock()
	srv, out := l.srv, l.out
	l.mu.Unlock()
	if srv == nil {
		return
	}
	// ip netns exec execs dut: the process is the exporter itself.
	_ = srv.Process.Signal(sig)
	select {
	case <-out:
	case <-time.After(time.Minute):
		_ = srv.Process.Kill()
		<-out
	}
	l.t.Logf("exporter log:\n%s", l.logText())
}

func (l *lab) logText() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.log == nil {
		return ""
	}
	return l.log.String()
}

// link sets this namespace's end of the veth pair up or down: down, no
// packet passes either way (the TCP connections stay open).
func (l *lab) link(up bool) {
	state := "down"
	if up {
		state = "up"
	}
	run(l.t, "ip", "link", "set", l.hostIf, state)
}

// driver is a remote driver of the lab, over TLS with its token and CA.
func (l *lab) driver() *remote.Driver {
	pool, err := remote.LoadCA(l.caFile)
	require.NoError(l.t, err)
	return remote.New(remote.Options{Exporters: []string{l.url}, Token: l.token, RootCAs: pool})
}

// env is the remote driver's environment for the lab.
func (l *lab) env() []string {
	return []string{"DUT_DRIVER=remote", "DUT_EXPORTER=" + l.url, "DUT_EXPORTER_TOKEN=" + l.token, "DUT_EXPORTER_CA=" + l.caFile}
}

// certificates makes a CA and a server certificate for ip, returning the
// server's certificate and key files (the CA's is l.caFile).
func (l *lab) certificates(ip string) (certFile, keyFile string) {
	t := l.t
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "jumpstarter e2e CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "exporter"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP(ip)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	l.caFile = writePEM(t, filepath.Join(l.dir, "ca.crt"), "CERTIFICATE", caDER)
	return writePEM(t, filepath.Join(l.dir, "server.crt"), "CERTIFICATE", der), writePEM(t, filepath.Join(l.dir, "server.key"), "EC PRIVATE KEY", keyDER)
}

func writePEM(t *testing.T, path, kind string, der []byte) string {
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600))
	return path
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// run runs a command that must succeed.
func run(t *testing.T, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	require.NoError(t, err, "%s %s: %s", name, strings.Join(args, " "), out)
}

// filterEnv drops the variables with any of the prefixes.
func filterEnv(env []string, prefixes ...string) []string {
	var out []string
	for _, kv := range env {
		keep := true
		for _, p := range prefixes {
			if strings.HasPrefix(kv, p) {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}
