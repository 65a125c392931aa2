package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Everything a cluster creates on the machine carries its slot number
// (0..maxClusters-1): the /24 it uses, and names that start with
// "gvn<slot>-". The slot is claimed by creating stateRoot/gvn<slot> with an
// owner file (pid and start time of the claiming process) while holding a
// machine-wide flock, so concurrent test binaries never share a slot and a
// later Setup can tell a crashed run's leftovers (owner gone) from a live one.
const (
	namePrefix  = "gvn"
	stateRoot   = "/run/gorovod-netns"
	lockFile    = stateRoot + "/lock"
	netnsRun    = "/run/netns" // where ip netns keeps its namespace files
	etcNetns    = "/etc/netns" // per-namespace /etc overlays used by ip netns exec
	sysClassNet = "/sys/class/net"
	maxClusters = 512 // /24s in 198.18.0.0/15
	maxHosts    = 200 // host i gets .10+i
)

func slotName(slot int) string { return namePrefix + strconv.Itoa(slot) }

// slotPrefix is the /24 of slot: 198.18.0.0/24 for 0 ... 198.19.255.0/24 for 511.
func slotPrefix(slot int) netip.Prefix {
	a := netip.AddrFrom4([4]byte{198, byte(18 + slot/256), byte(slot % 256), 0})
	return netip.PrefixFrom(a, 24)
}

func slotAddr(slot, last int) string {
	b := slotPrefix(slot).Addr().As4()
	b[3] = byte(last)
	return netip.AddrFrom4(b).String()
}

// parseSlot extracts the slot from a name "gvn<slot>-..." (or exactly
// "gvn<slot>" for state directories); ok is false for names that are not ours.
func parseSlot(name string) (int, bool) {
	rest, found := strings.CutPrefix(name, namePrefix)
	if !found {
		return 0, false
	}
	digits, _, _ := strings.Cut(rest, "-")
	n, err := strconv.Atoi(digits)
	if err != nil || n < 0 || n >= maxClusters || strconv.Itoa(n) != digits {
		return 0, false
	}
	return n, true
}

// lockMachine takes the machine-wide lock that serialises sweeping and slot
// claims between test processes. The returned func releases it.
func lockMachine(ctx context.Context) (func(), error) {
	if err := os.MkdirAll(stateRoot, 0o755); err != nil {
		return nil, fmt.Errorf("netns: creating state directory: %w", err)
	}
	f, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("netns: opening lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing drops the flock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("netns: locking %s: %w", lockFile, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("netns: waiting for %s: %w", lockFile, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// owner identifies a process across pid reuse.
func owner(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// Fields after the parenthesised command name; starttime is field 22.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", fmt.Errorf("netns: malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", fmt.Errorf("netns: short /proc/%d/stat", pid)
	}
	return strconv.Itoa(pid) + " " + f[19], nil
}

// ownerOf returns the owner line of slot ("pid starttime nonce"), or "".
func ownerOf(slot int) string {
	b, err := os.ReadFile(filepath.Join(stateRoot, slotName(slot), "owner"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// ownerAlive reports whether the process that claimed slot still runs.
func ownerAlive(slot int) bool {
	f := strings.Fields(ownerOf(slot))
	if len(f) < 2 {
		return false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return false
	}
	got, err := owner(pid)
	return err == nil && got == f[0]+" "+f[1]
}

// listNames returns the entries of dir that belong to slot (all slots if slot < 0).
func listNames(dir string, slot int) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if s, ok := parseSlot(e.Name()); ok && (slot < 0 || s == slot) {
			out = append(out, e.Name())
		}
	}
	return out
}

// sweep removes the leftovers of every slot whose owner is gone. Call with
// the machine lock held.
func sweep(ctx context.Context, t *tools) error {
	stale := map[int]bool{}
	for _, dir := range []string{stateRoot, netnsRun, sysClassNet, etcNetns} {
		for _, name := range listNames(dir, -1) {
			s, _ := parseSlot(name)
			if _, seen := stale[s]; !seen {
				stale[s] = !ownerAlive(s)
			}
		}
	}
	var errs []error
	for s, dead := range stale {
		if dead {
			if err := teardown(ctx, t, s); err != nil {
				errs = append(errs, fmt.Errorf("removing leftovers of an earlier run (%s): %w", slotName(s), err))
			}
		}
	}
	return errors.Join(errs...)
}

// claim picks a free slot, writes its owner file and returns the slot and
// the owner line. Call with the machine lock held, after sweep.
func claim() (int, string, error) {
	me, err := owner(os.Getpid())
	if err != nil {
		return 0, "", fmt.Errorf("netns: reading own start time: %w", err)
	}
	// The nonce tells this process's clusters apart.
	var nonce [8]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return 0, "", fmt.Errorf("netns: %w", err)
	}
	me += " " + hex.EncodeToString(nonce[:])
	used := rootAddrs()
	for s := 0; s < maxClusters; s++ {
		dir := filepath.Join(stateRoot, slotName(s))
		if _, err := os.Lstat(dir); err == nil {
			continue
		}
		if len(listNames(netnsRun, s))+len(listNames(sysClassNet, s)) > 0 {
			continue // leftovers that sweep could not remove
		}
		if overlaps(used, slotPrefix(s)) {
			continue // the machine already uses this /24 for something else
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			if errors.Is(err, os.ErrExist) {
				continue
			}
			return 0, "", fmt.Errorf("netns: creating %s: %w", dir, err)
		}
		if err := os.WriteFile(filepath.Join(dir, "owner"), []byte(me+"\n"), 0o600); err != nil {
			os.RemoveAll(dir)
			return 0, "", fmt.Errorf("netns: writing owner of %s: %w", dir, err)
		}
		return s, me, nil
	}
	return 0, "", fmt.Errorf("netns: all %d address slots in 198.18.0.0/15 are in use", maxClusters)
}

func rootAddrs() []netip.Prefix {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if p, err := netip.ParsePrefix(n.String()); err == nil {
				out = append(out, p)
			}
		}
	}
	return out
}

func overlaps(used []netip.Prefix, p netip.Prefix) bool {
	for _, u := range used {
		if u.Overlaps(p) {
			return true
		}
	}
	return false
}

// teardown removes everything of slot: processes in its namespaces, the
// namespaces, links, /etc/netns overlays, UTS namespace mounts and finally
// the state directory. The state directory (and so the claim) is kept when
// something could not be removed, so the slot is not reused over leftovers
// and a later sweep retries.
func teardown(ctx context.Context, t *tools, slot int) error {
	var errs []error
	for _, ns := range listNames(netnsRun, slot) {
		if err := killNamespace(ctx, ns); err != nil {
			errs = append(errs, err)
		}
		if out, err := t.ip(ctx, "netns", "delete", ns); err != nil && !notFound(out) {
			errs = append(errs, fmt.Errorf("ip netns delete %s: %w: %s", ns, err, out))
		}
	}
	// Veths first, the bridge last, so no port dangles. A veth whose
	// namespace just died may already be gone.
	bridge := slotName(slot) + "-br"
	links := listNames(sysClassNet, slot)
	sort.SliceStable(links, func(i, j int) bool { return links[j] == bridge && links[i] != bridge })
	for _, l := range links {
		if out, err := t.ip(ctx, "link", "delete", l); err != nil && !notFound(out) {
			errs = append(errs, fmt.Errorf("ip link delete %s: %w: %s", l, err, out))
		}
	}
	for _, d := range listNames(etcNetns, slot) {
		if err := os.RemoveAll(filepath.Join(etcNetns, d)); err != nil {
			errs = append(errs, err)
		}
	}
	dir := filepath.Join(stateRoot, slotName(slot))
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "uts-") {
				p := filepath.Join(dir, e.Name())
				// EINVAL: not a mount point (never mounted or already unmounted).
				if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
					errs = append(errs, fmt.Errorf("unmounting %s: %w", p, err))
				}
			}
		}
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func notFound(out []byte) bool {
	s := string(out)
	return strings.Contains(s, "Cannot find device") || strings.Contains(s, "No such file") ||
		strings.Contains(s, "does not exist") || strings.Contains(s, "No such device")
}
