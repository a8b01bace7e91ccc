package dutlink

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseGetConfigCut(t *testing.T) {
	whole := "\r\nname: n1\r\ntags: \r\njson: \r\nusb_console: \r\npower_on: p1\r\npower_off: \r\npower_rescue: \r\n#> "
	cfg, cut, err := parseGetConfig(whole)
	require.NoError(t, err)
	assert.Empty(t, cut)
	assert.Equal(t, "p1", cfg["power_on"])
	// A value cut short: its partial line is dropped.
	cfg, cut, err = parseGetConfig("\r\nname: n1\r\ntags: a\r\njson: {\"x\":\"yyy")
	require.NoError(t, err)
	assert.Equal(t, []string{"json", "usb_console", "power_on", "power_off", "power_rescue"}, cut)
	assert.Equal(t, "a", cfg["tags"])
	// Headers with no room, a value's characters appended to the line
	// before, and the closing line end and prompt after it.
	cfg, cut, err = parseGetConfig("\r\nname: n1\r\ntags: \r\njson: \r\nusb_console: \r\npower_on: p1p0,w1\r\n#> ")
	require.NoError(t, err)
	assert.Equal(t, []string{"power_on", "power_off", "power_rescue"}, cut)
	assert.NotContains(t, cfg, "power_on")
	_, _, err = parseGetConfig("garbage")
	assert.ErrorIs(t, err, ErrReply)
}
