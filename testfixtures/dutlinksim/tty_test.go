package dutlinksim_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/dutlinksim"
)

func TestFirmwareVersions(t *testing.T) {
	for _, tc := range []struct {
		version, product, bcd string
		vendor                bool
	}{
		{"0.07", "Jumpstarter", "0007", false},
		{"0.08", "Dutlink", "0008", true},
		{"0.09", "Dutlink", "0009", true},
	} {
		t.Run(tc.version, func(t *testing.T) {
			lab := dutlinksim.NewTestLab(t)
			b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: tc.version})
			dev := b.SysPath()
			assert.Equal(t, tc.product, attr(t, dev, "product"))
			assert.Equal(t, tc.bcd, attr(t, dev, "bcdDevice"))
			assert.Equal(t, "Red Hat Inc.", attr(t, dev, "manufacturer"))
			vendorIfc := filepath.Join(dev, filepath.Base(dev)+":1.3")
			assert.Equal(t, tc.vendor, exists(vendorIfc), "vendor interface 3")
			assert.Equal(t, !tc.vendor, b.AtShell(), "0.07 boots at the shell, later versions in console mode")

			tm := openTerm(t, b.TTY())
			if tc.vendor {
				tm.toShell()
				assert.Equal(t, tc.version+" git-ref: dutlinksim", openCtl(t, lab, b).read(reqRead, 0))
			}
			tm.send("version\r\n")
			assert.Equal(t, "version\r\n"+tc.version+" git-ref: dutlinksim\r\n#> ", tm.until("#> "))
		})
	}
}

// Written back to back, the escape and a command travel in one USB
// packet: the whole packet goes to the DUT, and the shell never sees the
// command.
func TestEscapeAndCommandInOnePacket(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.08"})
	tm := openTerm(t, b.TTY())
	tm.send(escape)
	tm.send("monitor off\r\n")
	require.Eventually(t, func() bool { return string(b.DUTInput()) == escape+"monitor off\r\n" }, wait, dutlinksim.BusFrame)
	assert.True(t, b.AtShell())
	tm.send("version\r\n")
	assert.Equal(t, exitReply+"version\r\n0.08 git-ref: dutlinksim\r\n#> ", tm.until("git-ref: dutlinksim\r\n#> "),
		"no Monitor disabled: the command went to the DUT")
}

// A host that waits for the escape's answer gets its command to the shell.
func TestEscapeThenWaitReachesShell(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.09"})
	tm := openTerm(t, b.TTY())
	tm.send(escape)
	assert.Equal(t, exitReply, tm.until(exitReply))
	tm.send("monitor off\r\n")
	assert.Equal(t, "monitor off\r\nMonitor disabled\r\n#> ", tm.until("#> "))
	assert.Equal(t, escape, string(b.DUTInput()), "only the escape reached the DUT")
}

func TestEscapeCountsAcrossPackets(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.08"})
	tm := openTerm(t, b.TTY())
	dutGot := func(s string) func() bool { return func() bool { return string(b.DUTInput()) == s } }

	// Another byte between Ctrl-Bs starts the count again.
	tm.send("\x02\x02\x02\x02x")
	require.Eventually(t, dutGot("\x02\x02\x02\x02x"), wait, dutlinksim.BusFrame)
	tm.send("\x02")
	require.Eventually(t, dutGot("\x02\x02\x02\x02x\x02"), wait, dutlinksim.BusFrame)
	assert.False(t, b.AtShell(), "the count was reset by the x")

	// Consecutive Ctrl-Bs count across packets.
	tm.send("\x02\x02")
	require.Eventually(t, dutGot("\x02\x02\x02\x02x\x02\x02\x02"), wait, dutlinksim.BusFrame)
	assert.False(t, b.AtShell())
	tm.send("\x02\x02")
	assert.Equal(t, exitReply, tm.until(exitReply))
	assert.True(t, b.AtShell())
}

// A packet holds at most 64 bytes: in one write, what follows the escape
// goes to the DUT up to the packet's end, and the rest to the shell.
func TestPacketIs64Bytes(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.08"})
	tm := openTerm(t, b.TTY())
	fill := strings.Repeat("x", dutlinksim.PacketSize-len(escape))
	tm.send(escape + fill + "version\r\n")
	assert.Equal(t, exitReply+"version\r\n0.08 git-ref: dutlinksim\r\n#> ", tm.until("git-ref: dutlinksim\r\n#> "))
	assert.Equal(t, escape+fill, string(b.DUTInput()), "the rest of the escape's packet went to the DUT")

	tm.send("console\r\n")
	tm.until("Entering console mode, type CTRL+B 5 times to exit\r\n")
	tm.send(escape + fill + "yversion\r\n")
	assert.Equal(t, exitReply+"yversion\r\nunsupported command\r\n#> ", tm.until("unsupported command\r\n#> "),
		"the 65th byte starts the next packet, which the shell reads")
}

func TestGetConfigBuffer(t *testing.T) {
	// 80 bytes of keys and separators plus the 3-byte prompt: a json of
	// 429 bytes fills the 512-byte buffer exactly.
	for _, tc := range []struct {
		name           string
		cfg            map[string]string
		prompt         bool
		wantJSONStored int
	}{
		{"fits", map[string]string{"json": strings.Repeat("j", 429)}, true, 429},
		{"prompt cut", map[string]string{"json": strings.Repeat("j", 430)}, false, 430},
		{"full fields", map[string]string{"name": strings.Repeat("n", 64), "tags": strings.Repeat("t", 256), "json": strings.Repeat("j", 512)}, false, 512},
		{"json cut to its field", map[string]string{"json": strings.Repeat("j", 600)}, false, 512},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lab := dutlinksim.NewTestLab(t)
			b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.07", Config: tc.cfg})
			cfg := b.Config()
			require.Len(t, cfg["json"], tc.wantJSONStored, "the flash holds up to 512 bytes of json")
			var full strings.Builder
			for _, k := range []string{"name", "tags", "json", "usb_console", "power_on", "power_off", "power_rescue"} {
				full.WriteString(k + ": " + cfg[k] + "\r\n")
			}
			reply := full.String() + "#> "
			reply = reply[:min(len(reply), 512)]
			assert.Equal(t, tc.prompt, strings.HasSuffix(reply, "#> "))

			tm := openTerm(t, b.TTY())
			tm.send("get-config\r\n")
			tm.send("version\r\n")
			assert.Equal(t, "get-config\r\n"+reply+"version\r\n0.07 git-ref: dutlinksim\r\n#> ", tm.until("git-ref: dutlinksim\r\n#> "))
		})
	}
}

// A second opener of the tty that reads in a loop takes replies meant for
// the first: a pty slave's input queue is shared by all its readers.
func TestSecondReaderStealsReplies(t *testing.T) {
	lab := dutlinksim.NewTestLab(t)
	b := lab.AddBoardT(t, dutlinksim.BoardOptions{Version: "0.07"})
	// The thief opens first: go.bug.st/serial sets TIOCEXCL, which makes
	// later opens fail with EBUSY unless the opener is root.
	thief, err := os.OpenFile(b.TTY(), os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	tm := openTerm(t, b.TTY())
	var mu sync.Mutex
	var stolen []byte
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 256)
		for {
			n, err := thief.Read(buf)
			mu.Lock()
			stolen = append(stolen, buf[:n]...)
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	tm.send("version\r\n")
	want := []byte("version\r\n0.07 git-ref: dutlinksim\r\n#> ")
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return bytes.Equal(stolen, want)
	}, wait, dutlinksim.BusFrame, "the thief read the whole reply")
	require.NoError(t, thief.Close())
	<-done

	tm.send("version\r\n")
	assert.Equal(t, string(want), tm.until("#> "), "the first reply never reached the driver's port")
}
