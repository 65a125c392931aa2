package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
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
	cmd := exec.CommandContext(ctx, gorunBin, "-np", "2", "sh", "-c", `echo "progress=$GOROVOD_PROGRESS"; [ "$RANK" = 1 ] && exit 3; exit 0`)
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
