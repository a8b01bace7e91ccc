package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/bytesize"
	"github.com/jumpstarter-dev/jumpstarter-go/remote"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/exporter"
	"github.com/jumpstarter-dev/jumpstarter-go/remote/imagecache"
)

// serveConfig is what dut serve is told, by its flags or its config file
// (the flags' names as JSON keys; a flag given wins).
type serveConfig struct {
	Name             string        `json:"name"`
	Driver           string        `json:"driver"`
	Tags             string        `json:"tags"`
	Listen           []string      `json:"listen"`
	Devices          []string      `json:"devices"`
	TLSCert          string        `json:"tls-cert"`
	TLSKey           string        `json:"tls-key"`
	ClientCA         string        `json:"client-ca"`
	Tokens           string        `json:"tokens"`
	Insecure         bool          `json:"insecure"`
	KeepaliveTimeout time.Duration `json:"-"`
	Keepalive        string        `json:"keepalive-timeout"`
	CacheDir         string        `json:"cache-dir"`
	CacheSize        string        `json:"cache-size"`
	LogFormat        string        `json:"log-format"`
}

func (a *app) serveCmd() *cobra.Command {
	var sc serveConfig
	var configFile string
	cmd := &cobra.Command{
		Use:   "serve [DEV...]",
		Short: "Export this host's devices over the network (the exporter the remote driver uses)",
		Long: `dut serve owns this host's devices (those --driver, --tags and DEV select; all
by default) and serves them to the remote driver (DUT_DRIVER=remote) over
each --listen address: unix:///path (file permissions guard it), https://host:port
(TLS; --tls-cert and --tls-key), or http://host:port only with --insecure.
A TCP listener also needs a way to authenticate its callers: client tokens
(--tokens FILE, one "name token" per line) or a client CA (--client-ca, mutual
TLS).

A client's lease is the host's own (the lock local tests and dut commands
take) and lives while the client's session does: when the client dies, or
its pings stop for --keepalive-timeout, the device is powered off, its
storage switched off and the lease freed. SIGTERM or SIGINT ends every lease
the same way before dut serve exits. Logs are structured (log/slog) on
stderr.`,
		Example: `  dut serve --listen unix:///run/jumpstarter/dut.sock --driver qemu
  dut serve --listen https://0.0.0.0:7443 --tls-cert lab.crt --tls-key lab.key --tokens /etc/jumpstarter/tokens
  dut serve --config /etc/jumpstarter/dut-serve.json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if configFile != "" {
				if err := sc.load(configFile, cmd); err != nil {
					return err
				}
			}
			sc.Devices = append(sc.Devices, args...)
			return a.serve(cmd, sc)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "a JSON file of these flags (their names as keys; a flag given wins)")
	f.StringVar(&sc.Name, "name", "", "the exporter's name in errors, logs and evidence (default the host name)")
	f.StringArrayVar(&sc.Listen, "listen", nil, "where to listen: unix:///path, https://host:port, or http://host:port with --insecure (repeatable)")
	f.StringVar(&sc.TLSCert, "tls-cert", "", "the server certificate (PEM) of the https listeners")
	f.StringVar(&sc.TLSKey, "tls-key", "", "the server certificate's key (PEM)")
	f.StringVar(&sc.ClientCA, "client-ca", "", "a CA (PEM) whose client certificates authenticate callers (mutual TLS)")
	f.StringVar(&sc.Tokens, "tokens", "", `a file of client tokens, one "name token" per line (# comments)`)
	f.BoolVar(&sc.Insecure, "insecure", false, "allow http:// listeners (plain text over TCP); callers still need a token")
	f.DurationVar(&sc.KeepaliveTimeout, "keepalive-timeout", 10*time.Second, "end a session whose client sent no ping for this long (at most 15s is advised)")
	f.StringVar(&sc.CacheDir, "cache-dir", "", "the image cache (default $XDG_CACHE_HOME/jumpstarter-go/exporter-images)")
	f.StringVar(&sc.CacheSize, "cache-size", "20GiB", "the image cache's bound")
	f.StringVar(&sc.LogFormat, "log-format", "text", "text or json")
	return cmd
}

// load reads a config file into sc, for the flags not given.
func (sc *serveConfig) load(path string, cmd *cobra.Command) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return usageError{err: fmt.Errorf("--config: %w", err)}
	}
	var file serveConfig
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&file); err != nil {
		return usageError{err: fmt.Errorf("--config %s: %w", path, err)}
	}
	set := func(flag string, dst *string, v string) {
		if !cmd.Flags().Changed(flag) && v != "" {
			*dst = v
		}
	}
	set("name", &sc.Name, file.Name)
	set("tls-cert", &sc.TLSCert, file.TLSCert)
	set("tls-key", &sc.TLSKey, file.TLSKey)
	set("client-ca", &sc.ClientCA, file.ClientCA)
	set("tokens", &sc.Tokens, file.Tokens)
	set("cache-dir", &sc.CacheDir, file.CacheDir)
	set("cache-size", &sc.CacheSize, file.CacheSize)
	set("log-format", &sc.LogFormat, file.LogFormat)
	if !cmd.Flags().Changed("listen") {
		sc.Listen = file.Listen
	}
	if !cmd.Flags().Changed("insecure") {
		sc.Insecure = file.Insecure
	}
	if !cmd.Flags().Changed("keepalive-timeout") && file.Keepalive != "" {
		d, err := time.ParseDuration(file.Keepalive)
		if err != nil {
			return usageError{err: fmt.Errorf("--config %s: keepalive-timeout: %w", path, err)}
		}
		sc.KeepaliveTimeout = d
	}
	sc.Devices = append(sc.Devices, file.Devices...)
	sc.Driver, sc.Tags = file.Driver, file.Tags // dut's global --driver and --tags win
	return nil
}

// serve runs the exporter until the command's context ends.
func (a *app) serve(cmd *cobra.Command, sc serveConfig) error {
	if len(sc.Listen) == 0 {
		return cmdLinef("dut serve needs at least one --listen address (unix:///run/jumpstarter/dut.sock, https://0.0.0.0:7443)")
	}
	log, err := newLogger(a, sc.LogFormat)
	if err != nil {
		return err
	}
	cfg, err := a.config(cmd)
	if err != nil {
		return err
	}
	if sc.Driver != "" && !cmd.Flags().Changed("driver") {
		cfg.Driver = sc.Driver
	}
	if sc.Tags != "" && !cmd.Flags().Changed("tags") {
		if cfg.Tags, err = driver.ParseTags(sc.Tags); err != nil {
			return usageError{err: fmt.Errorf("--config: tags: %w", err)}
		}
	}
	if cfg.Driver == remote.DriverName {
		return cmdLinef("dut serve cannot serve the remote driver's devices: serve them on their own host")
	}
	ecfg := exporter.Config{
		Name: sc.Name, Drivers: a.servedDrivers(cfg.Drivers), Driver: cfg.Driver, Names: sc.Devices, Tags: cfg.Tags, LockDir: cfg.LockDir,
		KeepaliveTimeout: sc.KeepaliveTimeout, KeepaliveInterval: min(2*time.Second, sc.KeepaliveTimeout/3), Logger: log,
	}
	if sc.Tokens != "" {
		if ecfg.Tokens, err = readTokens(sc.Tokens); err != nil {
			return err
		}
	}
	if ecfg.Images, err = openCache(sc); err != nil {
		return err
	}
	tlsCfg, err := serverTLS(sc)
	if err != nil {
		return err
	}
	exp, err := exporter.New(ecfg)
	if err != nil {
		return err
	}
	listeners, err := listenAll(exp, sc, tlsCfg)
	if err != nil {
		return err
	}
	return runExporter(cmd.Context(), exp, listeners, log)
}

// servedDrivers are the drivers dut serve may export: every registered one
// but remote.
func (a *app) servedDrivers(given []driver.Driver) []driver.Driver {
	if given == nil {
		for _, name := range driver.Drivers() {
			d, _ := driver.Lookup(name)
			given = append(given, d)
		}
	}
	var out []driver.Driver
	for _, d := range given {
		if d.Name() != remote.DriverName {
			out = append(out, d)
		}
	}
	return out
}

// opened is a --listen address and its socket.
type opened struct {
	l  exporter.Listener
	ln net.Listener
}

// listenAll opens every --listen address before serving any, so that a bad
// one fails the command at once (closing those opened).
func listenAll(exp *exporter.Exporter, sc serveConfig, tlsCfg *tls.Config) ([]opened, error) {
	var out []opened
	for _, addr := range sc.Listen {
		l := exporter.Listener{Address: addr, Insecure: sc.Insecure}
		if strings.HasPrefix(addr, "https://") {
			l.TLS = tlsCfg
		}
		ln, err := exp.Listen(l)
		if err != nil {
			for _, o := range out {
				o.ln.Close()
			}
			return nil, fmt.Errorf("--listen %s: %w", addr, err)
		}
		out = append(out, opened{l, ln})
	}
	return out, nil
}

// runExporter serves every listener until ctx ends, then ends every lease.
func runExporter(ctx context.Context, exp *exporter.Exporter, ls []opened, log *slog.Logger) error {
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errs := make([]error, len(ls))
	for i, o := range ls {
		wg.Go(func() {
			if err := exp.ServeOn(sctx, o.ln, o.l); err != nil {
				errs[i] = fmt.Errorf("serve %s: %w", o.l.Address, err)
				stop()
			}
		})
	}
	<-sctx.Done()
	log.Info("shutting down: ending every lease")
	dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := exp.Shutdown(dctx)
	stop()
	wg.Wait()
	if err := errors.Join(append(errs, err)...); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// newLogger is dut serve's structured log on stderr.
func newLogger(a *app, format string) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if a.verbose {
		opts.Level = slog.LevelDebug
	}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(a.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(a.stderr, opts)), nil
	}
	return nil, cmdLinef("--log-format %q: use text or json", format)
}

// readTokens reads a tokens file: "name token" per line.
func readTokens(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usageError{err: fmt.Errorf("--tokens: %w", err)}
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, usageError{err: fmt.Errorf("--tokens %s is readable by others (mode %s): chmod 600 it", path, st.Mode().Perm())}
	}
	tokens := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, tok, ok := strings.Cut(line, " ")
		tok = strings.TrimSpace(tok)
		if !ok || name == "" || len(tok) < 16 {
			return nil, usageError{err: fmt.Errorf("--tokens %s line %d: want \"name token\" with a token of at least 16 characters", path, n)}
		}
		tokens[tok] = name
	}
	if len(tokens) == 0 {
		return nil, usageError{err: fmt.Errorf("--tokens %s holds no token", path)}
	}
	return tokens, sc.Err()
}

// openCache opens the exporter's image cache.
func openCache(sc serveConfig) (*imagecache.Cache, error) {
	size, err := bytesize.Parse(sc.CacheSize)
	if err != nil {
		return nil, cmdLinef("--cache-size %q: %v", sc.CacheSize, err)
	}
	dir := sc.CacheDir
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return nil, cmdLinef("no --cache-dir and no user cache directory: %v", err)
		}
		dir = filepath.Join(base, "jumpstarter-go", "exporter-images")
	}
	c, err := imagecache.Open(dir, size)
	if err != nil {
		return nil, fmt.Errorf("--cache-dir: %w", err)
	}
	return c, nil
}

// serverTLS loads the https listeners' certificate and the client CA.
func serverTLS(sc serveConfig) (*tls.Config, error) {
	if sc.TLSCert == "" && sc.TLSKey == "" {
		if sc.ClientCA != "" {
			return nil, cmdLinef("--client-ca needs --tls-cert and --tls-key")
		}
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(sc.TLSCert, sc.TLSKey)
	if err != nil {
		return nil, usageError{err: fmt.Errorf("--tls-cert/--tls-key: %w", err)}
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if sc.ClientCA != "" {
		pool, err := remote.LoadCA(sc.ClientCA)
		if err != nil {
			return nil, usageError{err: fmt.Errorf("--client-ca: %w", err)}
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
		if sc.Tokens != "" {
			cfg.ClientAuth = tls.VerifyClientCertIfGiven // a token also serves
		}
	}
	return cfg, nil
}
