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
		if reads(pid, want, pts) {
			users = append(users, fmt.Sprintf("pid %d (%s)", pid, procName(pid)))
		}
	}
	return users
}

// reads reports whether process pid has the tty at target open and is not
// its other end: for a pseudo-terminal /dev/pts/N (pts "N"), the holder of
// its master (a simulated board) is not a reader.
func reads(pid int, target, pts string) bool {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	holds := false
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join(dir, fd.Name()))
		switch {
		case err != nil:
		case l == target:
			holds = true
		case pts != "" && (l == "/dev/ptmx" || l == "/dev/pts/ptmx") && masterOf(pid, fd.Name(), pts):
			return false
		}
	}
	return holds
}

// ptsIndex returns N for a pseudo-terminal /dev/pts/N, else "".
func ptsIndex(path string) string {
	if n, ok := strings.CutPrefix(path, "/dev/pts/"); ok {
		return n
	}
	return ""
}

// masterOf reports whether descriptor fd of pid, a pseudo-terminal master,
// is the master of pseudo-terminal n.
func masterOf(pid int, fd, n string) bool {
	info, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "fdinfo", fd))
	return err == nil && strings.Contains(string(info), "tty-index:\t"+n+"\n")
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
