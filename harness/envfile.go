package harness

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// EnvFileName is the file [Acquire] reads its configuration from when the
// environment does not give it: a test started from an IDE's run button
// (which exports no DUT_* variables) finds it in the test's package folder
// or the nearest folder above it.
//
// It holds one VARIABLE=value per line, as a shell would take it:
//
//	# dut.env: run these tests on the simulated DUT
//	DUT_DRIVER=sim
//	DUT_IMAGE=./out/images/sim-1.0.0.img  # ./ and ../ are relative to this file
//	export DUT_BOOT_TIMEOUT="2m"
//
// Blank lines and lines starting with # are ignored; "export " before a
// name is allowed; a value may be quoted with ' or " (and then holds #
// and spaces as they are); an unquoted value ends at " #". A value that
// starts with ./ or ../ is a path relative to the file's folder. Any
// variable may be set (the drivers' DUTLINK_*, DUT_SIM_*, DUT_QEMU_* too).
// The environment wins: a variable already set, even to the empty string,
// is left as it is. The first dut.env found walking up from the test's
// folder is the only one read.
const EnvFileName = "dut.env"

var (
	envFileOnce sync.Once
	envFilePath string
	envFileErr  error
)

// loadEnvFileOnce applies the nearest dut.env to this process's environment,
// once, and returns its path ("" when there is none).
func loadEnvFileOnce() (string, error) {
	envFileOnce.Do(func() {
		wd, err := os.Getwd()
		if err != nil {
			return
		}
		envFilePath, envFileErr = LoadEnvFile(wd)
	})
	return envFilePath, envFileErr
}

// LoadEnvFile finds the nearest [EnvFileName] in dir or above it and sets
// every variable it names that the environment does not have yet. It returns
// the file's path, or "" when there is none. A malformed file is an error
// wrapping [ErrBadConfig] that names the file and line; nothing is set then.
func LoadEnvFile(dir string) (string, error) {
	path, err := findUp(dir, EnvFileName)
	if err != nil || path == "" {
		return "", err
	}
	vars, err := parseEnvFile(path)
	if err != nil {
		return path, err
	}
	for _, kv := range vars {
		if _, set := os.LookupEnv(kv[0]); !set {
			if err := os.Setenv(kv[0], kv[1]); err != nil {
				return path, fmt.Errorf("%w: %s: setting %s: %w", ErrBadConfig, path, kv[0], err)
			}
		}
	}
	return path, nil
}

// findUp returns the path of name in dir or the nearest folder above it.
func findUp(dir, name string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, name)
		st, err := os.Stat(p)
		if err == nil && st.Mode().IsRegular() {
			return p, nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrPermission) {
			return "", fmt.Errorf("%w: looking for %s: %w", ErrBadConfig, p, err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", nil
		}
		dir = parent
	}
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// parseEnvFile reads the VARIABLE=value pairs of a dut.env file, in order.
func parseEnvFile(path string) ([][2]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrBadConfig, path, err)
	}
	var out [][2]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		bad := func(why string) error {
			return fmt.Errorf("%w: %s:%d: %s; want VARIABLE=value, e.g. DUT_DRIVER=sim", ErrBadConfig, path, n, why)
		}
		line = strings.TrimPrefix(line, "export ")
		name, value, ok := strings.Cut(line, "=")
		name = strings.TrimSpace(name)
		if !ok {
			return nil, bad(fmt.Sprintf("%q has no =", line))
		}
		if !envName.MatchString(name) {
			return nil, bad(fmt.Sprintf("%q is not a variable name", name))
		}
		value, err := envValue(strings.TrimSpace(value))
		if err != nil {
			return nil, bad(err.Error())
		}
		if strings.HasPrefix(value, "./") || strings.HasPrefix(value, "../") {
			value = filepath.Join(filepath.Dir(path), value)
		}
		out = append(out, [2]string{name, value})
	}
	return out, sc.Err()
}

// envValue unquotes a value: 'single' and "double" quotes hold it as it is;
// an unquoted value ends at a " #" comment.
func envValue(v string) (string, error) {
	if v != "" && (v[0] == '"' || v[0] == '\'') {
		end := strings.IndexByte(v[1:], v[0])
		if end < 0 {
			return "", fmt.Errorf("the value %s has no closing %c", v, v[0])
		}
		if rest := strings.TrimSpace(v[end+2:]); rest != "" && !strings.HasPrefix(rest, "#") {
			return "", fmt.Errorf("text %q after the quoted value", rest)
		}
		return v[1 : end+1], nil
	}
	if i := strings.Index(v, " #"); i >= 0 {
		v = strings.TrimSpace(v[:i])
	}
	return v, nil
}
