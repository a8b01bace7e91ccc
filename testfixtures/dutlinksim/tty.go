package dutlinksim

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// BusFrame is how long the simulated host's CDC-ACM driver gathers bytes
// into one USB packet: what the host writes within BusFrame of a packet's
// first byte travels in that packet (up to [PacketSize] bytes), so two
// writes made back to back land in one packet.
const BusFrame = 2 * time.Millisecond

// PacketSize is the size of a full-speed bulk packet, the most the
// firmware reads from the tty at a time.
const PacketSize = 64

// exitConsoleReply is what the firmware prints when five Ctrl-B leave
// console mode.
const exitConsoleReply = "\r\nExiting console mode\r\n#> "

// chunk is what one read of the pty master returned, and when.
type chunk struct {
	p  []byte
	at time.Time
}

// hostReader reads what the host writes to the tty, in pieces of at most
// a packet; it stops when the master is closed.
func (b *Board) hostReader(f *os.File, out chan<- chunk) {
	defer b.wg.Done()
	defer close(out)
	for {
		buf := make([]byte, PacketSize)
		n, err := f.Read(buf)
		if n > 0 {
			select {
			case out <- chunk{buf[:n], time.Now()}:
			case <-b.stop:
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// packetLoop cuts the host's bytes into USB packets as a host controller
// does and hands each to the firmware: a packet leaves a bus frame after
// its first byte arrived, with every byte available by then, up to
// PacketSize; the rest waits for the next packet.
func (b *Board) packetLoop(in <-chan chunk) {
	defer b.wg.Done()
	var q []chunk
	for {
		if len(q) == 0 {
			c, ok := <-in
			if !ok {
				return
			}
			q = append(q, c)
		}
		if !b.sleepUntil(q[0].at.Add(BusFrame)) {
			return
		}
		q, in = gather(q, in)
		var p []byte
		p, q = takePacket(q)
		b.hostPacket(p)
		if in == nil && len(q) == 0 {
			return
		}
	}
}

// sleepUntil waits until t; false when the board went away first.
func (b *Board) sleepUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-b.stop:
		return false
	}
}

// gather adds to q what has arrived, until q holds a packet's worth; it
// returns in, or nil once in is closed (a nil channel is never ready).
func gather(q []chunk, in <-chan chunk) ([]chunk, <-chan chunk) {
	for in != nil && queued(q) < PacketSize {
		select {
		case c, ok := <-in:
			if !ok {
				return q, nil
			}
			q = append(q, c)
		default:
			return q, in
		}
	}
	return q, in
}

func queued(q []chunk) int {
	n := 0
	for _, c := range q {
		n += len(c.p)
	}
	return n
}

// takePacket cuts the first packet (up to PacketSize bytes) off q.
func takePacket(q []chunk) ([]byte, []chunk) {
	var p []byte
	for len(q) > 0 && len(p) < PacketSize {
		n := min(PacketSize-len(p), len(q[0].p))
		p = append(p, q[0].p[:n]...)
		if n == len(q[0].p) {
			q = q[1:]
		} else {
			q[0].p = q[0].p[n:]
		}
	}
	return p, q
}

// hostPacket is one USB packet from the host on the tty. In console mode
// the firmware forwards the whole packet to the DUT; at the shell it
// handles the bytes one at a time, and when a command enters console mode
// the rest of the packet goes to the DUT.
func (b *Board) hostPacket(p []byte) {
	for len(p) > 0 {
		b.lock()
		if b.AtShell() {
			b.shellByte(p[0])
			b.unlock()
			p = p[1:]
			continue
		}
		b.consolePacket(p)
		b.unlock()
		return
	}
}

// consolePacket forwards p to the DUT and counts the Ctrl-B escape in it;
// the bytes after the fifth consecutive Ctrl-B still go to the DUT.
func (b *Board) consolePacket(p []byte) {
	b.mu.Lock()
	exits := 0
	for _, c := range p {
		if c != 0x02 {
			b.ctrlB = 0
			continue
		}
		b.ctrlB++
		if b.ctrlB == 5 {
			b.ctrlB, b.mode, b.monitor, b.line, b.lastCR = 0, modeShell, false, nil, false
			exits++
		}
	}
	b.mu.Unlock()
	if b.uartM == nil {
		for _, c := range p {
			b.dutByte(c)
		}
	}
	for range exits {
		b.emit(exitConsoleReply)
	}
}

// shellByte is a byte from the host at the shell.
func (b *Board) shellByte(c byte) {
	b.mu.Lock()
	lastCR := b.lastCR
	b.lastCR = c == '\r'
	switch {
	case c == '\n' && lastCR:
		b.mu.Unlock()
	case c == '\r' || c == '\n':
		line := string(b.line)
		b.line = nil
		b.mu.Unlock()
		b.emit("\r\n")
		b.command(line)
	case c == 0x7f || c == 0x08:
		if len(b.line) > 0 {
			b.line = b.line[:len(b.line)-1]
			b.mu.Unlock()
			b.emit("\b \b")
			return
		}
		b.mu.Unlock()
	case c == 0x1b || c == '\t':
		b.mu.Unlock() // escape sequences and completion: nothing the driver sends
	default:
		// Like the firmware's line editor (ushell), any other byte, a
		// control byte such as Ctrl-B included, joins the line and is
		// echoed: an escape sent at the shell spoils the next command.
		b.line = append(b.line, c)
		b.mu.Unlock()
		b.emit(string([]byte{c}))
	}
}

func (b *Board) readLoop(f *os.File, handle func(byte)) {
	defer b.wg.Done()
	buf := make([]byte, 256)
	for {
		n, err := f.Read(buf)
		for _, c := range buf[:n] {
			handle(c)
		}
		if err != nil {
			return
		}
	}
}

func (b *Board) writeLoop(f *os.File, q chan []byte) {
	defer b.wg.Done()
	for {
		select {
		case p := <-q:
			if _, err := f.Write(p); err != nil {
				return
			}
		case <-b.stop:
			return
		}
	}
}

// emit queues shell output (echo, replies, prompts) for the tty. The queue
// holds a few thousand writes, the echo of the longest line the driver may
// send included; beyond that output is dropped, as a full USB queue would.
func (b *Board) emit(s string) {
	select {
	case b.out <- []byte(s):
	default:
	}
}

// uart is DUT output: it reaches the host on the separate UART when there
// is one, else on the tty in console mode or at the shell with the monitor
// on; at the shell with the monitor off it is discarded.
func (b *Board) uart(p []byte) {
	if b.uartM != nil {
		select {
		case b.uartOut <- p:
		default:
		}
		return
	}
	b.mu.Lock()
	pass := b.mode == modeConsole || b.monitor
	b.mu.Unlock()
	if pass {
		b.emit(string(p))
	}
}

// dutByte is a byte the DUT receives on its UART.
func (b *Board) dutByte(c byte) {
	b.mu.Lock()
	b.dutInput = append(b.dutInput, c)
	powered := b.power
	var line string
	done := false
	switch {
	case c == '\r' || c == '\n':
		line, done = string(b.dutLine), len(b.dutLine) > 0
		b.dutLine = nil
	case c >= 0x20 && c < 0x7f:
		b.dutLine = append(b.dutLine, c)
	}
	b.mu.Unlock()
	if done && powered {
		b.uart([]byte("echo: " + line + "\r\n"))
	}
}

var powerCmds = map[string]int{"off": 0, "on": 1, "force-off": 2, "force-on": 3, "rescue": 4}
var powerReplies = []string{"Device powered off", "Device powered on", "Device forced off", "Device forced on", "Device powered on to rescue"}
var storageReplies = map[string]string{"host": "storage connected to host", "dut": "storage connected to device under test", "off": "storage disconnected"}
var levelNames = map[string]string{"l": "LOW", "h": "HIGH", "z": "HIGH IMPEDANCE"}

// shellCommands maps a command's first word to its handler; each returns
// the reply, without the prompt.
var shellCommands = map[string]func(b *Board, f []string) string{
	"power":      (*Board).shellPower,
	"storage":    (*Board).shellStorage,
	"set":        (*Board).shellSet,
	"set-config": (*Board).shellSetConfig,
	"monitor":    (*Board).shellMonitor,
	"meter":      (*Board).shellMeter,
	"version":    func(b *Board, f []string) string { return b.versionString() },
}

const unsupported = "unsupported command"

// command runs one shell line and prints the reply and the prompt.
func (b *Board) command(line string) {
	f := strings.Fields(line)
	switch {
	case len(f) == 0:
		b.emit("#> ")
	case f[0] == "get-config":
		b.emit(b.getConfigReply())
	case f[0] == "console":
		b.mu.Lock()
		b.mode = modeConsole
		b.mu.Unlock()
		b.emit("Entering console mode, type CTRL+B 5 times to exit\r\n")
	case shellCommands[f[0]] != nil:
		b.emit(shellCommands[f[0]](b, f) + "\r\n#> ")
	default:
		b.emit(unsupported + "\r\n#> ")
	}
}

func (b *Board) shellPower(f []string) string {
	if len(f) != 2 {
		return unsupported
	}
	a, ok := powerCmds[f[1]]
	if !ok {
		return unsupported
	}
	b.mu.Lock()
	seq := sequence(a, b.cfg)
	b.mu.Unlock()
	b.runSequence(seq)
	return powerReplies[a]
}

func (b *Board) shellStorage(f []string) string {
	if len(f) != 2 || storageReplies[f[1]] == "" {
		return unsupported
	}
	b.switchStorage(f[1])
	return storageReplies[f[1]]
}

func (b *Board) shellSet(f []string) string {
	if len(f) != 3 {
		return unsupported
	}
	pi := slices.Index(pinLetters, f[1])
	lv := levelNames[f[2]]
	if pi < 0 || lv == "" {
		return unsupported
	}
	b.mu.Lock()
	b.setPinLocked(pi, f[2])
	b.mu.Unlock()
	return "Set " + pinNames[pi] + " to " + lv
}

func (b *Board) shellSetConfig(f []string) string {
	if len(f) < 2 || len(f) > 3 || !slices.Contains(shellKeys, f[1]) {
		return unsupported
	}
	key, v := f[1], ""
	if len(f) == 3 {
		v = truncate(key, f[2])
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cfgFault {
		return "error: flash write failed"
	}
	b.cfg[key] = v
	return "Set " + key + " to " + v
}

func (b *Board) shellMonitor(f []string) string {
	if len(f) != 2 || f[1] != "on" && f[1] != "off" {
		return unsupported
	}
	b.mu.Lock()
	b.monitor = f[1] == "on"
	b.mu.Unlock()
	if f[1] == "on" {
		return "Monitor enabled"
	}
	return "Monitor disabled"
}

func (b *Board) shellMeter(f []string) string {
	if len(f) != 2 || f[1] != "read" {
		return unsupported
	}
	w, v, a := b.meter()
	return fmt.Sprintf("%.2fA %.2fV %.2fW", a, v, w)
}

// getConfigReply is the get-config reply: every key, the json key
// included, as "key: value\r\n", then the prompt, built in one 512-byte
// buffer that drops what does not fit, the prompt included.
func (b *Board) getConfigReply() string {
	b.mu.Lock()
	var s strings.Builder
	for _, k := range shellKeys {
		fmt.Fprintf(&s, "%s: %s\r\n", k, b.cfg[k])
	}
	b.mu.Unlock()
	out := s.String() + "#> "
	if len(out) > shellReplyMax {
		out = out[:shellReplyMax]
	}
	return out
}

func (b *Board) versionString() string {
	return fmt.Sprintf("%d.%02d git-ref: dutlinksim", b.vmaj, b.vmin)
}
