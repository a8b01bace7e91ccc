package qemu

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var allEnv = []string{EnvDevices, EnvMemory, EnvBinary, EnvDir, EnvDiskSize, EnvArgs}

// clearEnv unsets the driver's variables for the test.
func clearEnv(t *testing.T) {
	for _, k := range allEnv {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

func TestOptionsFromEnv(t *testing.T) {
	clearEnv(t)
	o, err := optionsFromEnv()
	require.NoError(t, err)
	require.Equal(t, Options{}, o)
	d := o.withDefaults()
	require.Equal(t, Options{Devices: 1, Memory: 128, Binary: "qemu-system-x86_64", Dir: DefaultDir(), DiskSize: 64 << 20}, d)

	t.Setenv(EnvDevices, " 3 ")
	t.Setenv(EnvMemory, "256")
	t.Setenv(EnvBinary, "/opt/qemu/bin/qemu-system-x86_64")
	t.Setenv(EnvDir, "rel/dir")
	t.Setenv(EnvDiskSize, "128MiB")
	t.Setenv(EnvArgs, `-smp 2 -name "my vm" -append 'console=ttyS0 quiet'`)
	o, err = optionsFromEnv()
	require.NoError(t, err)
	wd, _ := os.Getwd()
	require.Equal(t, Options{
		Devices: 3, Memory: 256, Binary: "/opt/qemu/bin/qemu-system-x86_64",
		Dir: filepath.Join(wd, "rel/dir"), DiskSize: 128 << 20,
		Args: []string{"-smp", "2", "-name", "my vm", "-append", "console=ttyS0 quiet"},
	}, o)

	t.Setenv(EnvDevices, "0")
	t.Setenv(EnvMemory, "1G")
	o, err = optionsFromEnv()
	require.NoError(t, err)
	require.Equal(t, -1, o.Devices, "0 devices means none")
	require.Equal(t, 1024, o.Memory)
}

func TestOptionsFromEnvErrors(t *testing.T) {
	for _, tc := range []struct{ key, value, want string }{
		{EnvDevices, "two", "set it to a whole number from 0 to 64"},
		{EnvDevices, "-1", "is not a device count"},
		{EnvDevices, "65", "is not a device count"},
		{EnvMemory, "lots", "set it to a whole number of MiB"},
		{EnvMemory, "8", "from 80 to"},
		{EnvMemory, "1000K", "is not a memory size"},
		{EnvBinary, " ", "is set but empty"},
		{EnvDir, "", "is set but empty"},
		{EnvDiskSize, "big", "is not a size"},
		{EnvDiskSize, "12 parsecs", "unknown unit"},
		{EnvDiskSize, "1K", "set it to at least 1MiB"},
		{EnvArgs, `-name "unterminated`, "unterminated double quote"},
		{EnvArgs, `-name 'x`, "unterminated single quote"},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			clearEnv(t)
			t.Setenv(tc.key, tc.value)
			_, err := optionsFromEnv()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.key)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestRegisteredDriverReadsEnv(t *testing.T) {
	clearEnv(t)
	dr, err := driver.Lookup(DriverName)
	require.NoError(t, err)
	require.Equal(t, "qemu", dr.Name())

	t.Setenv(EnvDevices, "many")
	_, err = dr.Discover(t.Context())
	require.ErrorContains(t, err, EnvDevices)

	t.Setenv(EnvDevices, "2")
	t.Setenv(EnvBinary, "/nonexistent/qemu-system-x86_64")
	_, err = dr.Discover(t.Context())
	require.ErrorIs(t, err, ErrNoBinary)
	require.ErrorContains(t, err, EnvBinary+`="/nonexistent/qemu-system-x86_64"`)
	require.ErrorContains(t, err, "install the Debian package qemu-system-x86")

	exe, err := os.Executable()
	require.NoError(t, err)
	t.Setenv(EnvBinary, exe)
	dir := t.TempDir()
	t.Setenv(EnvDir, dir)
	t.Setenv(EnvDiskSize, "2MiB")
	devs, err := dr.Discover(t.Context())
	require.NoError(t, err)
	require.Len(t, devs, 2)
	for i, info := range devs {
		dev, err := dr.Open(t.Context(), info)
		require.NoError(t, err)
		d := dev.(*Device)
		t.Cleanup(func() { _ = d.Close() })
		assert.Equal(t, []string{"qemu-0", "qemu-1"}[i], d.Name())
		assert.Equal(t, filepath.Join(dir, d.Name()+".disk"), d.DiskPath())
		assert.Equal(t, filepath.Join(dir, d.Name()+".pid"), d.PidFile())
		fi, err := os.Stat(d.DiskPath())
		require.NoError(t, err)
		assert.EqualValues(t, 2<<20, fi.Size())
	}
}

func TestDiscover(t *testing.T) {
	exe, err := os.Executable()
	require.NoError(t, err)
	dir := t.TempDir()
	// An existing disk is never truncated or resized.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "qemu-1.disk"), []byte("image"), 0o644))
	dr := New(Options{Devices: 3, Dir: dir, Binary: exe})
	devs, err := dr.Discover(t.Context())
	require.NoError(t, err)
	require.Len(t, devs, 3)
	for i, dev := range devs {
		assert.Equal(t, "qemu-"+string(rune('0'+i)), dev.Name)
		assert.Equal(t, "qemu", dev.Driver)
		assert.Equal(t, "", dev.Serial)
		assert.Equal(t, []string{"qemu", "virtual", "x86_64"}, dev.Tags)
		assert.Equal(t, driver.CapabilitiesOf(&Device{}), dev.Capabilities)
	}
	fi, err := os.Stat(filepath.Join(dir, "qemu-0.disk"))
	require.NoError(t, err)
	assert.EqualValues(t, DefaultDiskSize, fi.Size())
	st := fi.Sys().(*syscall.Stat_t)
	assert.Less(t, st.Blocks*512, int64(1<<20), "disks are sparse")
	assert.Equal(t, "image", readFile(t, filepath.Join(dir, "qemu-1.disk")))

	first, err := dr.Open(t.Context(), devs[0])
	require.NoError(t, err)
	require.NoError(t, first.(*Device).Close())
	second, err := dr.Open(t.Context(), devs[0])
	require.NoError(t, err)
	assert.NotSame(t, first, second, "every Open gives a fresh device")
	require.NoError(t, second.(*Device).Close())
	_, err = dr.Open(t.Context(), driver.Info{Driver: DriverName, Name: "qemu-3"})
	assert.ErrorIs(t, err, driver.ErrNoDevice)

	none, err := New(Options{Devices: -1, Dir: dir, Binary: exe}).Discover(t.Context())
	require.NoError(t, err)
	assert.Empty(t, none)
	_, err = New(Options{Devices: 1, Dir: dir, Binary: exe, Memory: 4}).Discover(t.Context())
	assert.ErrorContains(t, err, "memory 4 MiB is not between")
	_, err = New(Options{Dir: dir, Binary: exe, Args: []string{"-daemonize"}}).Discover(t.Context())
	assert.ErrorContains(t, err, "-daemonize is not allowed")
}

func TestNewDeviceChecksName(t *testing.T) {
	for _, name := range []string{"", "a b", "a/b", "a,b"} {
		_, err := NewDevice(name, filepath.Join(t.TempDir(), "x.disk"), Options{})
		assert.ErrorContains(t, err, "device name", name)
	}
	d, err := NewDevice("x", filepath.Join(t.TempDir(), "x.img"), Options{})
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(d.PidFile(), "x.img.pid"), d.PidFile())
}

func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"0": 0, "4096": 4096, " 12 ": 12, "1b": 1, "512K": 512 << 10, "64MiB": 64 << 20,
		"64 mib": 64 << 20, "1G": 1 << 30, "2GiB": 2 << 30, "10MB": 10_000_000, "3kb": 3000,
	}
	for s, want := range good {
		got, err := parseSize(s)
		if assert.NoError(t, err, s) {
			assert.Equal(t, want, got, s)
		}
	}
	for _, s := range []string{"", "MiB", "-1", "1.5G", "1 TiB", "99999999999999999999", "9999999999999G"} {
		_, err := parseSize(s)
		assert.Error(t, err, s)
	}
	for s, want := range map[string]int{"128": 128, "128M": 128, "128MiB": 128, "1G": 1024} {
		got, err := parseMiB(s)
		if assert.NoError(t, err, s) {
			assert.Equal(t, want, got, s)
		}
	}
	_, err := parseMiB("1000K")
	assert.ErrorContains(t, err, "not a whole number of MiB")
}

func TestSplitArgs(t *testing.T) {
	for in, want := range map[string][]string{
		"":                              nil,
		"  ":                            nil,
		"-smp 2":                        {"-smp", "2"},
		" -a\t-b\n-c ":                  {"-a", "-b", "-c"},
		`-name "my vm"`:                 {"-name", "my vm"},
		`-name 'my "vm"'`:               {"-name", `my "vm"`},
		`a"b c"d`:                       {"ab cd"},
		`""`:                            {""},
		`''`:                            {""},
		`a\ b`:                          {"a b"},
		`"a\"b\\c\$d\e"`:                {`a"b\c$d\e`},
		`'a\b'`:                         {`a\b`},
		"a\\\nb":                        {"ab"},
		`-drive file=/x,,y,format=raw`:  {"-drive", "file=/x,,y,format=raw"},
		`-append "console=ttyS0 quiet"`: {"-append", "console=ttyS0 quiet"},
	} {
		got, err := splitArgs(in)
		if assert.NoError(t, err, in) {
			assert.Equal(t, want, got, in)
		}
	}
	for _, in := range []string{`"a`, `'a`, `a\`} {
		_, err := splitArgs(in)
		assert.Error(t, err, in)
	}
}

func TestShellQuoteRoundTrip(t *testing.T) {
	args := []string{"/usr/bin/qemu-system-x86_64", "-name", "qemu-0", "-append", "console=ttyS0 quiet",
		"it's", `a"b`, "", "$HOME", "file=/a,,b,format=raw", "back\\slash", "new\nline"}
	q := shellQuote(args)
	assert.Equal(t, `/usr/bin/qemu-system-x86_64 -name qemu-0 -append 'console=ttyS0 quiet' 'it'\''s' 'a"b' '' '$HOME' file=/a,,b,format=raw 'back\slash' 'new`+"\n"+`line'`, q)
	got, err := splitArgs(q)
	require.NoError(t, err)
	assert.Equal(t, args, got)
}

func TestBuildArgs(t *testing.T) {
	c := argsConfig{
		Binary: "/usr/bin/qemu-system-x86_64", Name: "qemu-0", Memory: 128,
		PidFile: "/var/q/qemu-0.pid", QMP: "/tmp/jsq-1/qmp", Console: "/tmp/jsq-1/con",
	}
	want := []string{"/usr/bin/qemu-system-x86_64", "-name", "qemu-0", "-S", "-nodefaults", "-nographic",
		"-accel", "tcg", "-m", "128", "-pidfile", "/var/q/qemu-0.pid",
		"-qmp", "unix:/tmp/jsq-1/qmp,server=on,wait=off",
		"-chardev", "socket,id=ser0,path=/tmp/jsq-1/con,server=on,wait=off",
		"-serial", "chardev:ser0"}
	assert.Equal(t, want, buildArgs(c))

	c.Disk = "/var/q/a,b.disk"
	c.Extra = []string{"-smp", "2"}
	assert.Equal(t, append(slices.Clone(want), "-drive", "file=/var/q/a,,b.disk,format=raw,if=virtio", "-smp", "2"), buildArgs(c))

	c.Extra = []string{"-accel", "kvm"}
	got := buildArgs(c)
	assert.NotContains(t, got, "tcg", "an accelerator in the extra arguments replaces tcg")
	assert.Equal(t, []string{"-accel", "kvm"}, got[len(got)-2:])
	assert.NotContains(t, buildArgs(c), "-no-reboot")

	assert.True(t, ownsArgs(buildArgs(c), "/var/q/qemu-0.pid", "/elsewhere"))
	assert.True(t, ownsArgs(buildArgs(c), "/other.pid", "/var/q/a,b.disk"))
	assert.False(t, ownsArgs(buildArgs(c), "/other.pid", "/var/q/a"))
	assert.Equal(t, "/tmp/jsq-1", staleRunDir(buildArgs(c)))
	assert.Equal(t, "", staleRunDir([]string{"qemu", "-qmp", "unix:/var/run/x/qmp,server=on"}))
}

func TestRuntimeBaseIsShort(t *testing.T) {
	t.Setenv("TMPDIR", "/"+strings.Repeat("long/", 30))
	assert.Equal(t, "/tmp", runtimeBase())
	t.Setenv("TMPDIR", "/var/tmp")
	assert.Equal(t, "/var/tmp", runtimeBase())
}
