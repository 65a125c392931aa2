package launch

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeSSH writes an ssh stand-in that skips the options, takes the host
// after "--" and runs the remote command with sh on this machine, as sshd
// would (SSH_CONNECTION set). Host "down" fails like a refused connection.
func fakeSSH(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fake-ssh")
	script := `#!/bin/sh
while [ "$1" != "--" ]; do shift; done
host=$2
if [ "$host" = down ]; then
	echo "ssh: connect to host $host port 22: Connection refused" >&2
	exit 255
fi
SSH_CONNECTION="127.0.0.1 50000 127.0.0.1 22" exec sh -c "$3"
`
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func newTestSSH(t *testing.T) (*SSH, *Local) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	l := NewLocal()
	return &SSH{Config: SSHConfig{Program: fakeSSH(t)}, Forker: l, RemoteGorun: self, KillGracePeriod: time.Second}, l
}

func TestSSHSpawner(t *testing.T) {
	checkNoLeaks(t)
	s, l := newTestSSH(t)
	defer l.Close()
	dir := t.TempDir()
	start := func(argv ...string) (Proc, *lockedBuffer, *lockedBuffer) {
		t.Helper()
		var out, errOut lockedBuffer
		p, err := s.Start(context.Background(), ProcSpec{Rank: 3, Host: "node3", Argv: argv, Env: []string{"FOO=bar baz", "GOROVOD_RANK=3"}, Dir: dir, Stdout: &out, Stderr: &errOut})
		if err != nil {
			t.Fatal(err)
		}
		return p, &out, &errOut
	}

	t.Run("EnvDirOutputAndExitCode", func(t *testing.T) {
		p, out, errOut := start("sh", "-c", `echo "$FOO|$GOROVOD_RANK|$(pwd)"; echo oops >&2; printf partial >&2; exit 3`)
		st := p.Wait()
		if st.Code != 3 || st.Signal != 0 || st.Err != nil {
			t.Errorf("status %+v, want exit code 3", st)
		}
		if got, want := out.String(), "bar baz|3|"+dir+"\n"; got != want {
			t.Errorf("stdout %q, want %q", got, want)
		}
		if got := errOut.String(); got != "oops\npartial" {
			t.Errorf("stderr %q: control lines must be taken out, output kept", got)
		}
	})

	t.Run("KilledBySignalIsReportedAsSuch", func(t *testing.T) {
		p, _, _ := start("sh", "-c", `kill -KILL $$`)
		if st := p.Wait(); st.Signal != syscall.SIGKILL {
			t.Errorf("status %+v, want SIGKILL", st)
		}
	})

	t.Run("SignalReachesTheWorkerGroup", func(t *testing.T) {
		p, out, _ := start("sh", "-c", `sleep 60 & echo $!; wait`)
		child := waitForLine(t, out)
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		st := p.Wait()
		if st.Signal != syscall.SIGTERM {
			t.Errorf("status %+v, want SIGTERM", st)
		}
		waitGone(t, child)
		if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
			t.Errorf("Signal after Wait: %v", err)
		}
	})

	t.Run("MissingProgram", func(t *testing.T) {
		p, _, errOut := start("surely-not-a-program-xyz")
		st := p.Wait()
		if st.Code != 127 || !strings.Contains(errOut.String(), "rank 3 on ") || !strings.Contains(errOut.String(), "surely-not-a-program-xyz: not found in PATH") {
			t.Errorf("status %+v, stderr %q", st, errOut.String())
		}
	})

	t.Run("HandshakeSlotsPerHost", func(t *testing.T) {
		// One slot: the second start to a host waits until the first
		// worker runs; a failed connection gives its slot back before
		// anyone waits for it.
		s2 := &SSH{Config: s.Config, Forker: l, RemoteGorun: s.RemoteGorun, HandshakesPerHost: 1}
		var procs []Proc
		for i := 0; i < 3; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			p, err := s2.Start(ctx, ProcSpec{Rank: i, Host: "down", Argv: []string{"true"}})
			cancel()
			if err != nil {
				t.Fatalf("start %d: %v", i, err)
			}
			procs = append(procs, p)
		}
		var out lockedBuffer
		p, err := s2.Start(context.Background(), ProcSpec{Rank: 3, Host: "up", Argv: []string{"sleep", "60"}, Stdout: &out})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p2, err := s2.Start(ctx, ProcSpec{Rank: 4, Host: "up", Argv: []string{"true"}})
		if err != nil {
			t.Fatalf("second start to a host whose first worker runs: %v", err)
		}
		procs = append(procs, p, p2)
		_ = p.Signal(syscall.SIGKILL)
		for _, p := range procs {
			p.Wait()
		}
	})

	t.Run("ConnectionFailure", func(t *testing.T) {
		var errOut lockedBuffer
		p, err := s.Start(context.Background(), ProcSpec{Rank: 1, Host: "down", Argv: []string{"true"}, Stderr: &errOut})
		if err != nil {
			t.Fatal(err)
		}
		st := p.Wait()
		if !errors.Is(st.Err, ErrRemote) || st.ExitCode() == 0 || !strings.Contains(st.String(), "is lost: ssh to down failed") {
			t.Errorf("status %+v (%s)", st, st)
		}
		if !strings.Contains(errOut.String(), "Connection refused") {
			t.Errorf("ssh's own message should reach the output: %q", errOut.String())
		}
	})
}

// waitForLine waits (bounded) for the first line of out and parses it as a pid.
func waitForLine(t *testing.T, out *lockedBuffer) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "\n") {
		if time.Now().After(deadline) {
			t.Fatalf("no output line: %q", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(out.String(), "\n", 2)[0]))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestRemoteExecKillsWorkerWhenLauncherGoes runs the wrapper as sshd would
// and closes its stdin, as happens when the launcher or its ssh dies.
func TestRemoteExecKillsWorkerWhenLauncherGoes(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, RemoteExecFlag)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The worker ignores SIGTERM, so only the SIGKILL after the grace ends it.
	req := `{"rank":0,"argv":["sh","-c","trap '' TERM; sleep 60 & echo $!; wait"],"grace":"200ms"}` + "\n"
	if _, err := stdin.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	child := waitForLine(t, &out)
	stdin.Close()
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 128+int(syscall.SIGKILL) {
		t.Errorf("wrapper: %v, want exit code 137; stderr %q", err, errOut.String())
	}
	if !strings.Contains(errOut.String(), controlMark+"exit signal 9\n") {
		t.Errorf("no exit report on stderr: %q", errOut.String())
	}
	waitGone(t, child)
}

// TestRemoteExecStopsWorkerWhenLauncherFallsSilent covers a network cut
// that sshd does not notice: stdin stays open but no ping arrives.
func TestRemoteExecStopsWorkerWhenLauncherFallsSilent(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, RemoteExecFlag)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	var out, errOut lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	req := `{"rank":2,"argv":["sh","-c","sleep 60 & echo $!; wait"],"grace":"1s","silence":"300ms"}` + "\n"
	if _, err := stdin.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	child := waitForLine(t, &out)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 128+int(syscall.SIGTERM) {
		t.Errorf("wrapper: %v, want exit code 143; stderr %q", err, errOut.String())
	}
	if !strings.Contains(errOut.String(), "rank 2 on ") || !strings.Contains(errOut.String(), "no word from the launcher for 300ms") {
		t.Errorf("stderr %q", errOut.String())
	}
	waitGone(t, child)
}

func TestControlFilter(t *testing.T) {
	in := "a\x1eb\n" + controlMark + "pid 12\nout" + controlMark + "exit code 3\n\x1egorovod-re"
	wantOut := "a\x1eb\nout\x1egorovod-re"
	wantCtl := []string{"pid 12", "exit code 3"}
	for split := 0; split <= len(in); split++ {
		for _, step := range []int{1, 2, 7, len(in)} {
			var got lockedBuffer
			var ctl []string
			f := &controlFilter{w: &got, onControl: func(s string) { ctl = append(ctl, s) }}
			_, _ = f.Write([]byte(in[:split]))
			for rest := in[split:]; rest != ""; {
				n := min(step, len(rest))
				_, _ = f.Write([]byte(rest[:n]))
				rest = rest[n:]
			}
			f.Flush()
			if got.String() != wantOut || !reflect.DeepEqual(ctl, wantCtl) {
				t.Fatalf("split %d step %d: out %q ctl %q", split, step, got.String(), ctl)
			}
		}
	}
}

func TestShellQuoteAndSplitArgs(t *testing.T) {
	words := []string{"plain", "", "with space", "it's", `dq"bs\`, "$HOME", "a\nb", "-F", "/p/a-b_c.d=1,2:3@x"}
	var quoted []string
	for _, w := range words {
		quoted = append(quoted, ShellQuote(w))
	}
	out, err := exec.Command("sh", "-c", "for a in "+strings.Join(quoted, " ")+`; do printf '%s\0' "$a"; done`).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00"); !reflect.DeepEqual(got, words) {
		t.Errorf("sh read back %q, want %q", got, words)
	}
	if got, err := SplitArgs(strings.Join(quoted, " ")); err != nil || !reflect.DeepEqual(got, words) {
		t.Errorf("SplitArgs of quoted words = %q, %v", got, err)
	}
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{"", nil, ""},
		{"  -F  /tmp/cfg\t-o 'ProxyJump=a b' ", []string{"-F", "/tmp/cfg", "-o", "ProxyJump=a b"}, ""},
		{`-o "X=\"q\"" a\ b`, []string{"-o", `X="q"`, "a b"}, ""},
		{"-o 'open", nil, "unterminated '"},
		{`-o "open`, nil, `unterminated "`},
		{`end\`, nil, "trailing backslash"},
	} {
		got, err := SplitArgs(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("SplitArgs(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("SplitArgs(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestSSHConfigArgs(t *testing.T) {
	c := SSHConfig{Port: 2222, IdentityFile: "/k", ExtraArgs: []string{"-F", "/cfg", "-o", "ConnectTimeout=3"}}
	got := strings.Join(c.Args("user@h", "cmd"), " ")
	want := "ssh -o BatchMode=yes -p 2222 -i /k -F /cfg -o ConnectTimeout=3 -o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=3 -T -- user@h cmd"
	if got != want {
		t.Errorf("Args = %q\nwant   %q", got, want)
	}
}

func TestPreflight(t *testing.T) {
	checkNoLeaks(t)
	s, l := newTestSSH(t)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := s.Preflight(ctx, []string{"n1", "n2"}, nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if r := res["n2"]; r.LauncherAddr != "127.0.0.1" || r.BindAddr != "127.0.0.1" || r.Host != "n2" {
		t.Errorf("n2: %+v", r)
	}
	// The host offers a port free on its bind address (MASTER_PORT).
	if p := res["n2"].FreePort; p < 1 || p > 65535 {
		t.Errorf("n2: free port %d", p)
	}

	_, err = s.Preflight(ctx, []string{"n1", "down", "n3"}, nil, "/surely/not/a/dir")
	var pe *PreflightError
	if !errors.As(err, &pe) || !errors.Is(err, ErrUnreachable) || len(pe.Hosts) != 3 {
		t.Fatalf("want 3 failed hosts, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"3 of 3 hosts failed the ssh check; no worker was started",
		"\n  down: ssh: connect to host down port 22: Connection refused",
		"\n  n1: working directory /surely/not/a/dir does not exist here",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Index(msg, "  n1:") > strings.Index(msg, "  down:") || strings.Index(msg, "  down:") > strings.Index(msg, "  n3:") {
		t.Errorf("hosts not in the order given:\n%s", msg)
	}

	_, err = s.Preflight(ctx, []string{"n1"}, []string{"nosuchif0"}, "")
	if err == nil || !strings.Contains(err.Error(), "nosuchif0: no such interface") {
		t.Errorf("missing interface: %v", err)
	}
	if res, err := s.Preflight(ctx, []string{"n1"}, []string{"nosuchif0", "lo"}, ""); err != nil || res["n1"].BindAddr != "127.0.0.1" {
		t.Errorf("interface lo: %+v, %v", res, err)
	}

	s.RemoteGorun = "/surely/not/gorun"
	_, err = s.Preflight(ctx, []string{"n1"}, nil, "")
	if err == nil || !strings.Contains(err.Error(), "gorun is not runnable at /surely/not/gorun") || !strings.Contains(err.Error(), "same path on every host") {
		t.Errorf("missing gorun: %v", err)
	}
}
