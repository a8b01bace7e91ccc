package dutlink

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"slices"
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

// power runs a power command. The shell answers once the sequence has run;
// the sequence itself is not known here, so the answer's arrival is given
// as the moment of the switch: never earlier than the real one.
func (s *shellTransport) power(ctx context.Context, a powerAction) (time.Time, error) {
	if err := s.run(ctx, "power "+a.String(), powerReplies[a], ShellPowerTimeout); err != nil {
		return time.Time{}, err
	}
	return time.Now(), nil
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

// config reads the board's config with get-config. The firmware sends that
// reply from one 512-byte buffer and cuts what does not fit, the prompt
// included, so the reply's end cannot be told by the prompt: "version" is
// sent right behind it, and the reply ends where that command's echo
// begins. Keys the cut took are returned as cut.
func (s *shellTransport) config(ctx context.Context) (map[string]string, []string, error) {
	var text string
	err := s.mux.shell(ctx, func(c *shellConn) (err error) {
		text, err = c.getConfig(ctx)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("shell \"get-config\": %w", err)
	}
	return parseGetConfig(text)
}

// getConfigEnd matches the end of get-config's reply (its prompt, when it
// fit) and the echo and answer of the "version" sent behind it.
var getConfigEnd = regexp.MustCompile(`(?s)^(.*?)version\r?\n([^\r\n]*git-ref:[^\r\n]*)\r?\n#> `)

// getConfig returns what get-config printed after its echo.
func (c *shellConn) getConfig(ctx context.Context) (string, error) {
	c.clear()
	if _, err := c.m.write(c.gen, []byte("get-config"+lineEnd("get-config")+"version"+lineEnd("version"))); err != nil {
		return "", err
	}
	echo := []byte("get-config")
	var text string
	got, err := c.await(ctx, ShellTimeout, func(buf []byte) bool {
		i := bytes.Index(buf, echo)
		if i < 0 {
			return false
		}
		m := getConfigEnd.FindSubmatch(buf[i+len(echo):])
		if m == nil {
			return false
		}
		text = string(m[1])
		return true
	})
	if err != nil {
		return "", c.noReply("get-config", ShellTimeout, got, err)
	}
	return text, nil
}

// parseGetConfig parses get-config's reply: "key: value" lines, then the
// prompt. The firmware builds it in a 512-byte buffer: each "\r\nkey: "
// header is written whole or not at all, values a character at a time.
// Every key not seen is returned in cut. When nothing of a next header
// follows the last line, that line was ended by the reply's closing line
// end, and its value may have taken characters of values whose headers had
// no room: it is cut too. The partial line of a value cut short is dropped.
func parseGetConfig(text string) (map[string]string, []string, error) {
	text = strings.TrimLeft(text, "\r\n")
	lines := strings.Split(strings.ReplaceAll(text, "\r", ""), "\n")
	rest := lines[len(lines)-1] // the prompt, a line cut short, or nothing
	lines = lines[:len(lines)-1]
	cfg := map[string]string{}
	last := ""
	for _, l := range lines {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		last = strings.TrimSpace(k)
		cfg[last] = strings.TrimSpace(v)
	}
	if _, ok := cfg["name"]; !ok {
		return nil, nil, fmt.Errorf("%w: get-config answered %q, which names no keys", ErrReply, text)
	}
	missing := func(k string) bool { _, ok := cfg[k]; return !ok }
	if slices.ContainsFunc(shellKeys, missing) && (rest == "" || rest == "#> ") {
		delete(cfg, last)
	}
	var cut []string
	for _, k := range shellKeys {
		if missing(k) {
			cut = append(cut, k)
		}
	}
	return cfg, cut, nil
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
