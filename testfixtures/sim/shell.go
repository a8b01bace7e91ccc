package sim

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/harness/driver"
)

// shellPID is the process ID $$ expands to.
const shellPID = "1234"

// yes prints yesBatch lines, then pauses yesPause, until interrupted.
const (
	yesBatch = 64
	yesPause = time.Millisecond
)

// exitError ends a shell with a status.
type exitError struct{ status int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.status) }

// shell is the board's login shell: a small interpreter of command lists.
type shell struct {
	b      *board
	user   string
	home   string
	cwd    string
	vars   map[string]string
	status int
	sub    bool // a "sh -c" subshell
}

func newShell(b *board, user string) *shell {
	home := "/home/" + user
	if user == "root" {
		home = "/root"
	}
	sh := &shell{b: b, user: user, home: home, cwd: home}
	sh.vars = map[string]string{
		"HOME":     home,
		"USER":     user,
		"LOGNAME":  user,
		"HOSTNAME": b.cfg.host,
		"SHELL":    "/bin/sh",
		"PATH":     "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"TERM":     "vt220",
		"PWD":      home,
	}
	return sh
}

// prompt is bash's coloured Debian prompt.
func (sh *shell) prompt() string {
	dir := sh.cwd
	if dir == sh.home {
		dir = "~"
	} else if strings.HasPrefix(dir, sh.home+"/") {
		dir = "~" + dir[len(sh.home):]
	}
	sign := "$"
	if sh.user == "root" {
		sign = "#"
	}
	return fmt.Sprintf("\x1b[01;32m%s@%s\x1b[00m:\x1b[01;34m%s\x1b[00m%s ", sh.user, sh.b.cfg.host, dir, sign)
}

// interact runs the interactive session until the user logs out (errLogout)
// or the board reboots, halts or stops.
func (sh *shell) interact() error {
	b := sh.b
	if motd, ok := b.img.Files["etc/motd"]; ok {
		s := string(motd)
		if s != "" && !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		b.out(s)
	}
	for {
		b.d.setActivity(b.r, actIdle)
		b.out(sh.prompt())
		line, err := b.readLine()
		switch {
		case errors.Is(err, errInterrupt):
			b.out("\n")
			sh.status = 130
			continue
		case errors.Is(err, io.EOF):
			b.out("logout\n")
			return errLogout
		case err != nil:
			return err
		}
		_, err = sh.runLine(line)
		var exit exitError
		switch {
		case errors.As(err, &exit):
			b.out("logout\n")
			return errLogout
		case errors.Is(err, errInterrupt):
			b.out("\n")
		case err != nil:
			return err
		}
	}
}

// runLine runs a command line and returns the status of its last command.
// Errors are the shell's control flow (exit, interrupt, reboot, halt) or the
// board stopping.
func (sh *shell) runLine(line string) (int, error) {
	cmds, err := parse(line)
	if err != nil {
		sh.b.out("sh: " + err.Error() + "\n")
		sh.status = 2
		return sh.status, nil
	}
	for _, c := range cmds {
		if (c.op == "&&" && sh.status != 0) || (c.op == "||" && sh.status == 0) {
			continue
		}
		status, err := sh.exec(c.words)
		sh.status = status
		if err != nil {
			return status, err
		}
	}
	return sh.status, nil
}

// exec expands and runs one simple command.
func (sh *shell) exec(words []word) (int, error) {
	args := sh.expand(words)
	// Leading NAME=value words set shell variables.
	for len(args) > 0 {
		name, value, ok := strings.Cut(args[0], "=")
		if !ok || !validName(name) {
			break
		}
		sh.vars[name] = value
		args = args[1:]
	}
	if len(args) == 0 {
		return 0, nil
	}
	name := args[0]
	for _, dir := range []string{"/usr/local/bin/", "/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/"} {
		name = strings.TrimPrefix(name, dir)
	}
	cmd, ok := commands[name]
	if !ok {
		sh.b.out("sh: " + args[0] + ": not found\n")
		return 127, nil
	}
	return cmd(sh, args[1:])
}

// expand turns words into arguments. Unquoted expansions are not split into
// several words; a word made only of unquoted expansions that expand to
// nothing disappears, as in sh.
func (sh *shell) expand(words []word) []string {
	var args []string
	for _, w := range words {
		var s strings.Builder
		onlyVars := true
		for _, p := range w.parts {
			if p.isVar {
				s.WriteString(sh.lookup(p.text))
			} else {
				s.WriteString(p.text)
				onlyVars = false
			}
		}
		if s.Len() == 0 && !w.quoted && onlyVars {
			continue
		}
		args = append(args, s.String())
	}
	return args
}

func (sh *shell) lookup(name string) string {
	switch name {
	case "?":
		return strconv.Itoa(sh.status)
	case "$":
		return shellPID
	case "0":
		return "-sh"
	}
	return sh.vars[name]
}

// word is a parsed shell word: literal text and variable references.
type word struct {
	parts  []wordPart
	quoted bool // some part of it was quoted
}

type wordPart struct {
	text  string // literal text, or a variable's name
	isVar bool
}

// command is a simple command and the operator that joins it to the
// previous one: "" for the first, ";", "&&" or "||".
type command struct {
	op    string
	words []word
}

// parse splits a command line into commands. It knows ';', '&&', '||',
// single and double quotes, backslash escapes, $NAME, ${NAME}, $? and $$, and
// '#' comments; it rejects what the simulated shell cannot do (pipes,
// redirections, background jobs, command substitution).
func parse(line string) ([]command, error) {
	var (
		cmds []command
		cur  = command{}
		w    *word
	)
	lit := func(s string) {
		if w == nil {
			w = &word{}
		}
		if n := len(w.parts); n > 0 && !w.parts[n-1].isVar {
			w.parts[n-1].text += s
			return
		}
		w.parts = append(w.parts, wordPart{text: s})
	}
	variable := func(name string) {
		if w == nil {
			w = &word{}
		}
		w.parts = append(w.parts, wordPart{text: name, isVar: true})
	}
	endWord := func() {
		if w != nil {
			cur.words = append(cur.words, *w)
			w = nil
		}
	}
	endCommand := func(op string) error {
		endWord()
		if len(cur.words) == 0 {
			return fmt.Errorf("syntax error near unexpected token `%s'", op)
		}
		cmds = append(cmds, cur)
		cur = command{op: op}
		return nil
	}
	// dollar parses an expansion at line[i] == '$' and returns the index
	// after it.
	dollar := func(i int) (int, error) {
		if i+1 >= len(line) {
			lit("$")
			return i + 1, nil
		}
		c := line[i+1]
		switch {
		case c == '?' || c == '$' || (c >= '0' && c <= '9'):
			variable(string(c))
			return i + 2, nil
		case c == '{':
			end := strings.IndexByte(line[i+2:], '}')
			if end < 0 {
				return 0, errors.New("syntax error: missing `}'")
			}
			name := line[i+2 : i+2+end]
			if !validName(name) && name != "?" && name != "$" {
				return 0, fmt.Errorf("${%s}: bad substitution", name)
			}
			variable(name)
			return i + 3 + end, nil
		case c == '(':
			return 0, errors.New("command substitution $(...) is not supported by the simulated shell")
		case c == '_' || isLetter(c):
			j := i + 1
			for j < len(line) && (line[j] == '_' || isLetter(line[j]) || isDigit(line[j])) {
				j++
			}
			variable(line[i+1 : j])
			return j, nil
		}
		lit("$")
		return i + 1, nil
	}

	for i := 0; i < len(line); {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			endWord()
			i++
		case c == ';':
			if err := endCommand(";"); err != nil {
				return nil, err
			}
			i++
		case c == '&' || c == '|':
			if i+1 < len(line) && line[i+1] == c {
				if err := endCommand(line[i : i+2]); err != nil {
					return nil, err
				}
				i += 2
				continue
			}
			if c == '|' {
				return nil, errors.New("pipes (|) are not supported by the simulated shell")
			}
			return nil, errors.New("background jobs (&) are not supported by the simulated shell")
		case c == '<' || c == '>':
			return nil, fmt.Errorf("redirections (%c) are not supported by the simulated shell", c)
		case c == '`':
			return nil, errors.New("command substitution `...` is not supported by the simulated shell")
		case c == '#' && w == nil:
			i = len(line) // a comment runs to the end of the line
		case c == '\'':
			end := strings.IndexByte(line[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("syntax error: unterminated quoted string")
			}
			lit(line[i+1 : i+1+end])
			w.quoted = true
			i += end + 2
		case c == '"':
			lit("")
			w.quoted = true
			i++
			for {
				if i >= len(line) {
					return nil, errors.New("syntax error: unterminated quoted string")
				}
				c := line[i]
				if c == '"' {
					i++
					break
				}
				switch {
				case c == '\\' && i+1 < len(line) && strings.IndexByte("$`\"\\", line[i+1]) >= 0:
					lit(line[i+1 : i+2])
					i += 2
				case c == '$':
					var err error
					if i, err = dollar(i); err != nil {
						return nil, err
					}
				case c == '`':
					return nil, errors.New("command substitution `...` is not supported by the simulated shell")
				default:
					lit(line[i : i+1])
					i++
				}
			}
		case c == '\\':
			if i+1 < len(line) {
				lit(line[i+1 : i+2])
				w.quoted = true
			}
			i += 2
		case c == '$':
			var err error
			if i, err = dollar(i); err != nil {
				return nil, err
			}
		default:
			lit(line[i : i+1])
			i++
		}
	}
	endWord()
	if len(cur.words) > 0 {
		cmds = append(cmds, cur)
	} else if cur.op == "&&" || cur.op == "||" {
		return nil, errors.New("syntax error: unexpected end of line")
	}
	return cmds, nil
}

func isLetter(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }

func validName(s string) bool {
	if s == "" || isDigit(s[0]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '_' && !isLetter(c) && !isDigit(c) {
			return false
		}
	}
	return true
}

// commands are the shell's builtins and the board's programs. Each gets the
// arguments after its name and returns its exit status, and an error for the
// shell's control flow or the board stopping. The map is filled in init
// because sh refers back to it.
var commands map[string]func(sh *shell, args []string) (int, error)

func init() {
	commands = map[string]func(sh *shell, args []string) (int, error){
		"bash":     cmdSh,
		"cat":      cmdCat,
		"cd":       cmdCd,
		"echo":     cmdEcho,
		"exit":     cmdExit,
		"export":   cmdExport,
		"false":    func(*shell, []string) (int, error) { return 1, nil },
		"halt":     cmdHalt,
		"hostname": cmdHostname,
		"id":       cmdID,
		"logout":   cmdLogout,
		"ls":       cmdLs,
		"poweroff": cmdPowerOff,
		"printf":   cmdPrintf,
		"pwd":      cmdPwd,
		"reboot":   cmdReboot,
		"sh":       cmdSh,
		"sleep":    cmdSleep,
		"true":     func(*shell, []string) (int, error) { return 0, nil },
		"uname":    cmdUname,
		"uptime":   cmdUptime,
		"whoami":   cmdWhoami,
		"yes":      cmdYes,
	}
}

func (sh *shell) out(s string) { sh.b.out(s) }

func cmdEcho(sh *shell, args []string) (int, error) {
	newline := true
	for len(args) > 0 && args[0] == "-n" {
		newline = false
		args = args[1:]
	}
	s := strings.Join(args, " ")
	if newline {
		s += "\n"
	}
	sh.out(s)
	return 0, nil
}

// cmdPrintf is printf(1) with the conversions %s, %d, %i, %u, %x, %X, %o,
// %c and %% (with flags, width and precision) and the escapes \n \t \r \\
// \a \b \f \v \e. The format is reused while arguments remain. A bad number
// prints as 0 with a warning and makes the status 1, as in bash.
func cmdPrintf(sh *shell, args []string) (int, error) {
	if len(args) == 0 {
		sh.out("sh: printf: usage: printf format [arguments]\n")
		return 2, nil
	}
	format, args := args[0], args[1:]
	var out strings.Builder
	status := 0
	warn := func(msg string) {
		sh.out(out.String())
		out.Reset()
		sh.out("sh: printf: " + msg + "\n")
		status = 1
	}
	for {
		used, err := printfOnce(&out, format, &args, warn)
		if err != nil {
			warn(err.Error())
			return 1, nil
		}
		if len(args) == 0 || used == 0 {
			break
		}
	}
	sh.out(out.String())
	return status, nil
}

// printfOnce formats format once, consuming arguments, and returns how many
// conversions used an argument. It reports bad numbers to warn and returns
// an error for a bad format.
func printfOnce(out *strings.Builder, format string, args *[]string, warn func(string)) (int, error) {
	next := func() (string, bool) {
		if len(*args) == 0 {
			return "", false
		}
		a := (*args)[0]
		*args = (*args)[1:]
		return a, true
	}
	used := 0
	for i := 0; i < len(format); i++ {
		c := format[i]
		switch c {
		case '\\':
			if i+1 >= len(format) {
				out.WriteByte('\\')
				continue
			}
			i++
			if r, ok := escapes[format[i]]; ok {
				out.WriteString(r)
			} else {
				out.WriteByte('\\')
				out.WriteByte(format[i])
			}
		case '%':
			j := i + 1
			for j < len(format) && strings.IndexByte("-+ 0#", format[j]) >= 0 {
				j++
			}
			for j < len(format) && (isDigit(format[j]) || format[j] == '.') {
				j++
			}
			if j >= len(format) {
				return used, fmt.Errorf("%s: missing format character", format[i:])
			}
			spec, verb := format[i+1:j], format[j]
			i = j
			if verb == '%' {
				out.WriteByte('%')
				continue
			}
			arg, ok := next()
			if ok {
				used++
			}
			switch verb {
			case 's':
				fmt.Fprintf(out, "%"+spec+"s", arg)
			case 'c':
				if arg != "" {
					out.WriteByte(arg[0])
				}
			case 'd', 'i', 'u', 'x', 'X', 'o':
				n := int64(0)
				if a := strings.TrimSpace(arg); a != "" {
					var err error
					if n, err = strconv.ParseInt(a, 0, 64); err != nil {
						warn(arg + ": invalid number")
						n = 0
					}
				}
				v := verb
				if v == 'i' || v == 'u' {
					v = 'd'
				}
				fmt.Fprintf(out, "%"+spec+string(v), n)
			default:
				return used, fmt.Errorf("`%c': invalid format character", verb)
			}
		default:
			out.WriteByte(c)
		}
	}
	return used, nil
}

var escapes = map[byte]string{
	'n': "\n", 't': "\t", 'r': "\r", '\\': "\\", 'a': "\a", 'b': "\b",
	'f': "\f", 'v': "\v", 'e': "\x1b", '"': "\"", '\'': "'",
}

// Errors of the board's file system, worded as the C library's.
var (
	errNoEnt = errors.New("No such file or directory")
	errIsDir = errors.New("Is a directory")
	errNoDir = errors.New("Not a directory")
	errIO    = errors.New("Input/output error")
)

// abs resolves p against the working directory.
func (sh *shell) abs(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		p = sh.home + p[1:]
	}
	if !path.IsAbs(p) {
		p = path.Join(sh.cwd, p)
	}
	return path.Clean(p)
}

// fsFiles returns the board's files by absolute path: the image's and the
// kernel's /proc files.
func (sh *shell) fsFiles() map[string]string {
	b := sh.b
	files := map[string]string{
		"/proc/version": fmt.Sprintf("Linux version %s (%s) (gcc (Debian 12.2.0-14) 12.2.0) %s\n", kernelRelease, b.img.Version, kernelVersion),
		"/proc/uptime":  fmt.Sprintf("%.2f %.2f\n", sh.uptime().Seconds(), 3.6*sh.uptime().Seconds()),
		"/proc/cmdline": "console=" + tty + ",115200 root=/dev/mmcblk0p1 rootwait\n",
	}
	for p, content := range b.img.Files {
		files["/"+p] = string(content)
	}
	return files
}

// fsDirs returns the board's directories.
func (sh *shell) fsDirs(files map[string]string) map[string]bool {
	dirs := map[string]bool{"/": true, "/tmp": true, "/root": true, sh.home: true}
	for _, p := range append(slices.Collect(maps.Keys(files)), sh.home) {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	return dirs
}

// storageOK reports whether the board can read its disk.
func (sh *shell) storageOK() bool { return sh.b.d.StorageState() == driver.StorageDUT }

// readFile returns the content of the file at p.
func (sh *shell) readFile(p string) (string, error) {
	abs := sh.abs(p)
	files := sh.fsFiles()
	if !strings.HasPrefix(abs, "/proc/") && !sh.storageOK() {
		return "", errIO
	}
	if content, ok := files[abs]; ok {
		return content, nil
	}
	if sh.fsDirs(files)[abs] {
		return "", errIsDir
	}
	return "", errNoEnt
}

func cmdCat(sh *shell, args []string) (int, error) {
	if len(args) == 0 {
		sh.out("cat: reading standard input is not supported by the simulated shell\n")
		return 1, nil
	}
	status := 0
	for _, a := range args {
		content, err := sh.readFile(a)
		if err != nil {
			sh.out(fmt.Sprintf("cat: %s: %v\n", a, err))
			status = 1
			continue
		}
		sh.out(content)
	}
	return status, nil
}

func cmdLs(sh *shell, args []string) (int, error) {
	onePerLine, all := false, false
	var paths []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-") || a == "-" {
			paths = append(paths, a)
			continue
		}
		for _, f := range a[1:] {
			switch f {
			case '1':
				onePerLine = true
			case 'a', 'A':
				all = true
			default:
				sh.out(fmt.Sprintf("ls: invalid option -- '%c'\n", f))
				return 2, nil
			}
		}
	}
	if len(paths) == 0 {
		paths = []string{"."}
	}
	if !sh.storageOK() {
		sh.out(fmt.Sprintf("ls: cannot access '%s': %v\n", paths[0], errIO))
		return 2, nil
	}
	files := sh.fsFiles()
	dirs := sh.fsDirs(files)
	sep := "  "
	if onePerLine {
		sep = "\n"
	}
	status := 0
	for i, p := range paths {
		abs := sh.abs(p)
		if _, ok := files[abs]; ok {
			sh.out(p + "\n")
			continue
		}
		if !dirs[abs] {
			sh.out(fmt.Sprintf("ls: cannot access '%s': %v\n", p, errNoEnt))
			status = 2
			continue
		}
		var names []string
		if all {
			names = append(names, ".", "..")
		}
		seen := map[string]bool{}
		for _, set := range []map[string]bool{dirs, setOf(files)} {
			for e := range set {
				if e != "/" && path.Dir(e) == abs && !seen[e] {
					seen[e] = true
					names = append(names, path.Base(e))
				}
			}
		}
		slices.Sort(names)
		if len(paths) > 1 {
			if i > 0 {
				sh.out("\n")
			}
			sh.out(p + ":\n")
		}
		if len(names) > 0 {
			sh.out(strings.Join(names, sep) + "\n")
		}
	}
	return status, nil
}

func setOf(files map[string]string) map[string]bool {
	s := make(map[string]bool, len(files))
	for p := range files {
		s[p] = true
	}
	return s
}

func cmdCd(sh *shell, args []string) (int, error) {
	target := sh.home
	switch len(args) {
	case 0:
	case 1:
		target = sh.abs(args[0])
	default:
		sh.out("sh: cd: too many arguments\n")
		return 1, nil
	}
	files := sh.fsFiles()
	switch {
	case sh.fsDirs(files)[target]:
		sh.cwd = target
		sh.vars["PWD"] = target
		return 0, nil
	case hasKey(files, target):
		sh.out(fmt.Sprintf("sh: cd: %s: %v\n", args[0], errNoDir))
	default:
		sh.out(fmt.Sprintf("sh: cd: %s: %v\n", args[0], errNoEnt))
	}
	return 1, nil
}

func hasKey(m map[string]string, k string) bool { _, ok := m[k]; return ok }

func cmdPwd(sh *shell, _ []string) (int, error) {
	sh.out(sh.cwd + "\n")
	return 0, nil
}

func cmdExport(sh *shell, args []string) (int, error) {
	for _, a := range args {
		name, value, ok := strings.Cut(a, "=")
		if !validName(name) {
			sh.out(fmt.Sprintf("sh: export: `%s': not a valid identifier\n", a))
			return 1, nil
		}
		if ok {
			sh.vars[name] = value
		}
	}
	return 0, nil
}

func cmdExit(sh *shell, args []string) (int, error) {
	status := sh.status
	if len(args) > 0 {
		n, err := strconv.Atoi(args[0])
		if err != nil {
			sh.out(fmt.Sprintf("sh: exit: %s: numeric argument required\n", args[0]))
			n = 2
		}
		status = n & 0xff
	}
	return status, exitError{status}
}

func cmdLogout(sh *shell, args []string) (int, error) {
	if sh.sub {
		sh.out("sh: logout: not login shell: use `exit'\n")
		return 1, nil
	}
	return cmdExit(sh, args)
}

func cmdSh(sh *shell, args []string) (int, error) {
	if len(args) == 0 {
		sh.out("sh: interactive subshells are not supported by the simulated shell\n")
		return 2, nil
	}
	if args[0] != "-c" {
		sh.out(fmt.Sprintf("sh: cannot open %s: %v\n", args[0], errNoEnt))
		return 2, nil
	}
	if len(args) < 2 {
		sh.out("sh: -c: option requires an argument\n")
		return 2, nil
	}
	sub := *sh
	sub.vars = maps.Clone(sh.vars)
	sub.sub = true
	status, err := sub.runLine(args[1])
	var exit exitError
	if errors.As(err, &exit) {
		return exit.status, nil
	}
	return status, err
}

func (sh *shell) uptime() time.Duration { return time.Since(sh.b.bootStart) }

func cmdUptime(sh *shell, _ []string) (int, error) {
	up := sh.uptime()
	clock := time.Date(2024, time.January, 1, 12, 0, 0, 0, time.UTC).Add(up)
	mins := int(up.Minutes())
	upText := fmt.Sprintf("%d min", mins)
	if mins >= 60 {
		upText = fmt.Sprintf("%d:%02d", mins/60, mins%60)
	}
	sh.out(fmt.Sprintf(" %s up %s,  1 user,  load average: 0.00, 0.00, 0.00\n", clock.Format("15:04:05"), upText))
	return 0, nil
}

func cmdUname(sh *shell, args []string) (int, error) {
	fields := map[rune]string{
		's': "Linux",
		'n': sh.b.cfg.host,
		'r': kernelRelease,
		'v': kernelVersion + " " + "Jumpstarter Sim Linux " + sh.b.img.Version,
		'm': machine,
		'o': "GNU/Linux",
	}
	want := map[rune]bool{}
	for _, a := range args {
		if !strings.HasPrefix(a, "-") || len(a) < 2 {
			sh.out(fmt.Sprintf("uname: extra operand '%s'\n", a))
			return 1, nil
		}
		for _, f := range a[1:] {
			switch {
			case f == 'a':
				for k := range fields {
					want[k] = true
				}
			case fields[f] != "":
				want[f] = true
			default:
				sh.out(fmt.Sprintf("uname: invalid option -- '%c'\n", f))
				return 1, nil
			}
		}
	}
	if len(want) == 0 {
		want['s'] = true
	}
	var out []string
	for _, f := range "snrvmo" {
		if want[f] {
			out = append(out, fields[f])
		}
	}
	sh.out(strings.Join(out, " ") + "\n")
	return 0, nil
}

func cmdHostname(sh *shell, args []string) (int, error) {
	if len(args) > 0 {
		sh.out("hostname: the simulated board cannot change its host name\n")
		return 1, nil
	}
	sh.out(sh.b.cfg.host + "\n")
	return 0, nil
}

func cmdWhoami(sh *shell, _ []string) (int, error) {
	sh.out(sh.user + "\n")
	return 0, nil
}

func cmdID(sh *shell, _ []string) (int, error) {
	uid := 0
	if sh.user != "root" {
		var others []string
		for u := range sh.b.cfg.users {
			if u != "root" {
				others = append(others, u)
			}
		}
		slices.Sort(others)
		uid = 1000 + slices.Index(others, sh.user)
	}
	sh.out(fmt.Sprintf("uid=%d(%s) gid=%d(%s) groups=%d(%s)\n", uid, sh.user, uid, sh.user, uid, sh.user))
	return 0, nil
}

func cmdSleep(sh *shell, args []string) (int, error) {
	if len(args) == 0 {
		sh.out("sleep: missing operand\n")
		return 1, nil
	}
	var total time.Duration
	for _, a := range args {
		d, ok := parseSleep(a)
		if !ok {
			sh.out(fmt.Sprintf("sleep: invalid time interval '%s'\n", a))
			return 1, nil
		}
		total += min(d, time.Duration(math.MaxInt64)-total)
	}
	if err := sh.b.sleep(total, true); err != nil {
		return 130, err
	}
	return 0, nil
}

// parseSleep parses sleep(1)'s NUMBER[SUFFIX], SUFFIX one of s, m, h, d.
func parseSleep(s string) (time.Duration, bool) {
	unit := time.Second
	if n := len(s); n > 0 {
		if u, ok := map[byte]time.Duration{'s': time.Second, 'm': time.Minute, 'h': time.Hour, 'd': 24 * time.Hour}[s[n-1]]; ok {
			unit, s = u, s[:n-1]
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || math.IsNaN(f) || strings.ContainsAny(s, "xXpPnN") {
		return 0, false
	}
	if d := f * float64(unit); d < math.MaxInt64 {
		return time.Duration(d), true
	}
	return time.Duration(math.MaxInt64), true
}

func cmdYes(sh *shell, args []string) (int, error) {
	s := "y"
	if len(args) > 0 {
		s = strings.Join(args, " ")
	}
	batch := strings.Repeat(s+"\n", yesBatch)
	sh.b.d.setActivity(sh.b.r, actBusy)
	for {
		sh.out(batch)
		if err := sh.b.sleep(yesPause, true); err != nil {
			return 130, err
		}
	}
}

func cmdReboot(sh *shell, _ []string) (int, error) {
	sh.out("reboot: Restarting system\n")
	return 0, errReboot
}

func cmdPowerOff(sh *shell, _ []string) (int, error) {
	sh.out("reboot: Power down\n")
	return 0, errHalt
}

func cmdHalt(sh *shell, _ []string) (int, error) {
	sh.out("reboot: System halted\n")
	return 0, errHalt
}
