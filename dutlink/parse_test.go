package dutlink

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

func TestParseBCD(t *testing.T) {
	for in, want := range map[string]Version{"0007": {0, 7}, "0008\n": {0, 8}, "0110": {1, 10}, "1299": {12, 99}} {
		v, err := ParseBCD(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, v)
	}
	for _, bad := range []string{"", "zz", "000a", "10000"} {
		_, err := ParseBCD(bad)
		assert.Error(t, err, bad)
	}
	assert.True(t, Version{0, 8}.AtLeast(FirstUSBVersion))
	assert.False(t, Version{0, 7}.AtLeast(FirstUSBVersion))
	assert.True(t, Version{1, 0}.AtLeast(FirstUSBVersion))
	assert.Equal(t, "0.08", Version{0, 8}.String())
}

func TestParseMeter(t *testing.T) {
	r, err := parseMeterUSB("3.00W 5.01V 0.60A\x00\x00")
	require.NoError(t, err)
	assert.Equal(t, driver.PowerReading{Watts: 3, Volts: 5.01, Amps: 0.6}, r)
	r, err = parseMeterShell("0.60A 5.01V 3.00W")
	require.NoError(t, err)
	assert.Equal(t, driver.PowerReading{Watts: 3, Volts: 5.01, Amps: 0.6}, r)
	for _, bad := range []string{"", "3.00W 5.00V", "0.60A 5.00V 3.00W", "xW 5V 1A", "3W 5V 1X"} {
		_, err := parseMeterUSB(bad)
		assert.ErrorIs(t, err, ErrReply, bad)
	}
}

func TestPowerSequenceSyntax(t *testing.T) {
	for _, ok := range []string{"", "p1", "p1,bL,w5,bZ", "p1,bL,w1,bZ,w1,aL,rL,w1,rZ,w1,aZ", "rl,RZ,w10,p0"} {
		assert.NoError(t, ValidatePowerSequence(ok), ok)
	}
	for _, bad := range []string{"p2", "p1,", ",p1", "bX", "e1", "w", "w-1", "p1 bL", "bLL"} {
		assert.ErrorIs(t, ValidatePowerSequence(bad), ErrBadConfig, bad)
	}
}

func TestNormalizeConfig(t *testing.T) {
	v, err := NormalizeConfig("json", `{ "storage_filter" : "SanDisk" }`)
	require.NoError(t, err)
	assert.Equal(t, `{"storage_filter":"SanDisk"}`, v)
	assert.Equal(t, "SanDisk", storageFilterOf(v))
	v, err = NormalizeConfig("tags", " a , b ")
	require.NoError(t, err)
	assert.Equal(t, "a,b", v)
	_, err = NormalizeConfig("name", "é")
	assert.ErrorIs(t, err, ErrBadConfig)
	_, err = NormalizeConfig("json", `{"a": "b c"}`)
	assert.ErrorIs(t, err, ErrBadConfig, "a space inside JSON cannot cross the shell")
}

func TestReplyChecks(t *testing.T) {
	assert.NoError(t, checkReply("power on", "Device powered on", "Device powered on"))
	assert.NoError(t, checkReply("monitor off", "[ 1.0] noise\r\nMonitor disabled", "Monitor disabled"))
	err := checkReply("set-config name x", "unsupported command", "Set name to x")
	assert.True(t, errors.Is(err, errUnsupported) && errors.Is(err, ErrReply))
	assert.Contains(t, err.Error(), "update the DUTlink firmware")
	err = checkReply("power on", "Device powered off", "Device powered on")
	assert.ErrorIs(t, err, ErrReply)
	assert.Contains(t, err.Error(), `answered "Device powered off"`)
}

func TestStorageNeedsTheBoardsOwnHub(t *testing.T) {
	l := storageLocator{sysfs: t.TempDir(), board: Board{Serial: "0000abcd", SysPath: "/sys/devices/pci0000:00/usb1/1-3"}}
	_, err := l.wait(t.Context(), 0)
	require.ErrorIs(t, err, ErrUnprovenDisk)
	assert.Contains(t, err.Error(), "root port")
	assert.Contains(t, err.Error(), EnvStorageFilter)
}
