//go:build linux

package cma

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestReadOwnMemory(t *testing.T) {
	if ok, why := Check(); !ok && !strings.Contains(why, "Yama") {
		t.Skipf("cross-memory attach unavailable here: %s", why)
	}
	src := bytes.Repeat([]byte("0123456789abcdef"), 70000) // crosses many pages
	dst := make([]byte, len(src)-3)
	if err := Read(os.Getpid(), dst, Addr(src)+3); err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(src)
	if !bytes.Equal(dst, src[3:]) {
		t.Fatal("read the wrong bytes")
	}
	if err := Read(os.Getpid(), dst, 8); !errors.Is(err, unix.EFAULT) {
		t.Errorf("read of address 8: %v, want EFAULT", err)
	}
}

func TestGone(t *testing.T) {
	err := Read(1<<22+12345, make([]byte, 8), 4096) // beyond pid_max's default
	if !Gone(err) {
		t.Errorf("read from a pid that does not exist: %v, want ESRCH (Gone)", err)
	}
	if Gone(errors.New("other")) {
		t.Error("Gone(other) = true")
	}
}

func TestCheckYama(t *testing.T) {
	if ok, why := Check(); !ok && !strings.Contains(why, "Yama") {
		t.Skipf("cross-memory attach unavailable here: %s", why)
	}
	defer func(p string) { yamaPath = p }(yamaPath)
	for scope, want := range map[string]bool{"0\n": true, "1\n": false, "2\n": false} {
		yamaPath = filepath.Join(t.TempDir(), "ptrace_scope")
		if err := os.WriteFile(yamaPath, []byte(scope), 0o644); err != nil {
			t.Fatal(err)
		}
		if ok, why := Check(); ok != want || !strings.Contains(why, "ptrace_scope "+strings.TrimSpace(scope)) {
			t.Errorf("scope %q: Check = %v, %q; want %v naming the scope", scope, ok, why, want)
		}
	}
	yamaPath = filepath.Join(t.TempDir(), "missing")
	if ok, why := Check(); !ok || !strings.Contains(why, "no Yama") {
		t.Errorf("no Yama: Check = %v, %q", ok, why)
	}
}
