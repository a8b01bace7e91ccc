package sim

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jumpstarter-dev/jumpstarter-go/testfixtures/simimage"
)

// bootToShell powers a fresh device with image version "8.1" on and logs in
// as root.
func bootToShell(t *testing.T, o Options, files map[string]string) (*Device, *term) {
	t.Helper()
	d := newTestDevice(t, o)
	flash(t, d, simimage.Spec{Version: "8.1", Files: files})
	tm := openTerm(t, d)
	if err := d.PowerOn(t.Context()); err != nil {
		t.Fatal(err)
	}
	tm.login()
	return d, tm
}

func TestShellCommands(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, tm := bootToShell(t, Options{}, map[string]string{"etc/motd": "", "srv/data/a.txt": "A\n", "srv/data/b.txt": "B"})
		for _, c := range []struct{ line, want string }{
			// Exit codes and lists.
			{"false; echo $?", "1\r\n"},
			{"true; echo $?", "0\r\n"},
			{"false && echo yes || echo no", "no\r\n"},
			{"true && echo yes || echo no", "yes\r\n"},
			{"false || false && echo x; echo $?", "1\r\n"},
			{"nosuch-cmd; echo $?", "sh: nosuch-cmd: not found\r\n127\r\n"},
			{"/bin/echo full path", "full path\r\n"},
			{"", ""},
			{"   # only a comment", ""},
			{"echo a # comment", "a\r\n"},
			{"echo a; ", "a\r\n"},
			// Quoting and expansion.
			{`echo 'a  b' "c  $USER" d\ e \$HOME`, "a  b c  root d e $HOME\r\n"},
			{`echo "$HOME" $HOSTNAME ${USER}x "$?"`, "/root sim-0 rootx 0\r\n"},
			{`echo "a\"b" 'it''s' "\\"`, "a\"b its \\\r\n"},
			{`echo $UNSET x "" y`, "x  y\r\n"},
			{"X=42; echo $X; export Y=7 && echo $Y", "42\r\n7\r\n"},
			{"echo $$ $", "1234 $\r\n"},
			// echo and printf.
			{"echo -n no newline; echo", "no newline\r\n"},
			{`printf '%s-%d\n' a 1 b 2`, "a-1\r\nb-2\r\n"},
			{`printf '%s\n'`, "\r\n"},
			{`printf '[%5d|%-3s|%03d|%x|%%|%c]\n' 42 ab 7 255 zed`, "[   42|ab |007|ff|%|z]\r\n"},
			{`printf 'a\tb\\c\n'`, "a\tb\\c\r\n"},
			{`printf '%d\n' abc; echo $?`, "sh: printf: abc: invalid number\r\n0\r\n1\r\n"},
			{`printf '%q' x; echo $?`, "sh: printf: `q': invalid format character\r\n1\r\n"},
			{"printf; echo $?", "sh: printf: usage: printf format [arguments]\r\n2\r\n"},
			// Files.
			{"cat /etc/dut-release", "8.1\r\n"},
			{"cat /srv/data/a.txt /srv/data/b.txt; echo", "A\r\nB\r\n"},
			{"cat /nonexistent; echo $?", "cat: /nonexistent: No such file or directory\r\n1\r\n"},
			{"cat /etc; echo $?", "cat: /etc: Is a directory\r\n1\r\n"},
			{"cat; echo $?", "cat: reading standard input is not supported by the simulated shell\r\n1\r\n"},
			{"ls /srv/data", "a.txt  b.txt\r\n"},
			{"ls -1 /srv", "data\r\n"},
			{"ls -a /srv", ".  ..  data\r\n"},
			{"ls /srv/data/a.txt", "/srv/data/a.txt\r\n"},
			{"ls /", "etc  proc  root  srv  tmp\r\n"},
			{"ls /nope; echo $?", "ls: cannot access '/nope': No such file or directory\r\n2\r\n"},
			{"ls -z", "ls: invalid option -- 'z'\r\n"},
			{"pwd", "/root\r\n"},
			// System information.
			{"uname", "Linux\r\n"},
			{"uname -r", "6.1.0-sim\r\n"},
			{"uname -n -s", "Linux sim-0\r\n"},
			{"uname -m", "aarch64\r\n"},
			{"uname -a", "Linux sim-0 6.1.0-sim #1 SMP PREEMPT Jumpstarter Sim Linux 8.1 aarch64 GNU/Linux\r\n"},
			{"uname -q; echo $?", "uname: invalid option -- 'q'\r\n1\r\n"},
			{"hostname", "sim-0\r\n"},
			{"id", "uid=0(root) gid=0(root) groups=0(root)\r\n"},
			{"whoami", "root\r\n"},
			{"cat /proc/version", "Linux version 6.1.0-sim (8.1) (gcc (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT\r\n"},
			// Subshells.
			{"sh -c 'exit 3'; echo $?", "3\r\n"},
			{`sh -c 'echo in; false'; echo $?`, "in\r\n1\r\n"},
			{`bash -c "echo \$USER"`, "root\r\n"},
			{"sh -c 'Z=1'; echo [$Z]", "[]\r\n"},
			{"sh; echo $?", "sh: interactive subshells are not supported by the simulated shell\r\n2\r\n"},
			// What the simulated shell cannot do.
			{"echo a | cat; echo $?", "sh: pipes (|) are not supported by the simulated shell\r\n"},
			{"echo $?", "2\r\n"},
			{"echo a > /tmp/x", "sh: redirections (>) are not supported by the simulated shell\r\n"},
			{"sleep 1 &", "sh: background jobs (&) are not supported by the simulated shell\r\n"},
			{"echo $(date)", "sh: command substitution $(...) is not supported by the simulated shell\r\n"},
			{"; echo", "sh: syntax error near unexpected token `;'\r\n"},
			{"echo a && && echo b", "sh: syntax error near unexpected token `&&'\r\n"},
			{"echo a &&", "sh: syntax error: unexpected end of line\r\n"},
			{"echo 'open", "sh: syntax error: unterminated quoted string\r\n"},
			{"echo ${bad-name}", "sh: ${bad-name}: bad substitution\r\n"},
			// Sleep arguments.
			{"sleep; echo $?", "sleep: missing operand\r\n1\r\n"},
			{"sleep soon; echo $?", "sleep: invalid time interval 'soon'\r\n1\r\n"},
			{"sleep 0.5 0.25s; echo $?", "0\r\n"},
		} {
			if got := tm.run(c.line); got != c.want {
				t.Errorf("%s\n got %q\nwant %q", c.line, got, c.want)
			}
		}

		// cd changes the prompt.
		etcPrompt := "\x1b[01;32mroot@sim-0\x1b[00m:\x1b[01;34m/srv/data\x1b[00m# "
		if got := tm.runPrompt("cd /srv/data && pwd", etcPrompt); got != "/srv/data\r\n" {
			t.Errorf("cd /srv/data && pwd = %q", got)
		}
		if got := tm.runPrompt("cat a.txt; cd ../nope; echo $PWD", etcPrompt); got != "A\r\nsh: cd: ../nope: No such file or directory\r\n/srv/data\r\n" {
			t.Errorf("relative paths: %q", got)
		}
		if got := tm.runPrompt("cd", rootPrompt); got != "" {
			t.Errorf("cd = %q", got)
		}
	})
}

func TestSleepTakesItsTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, tm := bootToShell(t, Options{}, nil)
		start := time.Now()
		if got := tm.run("sleep 1.5; echo slept"); got != "slept\r\n" {
			t.Errorf("output = %q", got)
		}
		if got := time.Since(start); got != 1500*time.Millisecond {
			t.Errorf("sleep 1.5 took %v", got)
		}
		// Ctrl-C interrupts sleep and the rest of the line.
		tm.send("sleep 100; echo not reached\r")
		tm.expect("sleep 100; echo not reached\r\n")
		time.Sleep(time.Second)
		tm.send("\x03")
		if got := tm.expect(rootPrompt); got != "^C\r\n"+rootPrompt {
			t.Errorf("after Ctrl-C: %q", got)
		}
		if got := tm.run("echo $?"); got != "130\r\n" {
			t.Errorf("status after Ctrl-C = %q", got)
		}
	})
}

func TestYesUntilCtrlC(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, tm := bootToShell(t, Options{}, nil)
		tm.send("yes hello world\r")
		tm.expect("yes hello world\r\n")
		// The flood goes on as long as nobody stops it.
		for range 500 {
			tm.expect("hello world\r\n")
		}
		r, err := d.ReadPower(t.Context())
		if err != nil || r.Watts != ampsBusy*supplyVolts {
			t.Errorf("power while busy = %+v, %v", r, err)
		}
		tm.send("\x03")
		got := tm.expect("^C\r\n" + rootPrompt)
		if rest := strings.ReplaceAll(strings.TrimSuffix(got, "^C\r\n"+rootPrompt), "hello world\r\n", ""); rest != "" {
			t.Errorf("unexpected output amid the flood: %q", rest)
		}
		if got := tm.run("echo $?"); got != "130\r\n" {
			t.Errorf("status after Ctrl-C = %q", got)
		}
		r, err = d.ReadPower(t.Context())
		if err != nil || r.Watts != ampsIdle*supplyVolts {
			t.Errorf("power while idle = %+v, %v", r, err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if rest := tm.unread(); rest != "" {
			t.Errorf("output after the prompt: %q", rest)
		}
	})
}

func TestLineEditing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, tm := bootToShell(t, Options{}, nil)
		// Backspace erases, Ctrl-U kills the line, "\n" ends a line as
		// "\r" does and "\r\n" is one line end.
		tm.send("echo abx\x7fc\n")
		if got := tm.expect(rootPrompt); got != "echo abx\b \bc\r\nabc\r\n"+rootPrompt {
			t.Errorf("backspace: %q", got)
		}
		tm.send("junk\x15echo ok\r\n")
		if got := tm.expect(rootPrompt); got != "junk\b \b\b \b\b \b\b \becho ok\r\nok\r\n"+rootPrompt {
			t.Errorf("kill line: %q", got)
		}
		// Ctrl-C at the prompt discards the line and gives a new prompt.
		tm.send("half a line\x03")
		if got := tm.expect(rootPrompt); got != "half a line^C\r\n"+rootPrompt {
			t.Errorf("Ctrl-C at the prompt: %q", got)
		}
		if got := tm.run("echo $?"); got != "130\r\n" {
			t.Errorf("status after Ctrl-C = %q", got)
		}
		// A line typed while a command runs is echoed at once and runs
		// after it.
		tm.send("sleep 1\r")
		tm.expect("sleep 1\r\n")
		tm.send("echo typed ahead\r")
		tm.expect("echo typed ahead\r\n")
		if got := tm.expect(rootPrompt); got != rootPrompt {
			t.Errorf("before the typed-ahead command's output: %q", got)
		}
		if got := tm.expect(rootPrompt); got != "typed ahead\r\n"+rootPrompt {
			t.Errorf("type-ahead: %q", got)
		}
		tm.send("two\rlines\r")
		tm.expect("sh: two: not found\r\n" + rootPrompt)
		tm.expect("sh: lines: not found\r\n" + rootPrompt)
	})
}

func TestLogin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		users := map[string]string{"root": "", "dev": "s3cret"}
		d := newTestDevice(t, Options{Users: users})
		flash(t, d, simimage.Spec{Version: "2"})
		tm := openTerm(t, d)
		// Typing before the prompt is lost: getty flushes the input.
		if err := d.PowerOn(t.Context()); err != nil {
			t.Fatal(err)
		}
		tm.expect("Welcome to")
		tm.send("early\r")
		tm.expect("sim-0 login: ")
		tm.expect(lastNoise)
		if strings.Contains(tm.all(), "early") {
			t.Error("input typed during the boot was echoed")
		}

		// An unknown user is asked for a password, which is not echoed.
		tm.send("mallory\r")
		tm.expect("mallory\r\nPassword: ")
		tm.send("guess\r")
		if got := tm.expect("sim-0 login: "); got != "\r\n\r\nLogin incorrect\r\nsim-0 login: " {
			t.Errorf("after a bad login: %q", got)
		}
		// A wrong password fails too.
		tm.send("dev\r")
		tm.expect("Password: ")
		tm.send("wrong\r")
		tm.expect("Login incorrect\r\nsim-0 login: ")
		// An empty user name just prompts again.
		tm.send("\r")
		if got := tm.expect("sim-0 login: "); got != "\r\nsim-0 login: " {
			t.Errorf("after an empty user name: %q", got)
		}

		// The right password logs in.
		tm.send("dev\r")
		tm.expect("Password: ")
		tm.send("s3cret\r")
		devPrompt := "\x1b[01;32mdev@sim-0\x1b[00m:\x1b[01;34m~\x1b[00m$ "
		tm.expect(devPrompt)
		if strings.Contains(tm.all(), "guess") || strings.Contains(tm.all(), "s3cret") {
			t.Error("a password was echoed")
		}
		if got := tm.runPrompt("id; pwd; echo $HOME", devPrompt); got != "uid=1000(dev) gid=1000(dev) groups=1000(dev)\r\n/home/dev\r\n/home/dev\r\n" {
			t.Errorf("dev's session: %q", got)
		}

		// exit logs out, back to getty.
		tm.send("exit\r")
		if got := tm.expect("sim-0 login: "); got != "exit\r\nlogout\r\n\r\nJumpstarter Sim Linux 2 sim-0 ttyS0\r\n\r\nsim-0 login: " {
			t.Errorf("after exit: %q", got)
		}
		// root logs in without a password; Ctrl-D logs out.
		tm.send("root\r")
		if got := tm.expect(rootPrompt); got != "root\r\n"+rootPrompt {
			t.Errorf("root login: %q", got)
		}
		tm.send("\x04")
		tm.expect("logout\r\n\r\nJumpstarter Sim Linux 2 sim-0 ttyS0\r\n\r\nsim-0 login: ")
		// Ctrl-C at the login and password prompts starts over.
		tm.send("x\x03")
		tm.expect("x^C\r\nsim-0 login: ")
		tm.send("dev\r")
		tm.expect("Password: ")
		tm.send("\x03")
		tm.expect("\r\nsim-0 login: ")
		tm.send("root\r")
		tm.expect(rootPrompt)
		tm.send("exit 5\r")
		tm.expect("logout\r\n")
		tm.expect("sim-0 login: ")
	})
}

func TestPowerOffAndHalt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		d, tm := bootToShell(t, Options{}, nil)
		tm.send("poweroff\r")
		tm.expect("reboot: Power down\r\n")
		time.Sleep(time.Hour)
		synctest.Wait()
		if rest := tm.unread(); rest != "" {
			t.Errorf("a powered-down board printed %q", rest)
		}
		// The PDU still feeds it: the power is on and draws little.
		r, err := d.ReadPower(ctx)
		if d.PowerState() != PowerStateOn || err != nil || r.Watts != ampsHalted*supplyVolts {
			t.Errorf("after poweroff: power %s, reading %+v, %v", d.PowerState(), r, err)
		}
		if err := d.Reset(ctx); err != nil {
			t.Fatal(err)
		}
		tm.login()
		tm.send("halt\r")
		tm.expect("reboot: System halted\r\n")
	})
}
