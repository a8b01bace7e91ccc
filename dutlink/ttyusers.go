package dutlink

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ttyUsers names the other processes that have the tty at path open, as
// "pid 1234 (cat)", from /proc. A process that reads the board's tty
// without its lock takes the shell's replies and the DUT's output. It is a
// best effort: processes of other users may not be visible.
func ttyUsers(path string) []string {
	want, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	pts := ptsIndex(want)
	var users []string
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == self {
			continue
		}
		if holdsFile(pid, want) && (pts == "" || !holdsMaster(pid, pts)) {
			users = append(users, fmt.Sprintf("pid %d (%s)", pid, procName(pid)))
		}
	}
	return users
}

func holdsFile(pid int, target string) bool {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && l == target {
			return true
		}
	}
	return false
}

// ptsIndex returns N for a pseudo-terminal /dev/pts/N, else "".
func ptsIndex(path string) string {
	if n, ok := strings.CutPrefix(path, "/dev/pts/"); ok {
		return n
	}
	return ""
}

// holdsMaster reports whether pid holds the master side of pseudo-terminal
// n: it is the terminal's other end (a simulated board), not a reader.
func holdsMaster(pid int, n string) bool {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join(dir, fd.Name())); err != nil || l != "/dev/ptmx" && l != "/dev/pts/ptmx" {
			continue
		}
		info, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "fdinfo", fd.Name()))
		if err == nil && strings.Contains(string(info), "tty-index:\t"+n+"\n") {
			return true
		}
	}
	return false
}

func procName(pid int) string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// ttyUsersHint is the sentence an error about the tty gets when other
// processes have it open, or "".
func ttyUsersHint(path string) string {
	users := ttyUsers(path)
	if len(users) == 0 {
		return ""
	}
	return fmt.Sprintf("; %s also has %s open and takes what the board sends: stop it (a DUTlink's tty is for one program at a time; use dut console)", strings.Join(users, ", "), path)
}
