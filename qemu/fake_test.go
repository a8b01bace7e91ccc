package qemu

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The test binary doubles as a fake QEMU: run with the argument fakeFlag it
// behaves like qemu-system-x86_64 as the driver uses it, without a guest.
// Unit tests use it (Options.Binary = the test binary, Options.Args =
// fakeArgs(mode)) to run the driver's power, QMP and console code without
// QEMU installed.
const fakeFlag = "-jsq-fake-qemu"

func TestMain(m *testing.M) {
	for i, a := range os.Args {
		if a == fakeFlag && i+1 < len(os.Args) {
			os.Exit(fakeQEMU(os.Args[1:], os.Args[i+1]))
		}
	}
	// The fake QEMU, when built with -race, would sleep 1 s at exit.
	_ = os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	os.Exit(m.Run())
}

// fakeOptions returns Options that run the fake QEMU in mode:
//
//   - "ok": prints a banner and "fake login: " on the console at cont and at
//     system_reset, echoes console input, and on the input line "poweroff"
//     powers off as a guest does (SHUTDOWN event, exit 0), on "crash" exits
//     with status 3 after printing "fake crash" on stderr;
//   - "fail": prints "fake: bad option" on stderr and exits 1 at once;
//   - "hang": writes its pid into the file named by the next argument and
//     sleeps without creating its sockets.
func fakeOptions(t *testing.T, mode string, extra ...string) Options {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Options{Binary: exe, Args: append([]string{fakeFlag, mode}, extra...)}
}

func fakeQEMU(args []string, mode string) int {
	var qmpPath, conPath, pidfile string
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-qmp":
			qmpPath = strings.TrimPrefix(strings.Split(args[i+1], ",")[0], "unix:")
		case "-chardev":
			for _, kv := range strings.Split(args[i+1], ",") {
				if p, ok := strings.CutPrefix(kv, "path="); ok {
					conPath = p
				}
			}
		case "-pidfile":
			pidfile = args[i+1]
		}
	}
	switch mode {
	case "fail":
		fmt.Fprintln(os.Stderr, "fake: bad option")
		return 1
	case "hang":
		for i, a := range args {
			if a == "hang" && i+1 < len(args) {
				_ = os.WriteFile(args[i+1], []byte(strconv.Itoa(os.Getpid())), 0o644)
			}
		}
		time.Sleep(time.Minute)
		return 0
	}
	if err := os.WriteFile(pidfile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "fake:", err)
		return 1
	}
	defer os.Remove(pidfile)
	conL, err := net.Listen("unix", conPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake:", err)
		return 1
	}
	qmpL, err := net.Listen("unix", qmpPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake:", err)
		return 1
	}
	f := &fake{exit: make(chan int, 1)}
	go f.serveConsole(conL)
	go f.serveQMP(qmpL)
	code := <-f.exit
	f.mu.Lock() // no more output
	return code
}

type fake struct {
	exit chan int

	mu  sync.Mutex
	con net.Conn // the console client
	qmp net.Conn // the QMP client
	// pending is console output printed before the fake's accept loop took
	// the client the driver had already connected (the two race in the
	// fake, not in the driver); it goes out first once it has.
	pending []byte
}

func (f *fake) print(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.con == nil {
		f.pending = append(f.pending, s...)
		return
	}
	_, _ = f.con.Write([]byte(s))
}

func (f *fake) event(name string, data any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.qmp != nil {
		b, _ := json.Marshal(map[string]any{"event": name, "data": data})
		_, _ = f.qmp.Write(append(b, '\r', '\n'))
	}
}

func (f *fake) serveConsole(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.con = c
		_, _ = c.Write(f.pending)
		f.pending = nil
		f.mu.Unlock()
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			f.print(line + "\r\n")
			switch line {
			case "poweroff":
				f.event("SHUTDOWN", map[string]any{"guest": true, "reason": "guest-shutdown"})
				f.exit <- 0
			case "crash":
				fmt.Fprintln(os.Stderr, "fake crash")
				f.exit <- 3
			}
		}
	}
}

func (f *fake) serveQMP(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.qmp = c
		_, _ = c.Write([]byte(`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}` + "\r\n"))
		f.mu.Unlock()
		dec := json.NewDecoder(c)
		for {
			var cmd struct {
				Execute string          `json:"execute"`
				ID      json.RawMessage `json:"id"`
			}
			if err := dec.Decode(&cmd); err != nil {
				break
			}
			reply := func(v any) {
				b, _ := json.Marshal(v)
				f.mu.Lock()
				_, _ = c.Write(append(b, '\r', '\n'))
				f.mu.Unlock()
			}
			switch cmd.Execute {
			case "qmp_capabilities":
				reply(map[string]any{"return": map[string]any{}, "id": cmd.ID})
			case "cont":
				f.print("fake boot\r\nfake login: ") // before the reply: in the socket when PowerOn returns
				reply(map[string]any{"return": map[string]any{}, "id": cmd.ID})
			case "system_reset":
				reply(map[string]any{"return": map[string]any{}, "id": cmd.ID})
				f.event("RESET", map[string]any{"guest": false, "reason": "host-qmp-system-reset"})
				f.print("fake reset\r\nfake login: ")
			case "quit":
				reply(map[string]any{"return": map[string]any{}, "id": cmd.ID})
				f.event("SHUTDOWN", map[string]any{"guest": false, "reason": "host-qmp-quit"})
				f.exit <- 0
			default:
				reply(map[string]any{"error": map[string]any{"class": "CommandNotFound", "desc": "The command " + cmd.Execute + " has not been found"}, "id": cmd.ID})
			}
		}
	}
}
