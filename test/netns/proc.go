package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// tools holds the absolute paths of the programs the harness runs.
type tools struct {
	ipPath, sshd, sshKeygen, nsenter, unshare string
}

// findTools looks the programs up in PATH and in the sbin directories, which
// a non-login PATH may lack.
func findTools() (*tools, error) {
	look := func(name, pkg string) (string, error) {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
			p := filepath.Join(dir, name)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				return p, nil
			}
		}
		return "", fmt.Errorf("netns: %s not found; install the Debian package %s (scripts/deps.sh test does)", name, pkg)
	}
	var t tools
	var errs []error
	for _, x := range []struct {
		dst       *string
		name, pkg string
	}{
		{&t.ipPath, "ip", "iproute2"},
		{&t.sshd, "sshd", "openssh-server"},
		{&t.sshKeygen, "ssh-keygen", "openssh-client"},
		{&t.nsenter, "nsenter", "util-linux"},
		{&t.unshare, "unshare", "util-linux"},
	} {
		p, err := look(x.name, x.pkg)
		*x.dst = p
		errs = append(errs, err)
	}
	return &t, errors.Join(errs...)
}

// ip runs the ip command and returns its combined output.
func (t *tools) ip(ctx context.Context, args ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, t.ipPath, args...).CombinedOutput()
	return bytes.TrimSpace(out), err
}

// nsID identifies a network namespace by the device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

func statNS(path string) (nsID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

// pidsIn lists the live processes whose network namespace is id; exited
// processes (zombies) have no namespace any more and are not listed.
func pidsIn(id nsID) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if got, err := statNS(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && got == id {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids
}

// killNamespace SIGKILLs every process in namespace ns until none is left,
// repeating because processes may fork while being killed.
func killNamespace(ctx context.Context, ns string) error {
	id, err := statNS(filepath.Join(netnsRun, ns))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("netns: finding namespace %s: %w", ns, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := pidsIn(id)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("netns: processes %v in namespace %s survive SIGKILL", pids, ns)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL) // ESRCH: gone already
		}
		time.Sleep(5 * time.Millisecond) // let the kernel finish the exits
	}
}

// cmdline returns /proc/pid/cmdline with NULs turned into spaces.
func cmdline(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return "", err
	}
	b = bytes.TrimRight(b, "\x00")
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})), nil
}

// matching returns the pids among pids whose command line matches re.
func matching(pids []int, re *regexp.Regexp) []int {
	var out []int
	for _, pid := range pids {
		cl, err := cmdline(pid)
		if err != nil || cl == "" {
			continue // exited meanwhile, or a kernel thread / zombie
		}
		if re.MatchString(cl) {
			out = append(out, pid)
		}
	}
	return out
}

// checkPrivileges reports ErrNotPermitted when the process cannot create
// namespaces: not root, or missing CAP_NET_ADMIN (links, addresses) or
// CAP_SYS_ADMIN (ip netns add mounts, unshare).
func checkPrivileges() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not running as root (euid %d)", ErrNotPermitted, os.Geteuid())
	}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return fmt.Errorf("netns: reading capabilities: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		hex, ok := strings.CutPrefix(line, "CapEff:")
		if !ok {
			continue
		}
		caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		if err != nil {
			return fmt.Errorf("netns: parsing %q: %w", line, err)
		}
		const capNetAdmin, capSysAdmin = 12, 21
		for _, c := range []struct {
			bit  uint
			name string
		}{{capNetAdmin, "CAP_NET_ADMIN"}, {capSysAdmin, "CAP_SYS_ADMIN"}} {
			if caps&(1<<c.bit) == 0 {
				return fmt.Errorf("%w: root without %s", ErrNotPermitted, c.name)
			}
		}
		return nil
	}
	return fmt.Errorf("netns: no CapEff line in /proc/self/status")
}
