//go:build linux

package cma

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Read copies len(dst) bytes at address src of process pid into dst,
// continuing partial reads. Errors wrap the errno (errors.Is(err,
// unix.EPERM), ESRCH for a process that is gone).
func Read(pid int, dst []byte, src uint64) error {
	return each(dst, src, "process_vm_readv", func(l []unix.Iovec, r []unix.RemoteIovec) (int, error) {
		return unix.ProcessVMReadv(pid, l, r, 0)
	})
}

// Write copies src to address dst of process pid (process_vm_writev),
// continuing partial writes; errors as Read's.
func Write(pid int, src []byte, dst uint64) error {
	return each(src, dst, "process_vm_writev", func(l []unix.Iovec, r []unix.RemoteIovec) (int, error) {
		return unix.ProcessVMWritev(pid, l, r, 0)
	})
}

// each runs one cross-memory copy between local b and remote address addr
// until all of b is done, retrying EINTR and continuing partial copies.
func each(b []byte, addr uint64, call string, copyFn func([]unix.Iovec, []unix.RemoteIovec) (int, error)) error {
	for len(b) > 0 {
		local := []unix.Iovec{{Base: &b[0]}}
		local[0].SetLen(len(b))
		remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}
		n, err := copyFn(local, remote)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return os.NewSyscallError(call, err)
		case n <= 0:
			return io.ErrUnexpectedEOF
		}
		b = b[n:]
		addr += uint64(n)
	}
	return nil
}

// Addr is the address of b's first byte, as a peer passes it to Read. Go's
// heap does not move objects; the owner must keep b alive while peers read.
func Addr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }

// Gone reports whether err says the target process no longer exists.
func Gone(err error) bool { return errors.Is(err, unix.ESRCH) }

// yamaPath is where the Yama ptrace policy lives (a variable for tests).
var yamaPath = "/proc/sys/kernel/yama/ptrace_scope"

// Check reports whether this process can use cross-memory attach as far as
// it can tell alone: it reads its own memory through the system call (which
// a container's seccomp filter or a kernel without it refuses) and looks at
// the Yama ptrace policy, which decides whether sibling workers may read
// each other.
func Check() (ok bool, detail string) {
	want := []byte("gorovod cma check")
	got := make([]byte, len(want))
	err := Read(os.Getpid(), got, Addr(want))
	runtime.KeepAlive(want)
	switch {
	case err != nil:
		return false, fmt.Sprintf("process_vm_readv refused: %v", err)
	case !bytes.Equal(got, want):
		return false, "process_vm_readv returned the wrong bytes"
	}
	b, err := os.ReadFile(yamaPath)
	if err != nil {
		return true, "process_vm_readv ok, no Yama ptrace policy"
	}
	switch scope := strings.TrimSpace(string(b)); scope {
	case "0":
		return true, "process_vm_readv ok, Yama ptrace_scope 0"
	case "1":
		return false, "Yama ptrace_scope 1: workers may not read each other (sysctl kernel.yama.ptrace_scope=0 allows it); shared-memory slots are used"
	default:
		return false, fmt.Sprintf("Yama ptrace_scope %s forbids it; shared-memory slots are used", scope)
	}
}
