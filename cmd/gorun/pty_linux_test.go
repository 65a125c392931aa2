package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY returns a pseudo-terminal pair.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Skipf("ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("opening the pty: %v", err)
	}
	return m, s
}

// On a terminal gorun colours its prefixes and level words, and tells the
// workers so (GOROVOD_PROGRESS=tty); through pipes it does neither (the
// other tests: no escape sequence there).
func TestTerminalColorsAndProgressHint(t *testing.T) {
	master, slave := openPTY(t)
	defer master.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Rank 1 fails once rank 0 has printed.
	printed := filepath.Join(t.TempDir(), "printed")
	cmd := exec.CommandContext(ctx, gorunBin, "-np", "2", "sh", "-c", `echo "progress=$GOROVOD_PROGRESS"
if [ "$RANK" = 0 ]; then touch `+printed+`; exit 0; fi
while [ ! -e `+printed+` ]; do sleep 0.01; done; exit 3`)
	env := cleanEnv()
	for i, kv := range env {
		if strings.HasPrefix(kv, "NO_COLOR=") || strings.HasPrefix(kv, "TERM=") {
			env[i] = "GORUN_TEST_UNSET=1"
		}
	}
	cmd.Env = append(env, "TERM=xterm")
	cmd.Stdout, cmd.Stderr = slave, slave
	read := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(master) // ends with EIO once every writer closed the pty
		read <- b
	}()
	err := cmd.Run()
	slave.Close()
	var out []byte
	select {
	case out = <-read:
	case <-ctx.Done():
		t.Fatal("the pty did not close")
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("gorun: %v\n%q", err, out)
	}
	for _, want := range []string{
		"\x1b[32m[0]<stdout>:\x1b[0mprogress=tty", "\x1b[34m[1]<stdout>:\x1b[0mprogress=tty",
		"gorun: \x1b[31merror\x1b[0m: rank 1 (pid ",
	} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("terminal output lacks %q:\n%q", want, out)
		}
	}
}

// On a terminal, a worker's progress bar (a partial line redrawn with \r)
// shows while the worker is still drawing it, before any newline.
func TestTerminalShowsRedrawnLine(t *testing.T) {
	master, slave := openPTY(t)
	defer master.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	flag := filepath.Join(t.TempDir(), "seen")
	cmd := exec.CommandContext(ctx, gorunBin, "-np", "1", "--no-prefix", "sh", "-c",
		`printf 'start\n\r\033[Kstep 1/2'; while [ ! -e `+flag+` ]; do sleep 0.01; done; printf '\r\033[Kall done\n'`)
	cmd.Env = cleanEnv("NO_COLOR=1")
	cmd.Stdout, cmd.Stderr = slave, slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var seen bytes.Buffer
	buf := make([]byte, 4096)
	for !bytes.Contains(seen.Bytes(), []byte("step 1/2")) {
		n, err := master.Read(buf) // bounded: ctx kills gorun, which closes the pty
		seen.Write(buf[:n])
		if err != nil {
			t.Fatalf("the partial line never showed: %v\n%q", err, seen.String())
		}
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(master)
	seen.Write(rest)
	if err := <-done; err != nil {
		t.Fatalf("gorun: %v\n%q", err, seen.String())
	}
	// The tty turns \n into \r\n. (Were the bar read in two pieces, its
	// first piece would show and be cleared first: hence prefix and suffix.)
	if got := seen.String(); !strings.HasPrefix(got, "start\r\n") || !strings.HasSuffix(got, "step 1/2\r\x1b[Kall done\r\n") {
		t.Errorf("terminal got %q, want start, the bar, then all done in its place", got)
	}
}
