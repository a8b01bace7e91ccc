package dutlink

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

// shellKeys are the config keys of the shell's set-config and get-config.
var shellKeys = []string{"name", "tags", "json", "usb_console", "power_on", "power_off", "power_rescue"}

// shellTransport drives a board through its text shell on the tty.
type shellTransport struct {
	mux *ttyMux
}

func (s *shellTransport) kind() TransportKind { return TransportShell }

func (s *shellTransport) run(ctx context.Context, line, want string, timeout time.Duration) error {
	err := s.mux.shell(ctx, func(c *shellConn) error { return c.expect(ctx, line, want, timeout) })
	if err != nil {
		return fmt.Errorf("shell %q: %w", line, err)
	}
	return nil
}

func (s *shellTransport) query(ctx context.Context, line string) (string, error) {
	var reply string
	err := s.mux.shell(ctx, func(c *shellConn) error {
		var err error
		reply, err = c.cmd(ctx, line, nil, ShellTimeout)
		if err == nil && lastLine(reply) == "unsupported command" {
			err = checkReply(line, reply, "")
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("shell %q: %w", line, err)
	}
	return reply, nil
}

func (s *shellTransport) power(ctx context.Context, a powerAction) error {
	return s.run(ctx, "power "+a.String(), powerReplies[a], ShellPowerTimeout)
}

func (s *shellTransport) storage(ctx context.Context, m driver.StorageMode) error {
	_, word, reply, err := storageValue(m)
	if err != nil {
		return err
	}
	return s.run(ctx, "storage "+word, reply, ShellTimeout)
}

func (s *shellTransport) setPin(ctx context.Context, pin int, l driver.PinLevel) error {
	_, letter, name, err := levelValue(l)
	if err != nil {
		return err
	}
	return s.run(ctx, "set "+pinLetters[pin]+" "+letter, "Set "+pinShellNames[pin]+" to "+name, ShellTimeout)
}

func (s *shellTransport) config(ctx context.Context) (map[string]string, error) {
	reply, err := s.query(ctx, "get-config")
	if err != nil {
		return nil, err
	}
	cfg := map[string]string{}
	for _, l := range strings.Split(strings.ReplaceAll(reply, "\r", ""), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		cfg[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	if _, ok := cfg["name"]; !ok {
		return nil, fmt.Errorf("%w: get-config answered %q, which names no keys", ErrReply, reply)
	}
	return cfg, nil
}

func (s *shellTransport) setConfig(ctx context.Context, key, value string) error {
	known := false
	for _, k := range shellKeys {
		known = known || k == key
	}
	if !known {
		return fmt.Errorf("%w: unknown key %q", ErrBadConfig, key)
	}
	if strings.ContainsAny(value, " \t\r\n") {
		return fmt.Errorf("%w: %s=%q holds white space, which the shell cannot carry", ErrBadConfig, key, value)
	}
	line := "set-config " + key
	if value != "" {
		line += " " + value
	}
	return s.run(ctx, line, "Set "+key+" to "+value, ShellTimeout)
}

func (s *shellTransport) meter(ctx context.Context) (driver.PowerReading, error) {
	reply, err := s.query(ctx, "meter read")
	if err != nil {
		return driver.PowerReading{}, err
	}
	return parseMeterShell(lastLine(reply))
}

func (s *shellTransport) version(ctx context.Context) (string, error) {
	reply, err := s.query(ctx, "version")
	if err != nil {
		return "", err
	}
	return lastLine(reply), nil
}
