package harness_test

import (
	"compress/gzip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/console"
	"github.com/jumpstarter-dev/jumpstarter-go/internal/faketb"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
)

// TestHardwareResultsAreNeverCached runs a test that acquires a DUT twice
// with the real go command and the same flags: the second run must run it
// again, not print "(cached)". The control, the same test without a DUT,
// is cached, so the check can fail.
func TestHardwareResultsAreNeverCached(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a test binary with the go command")
	}
	_, here, _, _ := runtime.Caller(0)
	pkg := filepath.Join(filepath.Dir(here), "internal", "cacheprobe")
	gocmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	run := func(mode string) string {
		cmd := exec.Command(gocmd, "test", "-run", "^TestProbe$", ".")
		cmd.Dir = pkg
		cmd.Env = append(cleanEnv(), "JUMPSTARTER_CACHE_PROBE="+mode,
			"DUT_SIM_DIR="+filepath.Join(os.TempDir(), "jumpstarter-cacheprobe-sim"),
			"DUT_LOCK_DIR="+filepath.Join(os.TempDir(), "jumpstarter-cacheprobe-locks"))
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		return string(out)
	}
	run("plain")
	assert.Contains(t, run("plain"), "(cached)", "control: a test that touches no DUT is cached")
	first := run("acquire")
	assert.NotContains(t, first, "(cached)")
	second := run("acquire")
	assert.NotContains(t, second, "(cached)", "a hardware result must come from the hardware")
}

// cleanEnv is the environment without DUT_* variables and GOFLAGS.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "DUT_") || k == "GOFLAGS" || k == helperRole {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// TestIDERunReadsDutEnv is a test started from an IDE's run button: no DUT_*
// variable exported, a dut.env above the test's folder. It must run on the
// DUT the file names, with relative paths taken from the file's folder, and
// the environment must still win over the file.
func TestIDERunReadsDutEnv(t *testing.T) {
	im := buildImages(t)
	root := t.TempDir()
	pkg := filepath.Join(root, "mytests", "boot")
	require.NoError(t, os.MkdirAll(pkg, 0o755))
	require.NoError(t, os.Link(im.a, filepath.Join(root, "os.img")))
	require.NoError(t, os.WriteFile(filepath.Join(root, harness.EnvFileName), []byte(`# the lab's settings
DUT_DRIVER=sim
export DUT_NAME="sim-1"
DUT_IMAGE=./os.img   # beside this file
DUT_SIM_DIR=`+t.TempDir()+`
DUT_LOCK_DIR='`+t.TempDir()+`'
DUT_SIM_BOOT_TIME=50ms
`), 0o644))
	for _, c := range []struct {
		name  string
		env   []string
		wants []string
	}{
		{"file only", nil, []string{"ENVFILE name=sim-1 image=" + filepath.Join(root, "os.img") + " release=1.0.0-A"}},
		{"environment wins", []string{"DUT_NAME=sim-0"}, []string{"ENVFILE name=sim-0 "}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
			cmd.Dir = pkg
			cmd.Env = append(append(cleanEnv(), helperRole+"=envfile", "TMPDIR="+t.TempDir()), c.env...)
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s", out)
			for _, w := range c.wants {
				assert.Contains(t, string(out), w)
			}
			assert.Contains(t, string(out), "configuration from "+filepath.Join(root, harness.EnvFileName))
		})
	}

	bad := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(bad, harness.EnvFileName), []byte("DUT_DRIVER=sim\nthis is not a setting\n"), 0o644))
	_, err := harness.LoadEnvFile(bad)
	require.ErrorIs(t, err, harness.ErrBadConfig)
	assert.Contains(t, err.Error(), harness.EnvFileName+":2:")
}

// TestAFailedTestKeepsItsConsole: without go test -artifacts the artifact
// folder dies with the test, so a failed test keeps its console log
// elsewhere, says where, and shows its tail in the test log.
func TestAFailedTestKeepsItsConsole(t *testing.T) {
	simEnv(t)
	t.Setenv("DUT_IMAGE", buildImages(t).a)
	f := faketb.New(t)
	f.Run(func(tb testing.TB) {
		dut := harness.Acquire(tb)
		dut.Flash()
		dut.PowerOn()
		dut.Login().Run("echo evidence-of-the-failure")
		tb.Errorf("an ordinary assertion failed")
	})
	require.True(t, f.Failed())
	kept, ok := f.AttrValue(harness.AttrConsoleLog)
	require.True(t, ok)
	assert.NotContains(t, kept, f.Dir, "the kept log is not in the folder that goes away")
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(kept)) })
	log, err := os.ReadFile(kept)
	require.NoError(t, err)
	assert.Contains(t, string(log), "evidence-of-the-failure")
	assert.Contains(t, f.Logs(), "the console log of this failed test is "+kept)
	assert.Contains(t, f.Logs(), "| evidence-of-the-failure", "the tail is shown")

	// A passing test keeps nothing and points into its artifact folder.
	g := faketb.New(t)
	g.Run(func(tb testing.TB) { harness.Acquire(tb) })
	require.False(t, g.Failed(), g.Message())
	log2, _ := g.AttrValue(harness.AttrConsoleLog)
	assert.Equal(t, filepath.Join(g.Dir, harness.ConsoleLogFile), log2)
}

// TestUserMistakesAreConfigurationFailures: the user's mistakes are marked
// dut.failure=configuration, the lab's infrastructure.
func TestUserMistakesAreConfigurationFailures(t *testing.T) {
	im := buildImages(t)
	corrupt := filepath.Join(t.TempDir(), "corrupt.img.gz")
	writeCorruptGzip(t, corrupt)
	cases := []struct {
		name  string
		env   map[string]string
		body  func(*harness.DUT)
		kind  string
		wants string
	}{
		{"flash without DUT_IMAGE", map[string]string{"DUT_IMAGE": ""}, func(d *harness.DUT) { d.Flash() }, harness.FailureConfiguration, "set DUT_IMAGE"},
		{"a name matching nothing", map[string]string{"DUT_NAME": "sim-7"}, nil, harness.FailureConfiguration, "found sim-0"},
		{"tags matching nothing", map[string]string{"DUT_TAGS": "arm64"}, nil, harness.FailureConfiguration, "check DUT_NAME and DUT_TAGS"},
		{"a malformed driver variable", map[string]string{"DUT_SIM_DEVICES": "abc"}, nil, harness.FailureConfiguration, `DUT_SIM_DEVICES="abc"`},
		{"a missing image in FlashImage", nil, func(d *harness.DUT) { d.FlashImage("/nonexistent/os.img") }, harness.FailureConfiguration, "/nonexistent/os.img"},
		{"a corrupt image in FlashImage", nil, func(d *harness.DUT) { d.FlashImage(corrupt) }, harness.FailureConfiguration, "corrupt.img.gz"},
		{"a corrupt image in DUT_IMAGE", map[string]string{"DUT_IMAGE": corrupt}, func(d *harness.DUT) { d.Flash() }, harness.FailureConfiguration, "corrupt.img.gz"},
		{"no device at all", map[string]string{"DUT_SIM_DEVICES": "0"}, nil, harness.FailureInfrastructure, "no devices at all"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			simEnv(t)
			t.Setenv("DUT_IMAGE", im.a)
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			f := faketb.New(t)
			f.Run(func(tb testing.TB) {
				d := harness.Acquire(tb)
				if c.body != nil {
					c.body(d)
				}
			})
			require.True(t, f.Failed())
			kind, _ := f.AttrValue(harness.AttrFailure)
			assert.Equal(t, c.kind, kind, f.Message())
			assert.Contains(t, f.Message(), c.wants)
		})
	}
}

// writeCorruptGzip writes a gzip stream that breaks off in the middle.
func writeCorruptGzip(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	require.NoError(t, err)
	zw := gzip.NewWriter(f)
	_, err = zw.Write([]byte(strings.Repeat("some disk image bytes ", 1<<16)))
	require.NoError(t, err)
	require.NoError(t, zw.Flush())
	require.NoError(t, f.Close()) // no gzip trailer, and cut:
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(path, st.Size()/2))
}

// TestWaitsThatCannotEndWellEndEarly: a shell that was never logged in, an
// expect on a DUT the harness powered off, and an expect with its own
// timeout end at once or at their own time, not after DUT_COMMAND_TIMEOUT;
// and a timeout names the setting that bounded it.
func TestWaitsThatCannotEndWellEndEarly(t *testing.T) {
	cases := []struct {
		name  string
		body  func(*harness.DUT)
		wants []string
	}{
		{"shell before login", func(d *harness.DUT) { d.PowerOn(); d.Shell().Run("true") }, []string{"call dut.Login()"}},
		{"expect after power off", func(d *harness.DUT) { d.PowerOn(); d.PowerOff(); d.Console().ExpectString("never") }, []string{"powered off", "dut.PowerOn"}},
		{"expect within", func(d *harness.DUT) {
			d.PowerOn()
			d.Login()
			d.Console().Within(300 * time.Millisecond).ExpectString("never")
		}, []string{"Console.Within"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			simEnv(t)
			t.Setenv("DUT_IMAGE", buildImages(t).a)
			t.Setenv("DUT_COMMAND_TIMEOUT", "10m")
			f := faketb.New(t)
			start := time.Now()
			f.Run(func(tb testing.TB) {
				d := harness.Acquire(tb)
				d.Flash()
				c.body(d)
			})
			require.True(t, f.Failed())
			assert.Less(t, time.Since(start), 10*time.Second, "not the 10-minute command timeout")
			for _, w := range c.wants {
				assert.Contains(t, f.Message(), w)
			}
		})
	}
	t.Run("the timeout names its setting", func(t *testing.T) {
		simEnv(t)
		t.Setenv("DUT_IMAGE", buildImages(t).a)
		t.Setenv("DUT_COMMAND_TIMEOUT", "300ms")
		f := faketb.New(t)
		f.Run(func(tb testing.TB) {
			d := harness.Acquire(tb)
			d.Flash()
			d.PowerOn()
			d.Login().Run("sleep 5")
		})
		require.True(t, f.Failed())
		assert.Contains(t, f.Message(), "DUT_COMMAND_TIMEOUT=300ms bounds one command")
	})
}

// TestLogLinesPointAtTheTest: the harness's step lines carry the test's
// line, not the harness's.
func TestLogLinesPointAtTheTest(t *testing.T) {
	simEnv(t)
	f := faketb.New(t)
	f.Run(func(tb testing.TB) {
		d := harness.Acquire(tb)
		d.PowerOn() // this line
	})
	require.False(t, f.Failed(), f.Message())
	var powerOn string
	for _, l := range strings.Split(f.Logs(), "\n") {
		if strings.Contains(l, "sim-0: power on (") || strings.Contains(l, "sim-1: power on (") {
			powerOn = l
		}
	}
	assert.Regexp(t, `^newuser_test\.go:\d+: ← sim-\d: power on`, powerOn)
	assert.NotContains(t, f.Logs(), "session.go:")
}

// TestADUTThatCouldNotBePoweredOffIsNotHandedOnAsOff: when cleanup cannot
// power the DUT off, the DUT is marked, and its next user is told and powers
// it off before anything else.
func TestADUTThatCouldNotBePoweredOffIsNotHandedOnAsOff(t *testing.T) {
	simEnv(t)
	t.Setenv("DUT_NAME", "sim-0")
	f := faketb.New(t)
	f.Run(func(tb testing.TB) {
		d := harness.Acquire(tb)
		d.PowerOn()
		d.Device().(*sim.Device).Unplug() // power off will fail
	})
	require.True(t, f.Failed())
	assert.Contains(t, f.Message(), "marked as not powered off")
	marks, _ := filepath.Glob(filepath.Join(os.Getenv("DUT_LOCK_DIR"), "*.unclean"))
	require.Len(t, marks, 1)

	g := faketb.New(t)
	g.Run(func(tb testing.TB) { harness.Acquire(tb) })
	require.False(t, g.Failed(), g.Message())
	assert.Contains(t, g.Logs(), "could not power it off at cleanup")
	assert.Contains(t, g.Logs(), "powering it off first")
	marks, _ = filepath.Glob(filepath.Join(os.Getenv("DUT_LOCK_DIR"), "*.unclean"))
	assert.Empty(t, marks, "powered off now: the mark is gone")
}

// TestACommandTooLongForTheShellFailsAtOnce: the sim's shell is busybox-like
// (1024 bytes a line by default); a longer command fails at once naming the
// limit and its setting, and the next command still runs.
func TestACommandTooLongForTheShellFailsAtOnce(t *testing.T) {
	simEnv(t)
	t.Setenv("DUT_IMAGE", buildImages(t).a)
	f := faketb.New(t)
	var next string
	start := time.Now()
	f.Run(func(tb testing.TB) {
		d := harness.Acquire(tb)
		d.Flash()
		d.PowerOn()
		sh := d.Login()
		_, err := d.Session().Run(tb.Context(), "echo "+strings.Repeat("x", 1100))
		assert.ErrorIs(t, err, console.ErrCommandTooLong)
		next = sh.Run("echo next")
		sh.Run("echo " + strings.Repeat("y", 1100))
	})
	require.True(t, f.Failed())
	assert.Less(t, time.Since(start), 10*time.Second)
	assert.Equal(t, "next\n", next)
	assert.Contains(t, f.Message(), "1024")
	assert.Contains(t, f.Message(), "DUT_CONSOLE_MAX_LINE")
}
