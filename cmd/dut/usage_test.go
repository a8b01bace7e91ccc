package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
	"github.com/jumpstarter-dev/jumpstarter-go/harness/flash"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/sim"
)

// TestUsageErrors: every usage mistake of every subcommand exits 2, names
// what is wrong (the offending word, or the missing argument), and prints
// the command's usage line, before any device is touched.
func TestUsageErrors(t *testing.T) {
	env(t)
	img := writeImage(t, 4096)
	for _, c := range []struct {
		args  []string
		want  []string // in the message
		usage string   // the usage line printed after it; "" for none
	}{
		// The top level.
		{[]string{"frobnicate"}, []string{`unknown command "frobnicate"`}, ""},
		{[]string{"--timeout", "0s", "list"}, []string{"--timeout 0s", "positive duration"}, "dut list [flags]"},
		{[]string{"--timeout", "soon", "list"}, []string{`"soon"`, "--timeout"}, "dut list [flags]"},
		{[]string{"--lock-dir", "", "list"}, []string{"--lock-dir is empty"}, "dut list [flags]"},

		// list
		{[]string{"list", "sim-0"}, []string{`unexpected argument "sim-0"`, "takes no arguments"}, "dut list [flags]"},
		{[]string{"list", "--jsn"}, []string{"unknown flag: --jsn"}, "dut list [flags]"},

		// power
		{[]string{"power"}, []string{"missing ACTION", "on, off, force-on, force-off, rescue or cycle"}, "dut power ACTION DEV [flags]"},
		{[]string{"power", "banana", "sim-0"}, []string{`unknown power action "banana"`, "use on, off, force-on, force-off, rescue or cycle"}, "dut power ACTION DEV [flags]"},
		{[]string{"power", "onn", "sim-0"}, []string{`unknown power action "onn"`, "did you mean on"}, "dut power ACTION DEV [flags]"},
		{[]string{"power", "sim-0", "on"}, []string{"wrong order", "dut power on sim-0"}, "dut power ACTION DEV [flags]"},
		{[]string{"power", "on"}, []string{"dut power on: missing DEV", "dut list"}, "dut power on DEV [flags]"},
		{[]string{"power", "off", "sim-0", "sim-1"}, []string{`unexpected argument "sim-1"`}, "dut power off DEV [flags]"},
		{[]string{"power", "on", ""}, []string{"DEV is empty"}, "dut power on DEV [flags]"},
		{[]string{"power", "on", "sim-0", "--keep-storag"}, []string{"unknown flag: --keep-storag"}, "dut power on DEV [flags]"},
		{[]string{"power", "off", "sim-0", "--keep-storage"}, []string{"unknown flag: --keep-storage"}, "dut power off DEV [flags]"},
		{[]string{"power", "cycle", "sim-0", "--off-time", "-1s"}, []string{"--off-time -1s is negative"}, "dut power cycle DEV [flags]"},
		{[]string{"power", "cycle", "sim-0", "--off-time", "long"}, []string{`"long"`, "--off-time"}, "dut power cycle DEV [flags]"},

		// reset
		{[]string{"reset"}, []string{"dut reset: missing DEV"}, "dut reset DEV [flags]"},
		{[]string{"reset", "sim-0", "now"}, []string{`unexpected argument "now"`, "takes only DEV"}, "dut reset DEV [flags]"},

		// pin
		{[]string{"pin", "sim-0", "a"}, []string{"missing LEVEL", "low, high or z"}, "dut pin DEV PIN LEVEL [flags]"},
		{[]string{"pin", "sim-0"}, []string{"missing PIN", "LEVEL"}, "dut pin DEV PIN LEVEL [flags]"},
		{[]string{"pin", "sim-0", "a", "sideways"}, []string{`unknown pin level "sideways"`, "use low, high or z"}, "dut pin DEV PIN LEVEL [flags]"},
		{[]string{"pin", "sim-0", "low", "a"}, []string{"wrong order", "level (low) comes last"}, "dut pin DEV PIN LEVEL [flags]"},
		{[]string{"pin", "a", "low", "sim-0"}, []string{"wrong order", "level (low) comes last"}, "dut pin DEV PIN LEVEL [flags]"},
		{[]string{"pin", "sim-0", "e", "low"}, []string{`sim-0 has no pin "e"`, "its pins are reset, a, b, c, d"}, "dut pin DEV PIN LEVEL [flags]"},
		{[]string{"pin", "sim-0", "a", "low", "high"}, []string{`unexpected argument "high"`}, "dut pin DEV PIN LEVEL [flags]"},

		// storage
		{[]string{"storage", "sim-0"}, []string{"missing MODE", "off, host or dut"}, "dut storage DEV MODE [flags]"},
		{[]string{"storage", "sim-0", "sideways"}, []string{`unknown storage mode "sideways"`, "use off, host or dut"}, "dut storage DEV MODE [flags]"},
		{[]string{"storage", "host", "sim-0"}, []string{"wrong order", "dut storage sim-0 host"}, "dut storage DEV MODE [flags]"},
		{[]string{"storage", "sim-0", "host", "now"}, []string{`unexpected argument "now"`}, "dut storage DEV MODE [flags]"},

		// flash
		{[]string{"flash"}, []string{"dut flash: missing DEV"}, "dut flash DEV [IMAGE] [flags]"},
		{[]string{"flash", "sim-0"}, []string{"missing IMAGE", "DUT_IMAGE"}, "dut flash DEV [IMAGE] [flags]"},
		{[]string{"flash", img, "sim-0"}, []string{"wrong order", "dut flash sim-0 " + img}, "dut flash DEV [IMAGE] [flags]"},
		{[]string{"flash", "sim-0", img, "extra"}, []string{`unexpected argument "extra"`, "takes only DEV IMAGE"}, "dut flash DEV [IMAGE] [flags]"},
		{[]string{"flash", "sim-0", img, "--bmap", filepath.Join(t.TempDir(), "missing.bmap")}, []string{"--bmap", "missing.bmap"}, "dut flash DEV [IMAGE] [flags]"},
		{[]string{"flash", "sim-0", img, "--bmap", img + ".bmap", "--nobmap"}, []string{"--nobmap and --bmap", "contradict"}, "dut flash DEV [IMAGE] [flags]"},
		{[]string{"flash", "sim-0", filepath.Join(t.TempDir(), "missing.img")}, []string{"bad image", "missing.img does not exist"}, ""},

		// console
		{[]string{"console"}, []string{"dut console: missing DEV"}, "dut console DEV [flags]"},
		{[]string{"console", "sim-0", "sim-1"}, []string{`unexpected argument "sim-1"`}, "dut console DEV [flags]"},

		// config
		{[]string{"config"}, []string{"missing DEV", "get [KEY] or set KEY VALUE"}, "dut config DEV get [KEY] | DEV set KEY VALUE [flags]"},
		{[]string{"config", "sim-0"}, []string{"missing the action after sim-0"}, "dut config DEV get [KEY] | DEV set KEY VALUE [flags]"},
		{[]string{"config", "sim-0", "put", "name", "x"}, []string{`unknown config action "put"`, "use get [KEY] or set KEY VALUE", "did you mean get or set"}, "dut config DEV get [KEY] | DEV set KEY VALUE [flags]"},
		{[]string{"config", "set", "sim-0", "name", "x"}, []string{"wrong order", "dut config sim-0 set name x"}, "dut config DEV get [KEY] | DEV set KEY VALUE [flags]"},
		{[]string{"config", "get", "sim-0"}, []string{"wrong order", "dut config sim-0 get"}, "dut config DEV get [KEY] | DEV set KEY VALUE [flags]"},
		{[]string{"config", "sim-0", "set", "name"}, []string{"missing VALUE"}, "dut config DEV get [KEY] | DEV set KEY VALUE [flags]"},
		{[]string{"config", "sim-0", "set"}, []string{"missing KEY", "VALUE"}, "dut config DEV get [KEY] | DEV set KEY VALUE [flags]"},
		{[]string{"config", "sim-0", "set", "name", "a", "b"}, []string{`unexpected argument "b"`}, "dut config DEV get [KEY] | DEV set KEY VALUE [flags]"},
		{[]string{"config", "sim-0", "get", "name", "tags"}, []string{`unexpected argument "tags"`}, "dut config DEV get [KEY] | DEV set KEY VALUE [flags]"},
		{[]string{"config", "sim-0", "get", "colour"}, []string{`sim-0 has no config key "colour"`, "its keys are name, serial, tags"}, "dut config DEV get [KEY] | DEV set KEY VALUE [flags]"},
		{[]string{"config", "sim-0", "set", "color", "red"}, []string{`unknown key "color"`, "name and tags"}, "dut config DEV get [KEY] | DEV set KEY VALUE [flags]"},
		{[]string{"config", "sim-0", "set", "serial", "X"}, []string{"serial number is read-only"}, ""},

		// meter
		{[]string{"meter"}, []string{"dut meter: missing DEV"}, "dut meter DEV [flags]"},
		{[]string{"meter", "sim-0", "--watch", "-1s"}, []string{"--watch -1s is negative"}, "dut meter DEV [flags]"},
		{[]string{"meter", "sim-0", "--count", "-2"}, []string{"--count -2 is negative"}, "dut meter DEV [flags]"},
		{[]string{"meter", "sim-0", "--wach", "1s"}, []string{"unknown flag: --wach"}, "dut meter DEV [flags]"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			r := dut(t, c.args...)
			assert.Equal(t, exitUsage, r.code)
			msg, rest, _ := strings.Cut(r.stderr, "\n")
			require.True(t, strings.HasPrefix(msg, "dut: "), "the message comes first: %q", r.stderr)
			for _, w := range c.want {
				assert.Contains(t, msg, w)
			}
			if c.usage == "" {
				assert.NotContains(t, rest, "usage:")
			} else {
				assert.True(t, strings.HasPrefix(rest, "usage: "+c.usage+"\n"), "usage line %q after the message in:\n%s", c.usage, r.stderr)
				assert.Contains(t, rest, "--help' for more, with examples")
			}
			assert.Empty(t, r.stdout)
		})
	}
	// No usage mistake touched a device.
	for _, name := range []string{"sim-0", "sim-1"} {
		d := simDevice(t, name)
		assert.Equal(t, sim.PowerStateOff, d.PowerState(), name)
		assert.Equal(t, driver.StorageOff, d.StorageState(), name)
		assert.Equal(t, driver.PinFloating, d.Pin("a"), name)
		assert.Equal(t, name, d.Name())
	}
	r := dut(t, "frobnicate")
	assert.Contains(t, r.stderr, "\nRun 'dut --help' for the commands")
}

func TestPositional(t *testing.T) {
	cmd := (&app{}).rootCmd()
	reset, _, err := cmd.Find([]string{"reset"})
	require.NoError(t, err)
	check := positional([]string{"DEV", "PIN"}, "LEVEL")
	assert.NoError(t, check(reset, []string{"a", "b"}))
	assert.NoError(t, check(reset, []string{"a", "b", "c"}))
	err = check(reset, []string{"a"})
	assert.EqualError(t, err, "dut reset: missing PIN (a control pin such as reset, a or b)")
	assert.True(t, isCommandLineError(err))
	assert.EqualError(t, check(reset, nil), "dut reset: missing DEV (a device's name or serial, as dut list shows them) and PIN")
	assert.EqualError(t, check(reset, []string{"a", "b", "c", "d", "e"}), `dut reset: unexpected argument "d" "e": it takes only DEV PIN LEVEL`)
	assert.EqualError(t, positional(nil)(reset, []string{"x"}), `dut reset: unexpected argument "x": it takes no arguments`)

	assert.Equal(t, "; did you mean on or off?", didYouMean("of", powerActionNames()))
	assert.Equal(t, "; did you mean force-on or force-off?", didYouMean("force", powerActionNames()))
	assert.Equal(t, "", didYouMean("banana", powerActionNames()))
	assert.Equal(t, 3, levenshtein("kitten", "sitting"))
}

// TestEphemeralNotes: every command that changes a sim device says on
// stderr that the change ends with the dut process, and what that means
// for the command; the command's own output is unchanged.
func TestEphemeralNotes(t *testing.T) {
	env(t)
	const why = "dut: note: sim-1 is a simulated device: its power, storage mux, pins, console and config live only in the process that opened it (only its disk file outlives it), so "
	img := writeImage(t, 64<<10)
	for _, c := range []struct {
		args         []string
		code         int
		stdout, then string
	}{
		{[]string{"power", "on", "sim-1"}, exitOK, "sim-1: powered on\n", "it is powered off again when this dut command exits; to see it run, boot and watch it with dut console sim-1 --power-on, or use it from a test (harness.Acquire)"},
		{[]string{"power", "force-on", "sim-1"}, exitOK, "sim-1: forced on\n", "it is powered off again when this dut command exits"},
		{[]string{"power", "rescue", "sim-1"}, exitOK, "sim-1: powered on in rescue mode\n", "it is powered off again when this dut command exits"},
		{[]string{"power", "cycle", "sim-1", "--off-time", "1ms"}, exitOK, "sim-1: power cycled (off for 1ms)\n", "it is powered off again when this dut command exits"},
		{[]string{"power", "off", "sim-1"}, exitOK, "sim-1: powered off\n", "every dut command finds it powered off: it was off already"},
		{[]string{"power", "force-off", "sim-1"}, exitOK, "sim-1: forced off\n", "every dut command finds it powered off"},
		{[]string{"pin", "sim-1", "b", "low"}, exitOK, "sim-1: pin b low\n", "the next dut command finds the pin released again"},
		{[]string{"storage", "sim-1", "dut"}, exitOK, "sim-1: storage dut\n", "the next dut command finds the mux at off again (what is written to the disk file stays)"},
		{[]string{"storage", "sim-1", "host"}, exitOK, "", "the next dut command finds the mux at off again"},
		{[]string{"storage", "sim-1", "off"}, exitOK, "sim-1: storage off\n", "the next dut command finds the mux at off again"},
		{[]string{"config", "sim-1", "set", "tags", "sim,rack2"}, exitOK, "sim-1: tags set to \"sim,rack2\"\n", "the new value is forgotten when this dut command exits: the next one shows the old value"},
		{[]string{"flash", "sim-1", img}, exitOK, "", "the image stays on its disk file, but its power does not outlive a dut command: boot and watch it with dut console sim-1 --power-on, or use it from a test (harness.Acquire)"},
		// A reset cannot work: the note, printed first, says why.
		{[]string{"reset", "sim-1"}, exitFailure, "", "every dut command finds it powered off (what an earlier one powered on ended with it): there is nothing running to reset"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			// As in a fresh dut process: the device starts off.
			require.NoError(t, simDevice(t, "sim-1").Close())
			r := dut(t, c.args...)
			require.Equal(t, c.code, r.code, r.stderr)
			if c.stdout != "" {
				assert.Equal(t, c.stdout, r.stdout)
			}
			assert.Contains(t, r.stderr, why+c.then)
			assert.Equal(t, 1, strings.Count(r.stderr, "dut: note:"), "one note")
			if c.code == exitFailure {
				assert.Less(t, strings.Index(r.stderr, "note:"), strings.Index(r.stderr, "powered off; power it on first"), "the note comes before the failure it explains")
			}
		})
	}

	// Reading commands change nothing: no note.
	for _, args := range [][]string{{"config", "sim-1", "get"}, {"meter", "sim-1"}, {"list"}} {
		r := dut(t, args...)
		require.Equal(t, exitOK, r.code, r.stderr)
		assert.NotContains(t, r.stderr, "note:", args)
	}
	// A usage mistake does not get as far as a note.
	r := dut(t, "config", "sim-1", "set", "colour", "red")
	assert.Equal(t, exitUsage, r.code)
	assert.NotContains(t, r.stderr, "note:")
}

func TestEphemeralConsolePowerOn(t *testing.T) {
	env(t)
	con := start(t, t.Context(), strings.NewReader(""), "console", "sim-0", "--power-on")
	con.stderr.waitFor(t, "dut: note: sim-0 is a simulated device")
	require.Equal(t, exitOK, con.wait(t))
	assert.Contains(t, con.stderr.String(), ", so it is powered off again when this console ends\n")
	assert.Less(t, strings.Index(con.stderr.String(), "note:"), strings.Index(con.stderr.String(), "connected to the console"))

	// Without --power-on the console changes nothing: no note.
	con = start(t, t.Context(), strings.NewReader(""), "console", "sim-0")
	require.Equal(t, exitOK, con.wait(t))
	assert.NotContains(t, con.stderr.String(), "note:")
}

// TestEphemeralFlashHint: the flash report of a sim device does not promise
// that dut power on boots it; a board's still does.
func TestEphemeralFlashHint(t *testing.T) {
	env(t)
	r := dut(t, "flash", "sim-0", writeImage(t, 64<<10))
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.NotContains(t, r.stdout, "dut power on")
	assert.Contains(t, r.stdout, "\nsim-0 is powered off with its storage disconnected; its power ends with each dut command, so boot and watch it with: dut console sim-0 --power-on\n")

	var board strings.Builder
	writeReport(&board, bareDevice{}, flashReportFor(t))
	little := flashReportFor(t)
	little.Bytes, little.MappedBytes, little.MappedFraction = 1<<30, 4096, 4096.0/(1<<30)
	var small strings.Builder
	writeReport(&small, bareDevice{}, little)
	assert.Contains(t, small.String(), "  written  4096 (<1% of the image)\n")
	assert.Contains(t, board.String(), "\nbare-0 is powered off with its storage disconnected; boot it with: dut power on bare-0\n")
	assert.NotContains(t, board.String(), "dut console")
}

// TestEphemeralList: dut list names the ephemeral devices in a note under
// the table, and --json gives each one's reason.
func TestEphemeralList(t *testing.T) {
	lab := env(t)
	lab.AddBoardT(t, dutlinkBoard("1a2b3c4d", "bench-1"))
	r := dut(t, "list")
	require.Equal(t, exitOK, r.code, r.stderr)
	table, note, ok := strings.Cut(r.stdout, "\nNote: ")
	require.True(t, ok, "no note in:\n%s", r.stdout)
	assert.Contains(t, table, "bench-1")
	note, _, _ = strings.Cut(note, "\n\n")
	assert.True(t, strings.HasPrefix(note, "sim-0 and sim-1 live only in the dut process that uses them:"), note)
	assert.NotContains(t, note, "bench-1", "a board keeps its state")
	assert.Contains(t, note, "\ndut console DEV --power-on.", "the command is not broken across lines")
	for i, line := range strings.Split(note, "\n") {
		if i == 0 {
			line = "Note: " + line
		}
		assert.LessOrEqual(t, len(line), 78, line)
	}

	r = dut(t, "list", "--json")
	require.Equal(t, exitOK, r.code, r.stderr)
	var l listing
	require.NoError(t, jsonDecode(r.stdout, &l))
	for _, d := range l.Devices {
		if d.Driver == "sim" {
			assert.Contains(t, d.Ephemeral, d.Name+" is a simulated device", d.Name)
		} else {
			assert.Empty(t, d.Ephemeral, d.Name)
		}
	}

	t.Setenv("DUT_SIM_DEVICES", "5")
	r = dut(t, "--driver", "sim", "list")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "\nNote: the 5 sim devices live only in the dut process")
	t.Setenv("DUT_SIM_DEVICES", "1")
	r = dut(t, "--driver", "sim", "list")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "\nNote: sim-0 lives only in the dut process that uses it: its power")
	assert.Contains(t, r.stdout, "dut console sim-0 --power-on.")
	t.Setenv("DUT_SIM_DEVICES", "0")
	r = dut(t, "--driver", "sim", "list")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.NotContains(t, r.stdout, "Note:")
}

// TestEphemeralQEMU: a QEMU device says so too, in its own words. The
// storage mux needs no QEMU process, so any existing file stands in for
// the binary.
func TestEphemeralQEMU(t *testing.T) {
	env(t)
	fake := filepath.Join(t.TempDir(), "qemu-system-x86_64")
	require.NoError(t, os.WriteFile(fake, []byte("#!/bin/sh\nexit 1\n"), 0o755))
	t.Setenv("DUT_QEMU_BINARY", fake)
	r := dut(t, "storage", "qemu-0", "host")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stderr, "dut: note: qemu-0 is a QEMU virtual machine run by the process that opened it: QEMU is killed when that process exits, and its storage mux and console end with it (only its disk file outlives it), so the next dut command finds the mux at off again")
	r = dut(t, "storage", "qemu-0", "off")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stderr, "dut: note: qemu-0 is a QEMU virtual machine")

	r = dut(t, "--driver", "qemu", "list")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "\nNote: qemu-0 lives only in the dut process that uses it")
}

// flashReportFor is a flash report as a successful write gives it.
func flashReportFor(t *testing.T) flash.Report {
	t.Helper()
	return flash.Report{Image: "os.img", Format: flash.Raw, Target: "/dev/sdz", Bytes: 4096, MappedBytes: 4096, MappedFraction: 1, SHA256: strings.Repeat("0", 64)}
}

// dutlinkBoard is a DUTlink board named name.
func dutlinkBoard(serial, name string) dutlinksim.BoardOptions {
	return dutlinksim.BoardOptions{Serial: serial, Config: map[string]string{"name": name}}
}

func jsonDecode(s string, v any) error { return json.Unmarshal([]byte(s), v) }
