package exporter

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

// Listener says where and how an exporter listens.
type Listener struct {
	// Address is unix:///path/to.sock, https://host:port, or (only with
	// Insecure) http://host:port.
	Address string
	// TLS is the server's TLS configuration for https (its certificate,
	// and ClientCAs with ClientAuth for mutual TLS).
	TLS *tls.Config
	// Insecure allows http:// (plain text over TCP). Callers must still
	// authenticate (tokens).
	Insecure bool
}

// Window sizes of HTTP/2 flow control: a stream may have this much in
// flight before the receiver acknowledges it, so that a 25 ms link is not
// window-bound (1 MiB, Go's default, caps such a link near 40 MB/s).
const (
	streamWindow = 16 << 20
	connWindow   = 32 << 20
)

// Listen checks l and opens its socket. A TCP listener needs callers to
// authenticate (tokens, or a client CA in l.TLS) and TLS unless Insecure;
// a unix socket is made with mode 0660 (a stale socket file no process
// serves is replaced).
func (e *Exporter) Listen(l Listener) (net.Listener, error) {
	u, err := url.Parse(l.Address)
	if err != nil {
		return nil, fmt.Errorf("%w: listen address %q: %w", driver.ErrBadConfig, l.Address, err)
	}
	mtls := l.TLS != nil && l.TLS.ClientCAs != nil && l.TLS.ClientAuth >= tls.VerifyClientCertIfGiven
	switch u.Scheme {
	case "unix":
		return listenUnix(u.Path)
	case "https", "http":
		if u.Scheme == "https" && (l.TLS == nil || (len(l.TLS.Certificates) == 0 && l.TLS.GetCertificate == nil)) {
			return nil, fmt.Errorf("%w: listen address %s needs a server certificate and key (--tls-cert, --tls-key)", driver.ErrBadConfig, l.Address)
		}
		if u.Scheme == "http" && !l.Insecure {
			return nil, fmt.Errorf("%w: listen address %s is plain text over TCP: use https:// with a certificate, or say --insecure to allow it", driver.ErrBadConfig, l.Address)
		}
		if len(e.cfg.Tokens) == 0 && !mtls {
			return nil, fmt.Errorf("%w: listen address %s is a TCP port, and exporter %s has no way to authenticate its callers: give client tokens (--tokens) or a client CA (--client-ca)", driver.ErrBadConfig, l.Address, e.cfg.Name)
		}
		ln, err := net.Listen("tcp", u.Host)
		if err != nil {
			return nil, fmt.Errorf("%w: listen on %s: %w", driver.ErrBadConfig, l.Address, err)
		}
		return ln, nil
	}
	return nil, fmt.Errorf("%w: listen address %q: the scheme must be unix://, https:// or (with --insecure) http://", driver.ErrBadConfig, l.Address)
}

// listenUnix listens on a unix socket at path, replacing a stale socket.
func listenUnix(path string) (net.Listener, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: a unix:// listen address needs a path (unix:///run/jumpstarter/dut.sock)", driver.ErrBadConfig)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("%w: listen on %s: %w", driver.ErrBadConfig, path, err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%w: listen on %s: another exporter serves that socket", driver.ErrBusy, path)
	}
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
		os.Remove(path) // stale: nothing answers on it
	}
	old := syscall.Umask(0o117)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("%w: listen on %s: %w", driver.ErrBadConfig, path, err)
	}
	return ln, nil
}

// Server returns the HTTP server for a listener made by [Exporter.Listen]
// from l: HTTP/2 over TLS for https, and HTTP/1.1 beside HTTP/2 without
// TLS (h2c) for unix and http, with flow-control windows sized for links
// with latency.
func (e *Exporter) Server(l Listener) *http.Server {
	srv := &http.Server{
		Handler:           e.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerStream:     streamWindow,
			MaxReceiveBufferPerConnection: connWindow,
			// The connection's own keepalive: a peer that stops
			// answering pings is dropped, which ends its sessions.
			SendPingTimeout: e.cfg.KeepaliveInterval,
			PingTimeout:     e.cfg.KeepaliveTimeout - e.cfg.KeepaliveInterval,
		},
		Protocols: new(http.Protocols),
	}
	if l.TLS != nil {
		srv.TLSConfig = l.TLS.Clone()
		srv.Protocols.SetHTTP2(true)
		srv.Protocols.SetHTTP1(true)
	} else {
		srv.Protocols.SetUnencryptedHTTP2(true)
		srv.Protocols.SetHTTP1(true)
	}
	return srv
}

// Serve serves l until ctx ends, then shuts the server down (the leases
// are ended by [Exporter.Shutdown], not here).
func (e *Exporter) Serve(ctx context.Context, l Listener) error {
	ln, err := e.Listen(l)
	if err != nil {
		return err
	}
	return e.ServeOn(ctx, ln, l)
}

// ServeOn serves on a listener already open (made by Listen, or a test's).
func (e *Exporter) ServeOn(ctx context.Context, ln net.Listener, l Listener) error {
	srv := e.Server(l)
	errc := make(chan error, 1)
	go func() {
		if l.TLS != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	e.log.Info("listening", "address", l.Address, "tls", l.TLS != nil)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	srv.Close()
	if u, err := url.Parse(l.Address); err == nil && u.Scheme == "unix" {
		os.Remove(u.Path)
	}
	return nil
}
