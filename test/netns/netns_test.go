package netns

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// checkGoroutines fails t if the goroutine count does not return to base.
func checkGoroutines(t *testing.T, base int) {
	t.Helper()
	n := 0
	for try := 0; try < 200; try++ {
		if n = runtime.NumGoroutine(); n <= base {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	t.Errorf("goroutines: %d after, %d before\n%s", n, base, buf[:runtime.Stack(buf, true)])
}

func TestSSHReachesEveryHost(t *testing.T) {
	t.Parallel()
	c := Setup(t, 3)
	ctx := testCtx(t)
	// Hosts in parallel: an ssh login costs a few hundred ms here.
	t.Run("hosts", func(t *testing.T) {
		for i, h := range c.Hosts {
			t.Run(h.Name, func(t *testing.T) {
				t.Parallel()
				if !c.Prefix.Contains(netip.MustParseAddr(h.Addr)) || !netip.MustParsePrefix("198.18.0.0/15").Contains(netip.MustParseAddr(h.Addr)) {
					t.Errorf("%s address %s outside %s or 198.18.0.0/15", h.Name, h.Addr, c.Prefix)
				}
				// By name through the config, with BatchMode: a prompt would fail.
				out, err := c.SSHCommand(ctx, i, "hostname").CombinedOutput()
				if err != nil || strings.TrimSpace(string(out)) != h.Name {
					t.Errorf("ssh %s hostname = %q, %v; want %q", h.Name, out, err, h.Name)
				}
				// By address, with the key given explicitly as a launcher might.
				args := append(c.SSHArgs(), "-i", c.KeyFile, "root@"+h.Addr, "hostname")
				out, err = exec.CommandContext(ctx, "ssh", args...).CombinedOutput()
				if err != nil || strings.TrimSpace(string(out)) != h.Name {
					t.Errorf("ssh root@%s hostname = %q, %v; want %q", h.Addr, out, err, h.Name)
				}
				out, err = c.Run(ctx, i, "hostname")
				if err != nil || strings.TrimSpace(string(out)) != h.Name {
					t.Errorf("Run(%d, hostname) = %q, %v; want %q", i, out, err, h.Name)
				}
			})
		}
	})
	if hn, err := os.Hostname(); err != nil || slices.ContainsFunc(c.Hosts, func(h Host) bool { return h.Name == hn }) {
		t.Errorf("root namespace hostname %q (%v) must differ from the hosts'", hn, err)
	}
}

func TestHostsReachEachOtherAndTheRoot(t *testing.T) {
	t.Parallel()
	c := Setup(t, 3)
	ctx := testCtx(t)

	// host1 -> host2 over ssh, names resolved by the shared config.
	out, err := c.Run(ctx, 0, "ssh", append(c.SSHArgs(), "host2", "hostname")...)
	if err != nil || strings.TrimSpace(string(out)) != "host2" {
		t.Errorf("ssh host1 -> host2: %q, %v", out, err)
	}
	// host2 -> host3 by plain TCP, name resolved by the host's /etc/hosts.
	out, err = c.Run(ctx, 1, "bash", "-c", "exec 3<>/dev/tcp/host3/22 && head -c 4 <&3")
	if err != nil || string(out) != "SSH-" {
		t.Errorf("tcp host2 -> host3:22: %q, %v", out, err)
	}
	out, err = c.Run(ctx, 0, "getent", "hosts", "host3")
	if f := strings.Fields(string(out)); err != nil || len(f) < 1 || f[0] != c.Hosts[2].Addr {
		t.Errorf("getent hosts host3 on host1 = %q, %v; want %s", out, err, c.Hosts[2].Addr)
	}

	// Every host -> a listener of the test in the root namespace.
	ln, err := net.Listen("tcp", net.JoinHostPort(c.RootAddr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	for i, h := range c.Hosts {
		for _, target := range []string{c.RootAddr, "launcher"} {
			cmd := c.Command(ctx, i, "bash", "-c", "echo from-$(hostname) >/dev/tcp/"+target+"/"+port)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			conn, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if werr := cmd.Wait(); werr != nil {
				t.Errorf("%s -> %s:%s: %v", h.Name, target, port, werr)
			}
			if err != nil || line != "from-"+h.Name+"\n" {
				t.Errorf("%s -> %s: got %q, %v", h.Name, target, line, err)
			}
		}
	}
}

// Not parallel: the parallel tests wait until it is done, so their
// goroutines do not disturb its leak check.
func TestCleanupLeavesNothing(t *testing.T) {
	base := runtime.NumGoroutine()
	var c *Cluster
	var local *exec.Cmd
	t.Run("cluster", func(t *testing.T) {
		c = Setup(t, 2)
		ctx := testCtx(t)
		// Leftovers a crashed worker would leave: a daemonised process
		// started over ssh and one started directly.
		if out, err := c.SSHCommand(ctx, 0, "nohup sleep 1001 >/dev/null 2>&1 </dev/null &").CombinedOutput(); err != nil {
			t.Fatalf("ssh nohup sleep: %v: %s", err, out)
		}
		local = c.Command(context.Background(), 1, "sleep", "1002")
		if err := local.Start(); err != nil {
			t.Fatal(err)
		}
		for i, pat := range []string{`^sleep 1001$`, `^sleep 1002$`} {
			if pids, err := c.AwaitProcesses(ctx, i, pat, 1); err != nil {
				t.Fatalf("AwaitProcesses(%d, %q) = %v, %v", i, pat, pids, err)
			}
		}
	})
	if c == nil {
		t.Skip("no cluster: the subtest skipped")
	}
	if local != nil {
		if err := local.Wait(); err == nil {
			t.Error("sleep 1002 inside host2 exited normally; cleanup should have killed it")
		}
	}

	netnsList, err := exec.Command(c.tools.ipPath, "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, netnsList)
	}
	links, err := exec.Command(c.tools.ipPath, "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link show: %v: %s", err, links)
	}
	for _, h := range c.Hosts {
		if strings.Contains(string(netnsList), h.NS) {
			t.Errorf("namespace %s still listed:\n%s", h.NS, netnsList)
		}
		if strings.Contains(string(links), h.Veth+"@") || strings.Contains(string(links), h.Veth+":") {
			t.Errorf("veth %s still present", h.Veth)
		}
		if _, err := os.Stat(filepath.Join(etcNetns, h.NS)); !os.IsNotExist(err) {
			t.Errorf("%s/%s still present (%v)", etcNetns, h.NS, err)
		}
	}
	if strings.Contains(string(links), c.Bridge+":") {
		t.Errorf("bridge %s still present", c.Bridge)
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Errorf("state directory %s still present (%v)", c.Dir, err)
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err != nil || strings.Contains(string(mi), c.Dir) {
		t.Errorf("a mount under %s is left (%v)", c.Dir, err)
	}
	left := matching(allPids(), regexp.MustCompile(regexp.QuoteMeta(c.Dir)+`|^sleep 100[12]$`))
	for _, pid := range left {
		cl, _ := cmdline(pid)
		t.Errorf("process %d %q survived cleanup", pid, cl)
	}
	checkGoroutines(t, base)
}

func allPids() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestStopSSHDRefusesConnections(t *testing.T) {
	t.Parallel()
	c := Setup(t, 2)
	ctx := testCtx(t)
	if err := c.StopSSHD(1); err != nil {
		t.Fatal(err)
	}
	if err := c.StopSSHD(1); err != nil {
		t.Errorf("second StopSSHD: %v", err)
	}
	out, err := c.SSHCommand(ctx, 1, "true").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Connection refused") {
		t.Errorf("ssh to stopped host2: err %v, output %q; want Connection refused", err, out)
	}
	if out, err := c.SSHCommand(ctx, 0, "hostname").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "host1" {
		t.Errorf("ssh host1 after stopping host2's sshd: %q, %v", out, err)
	}
	if err := c.StartSSHD(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if out, err := c.SSHCommand(ctx, 1, "hostname").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "host2" {
		t.Errorf("ssh host2 after StartSSHD: %q, %v", out, err)
	}
}

func TestDisconnectDropsTraffic(t *testing.T) {
	t.Parallel()
	c := Setup(t, 2)
	ctx := testCtx(t)
	addr := net.JoinHostPort(c.Hosts[1].Addr, strconv.Itoa(c.Hosts[1].SSHPort))
	if err := c.Disconnect(1); err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := sshBanner(dctx, addr)
	cancel()
	if err == nil {
		t.Fatalf("reached %s while its link is down", addr)
	}
	if err := c.Reconnect(1); err != nil {
		t.Fatal(err)
	}
	if out, err := c.SSHCommand(ctx, 1, "hostname").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "host2" {
		t.Errorf("ssh host2 after Reconnect: %q, %v", out, err)
	}
}

func TestProcessesFindsSleep(t *testing.T) {
	t.Parallel()
	c := Setup(t, 2)
	ctx := testCtx(t)
	cmd := c.Command(ctx, 0, "sleep", "1003")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	pids, err := c.AwaitProcesses(ctx, 0, `^sleep 1003$`, 1)
	if err != nil || !slices.Equal(pids, []int{cmd.Process.Pid}) {
		t.Errorf("Processes(0) = %v, %v; want [%d]", pids, err, cmd.Process.Pid)
	}
	if pids, err := c.Processes(1, `^sleep 1003$`); err != nil || len(pids) != 0 {
		t.Errorf("Processes(1) = %v, %v; want none (sleep runs on host1)", pids, err)
	}
	if _, err := c.Processes(2, "sleep"); err == nil {
		t.Error("Processes(2) on a 2-host cluster: want an error")
	}
	if _, err := c.Processes(0, "("); err == nil {
		t.Error("Processes with a bad pattern: want an error")
	}
	if err := c.Command(ctx, 5, "true").Run(); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("Command on host 5: %v; want out of range", err)
	}
}

// A cluster whose owner died (a crashed test binary) is removed by the
// next Setup, processes inside included.
func TestSetupSweepsCrashedRun(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	old, err := New(ctx, 1)
	if errors.Is(err, ErrNotPermitted) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	// After the sweep this only stops old's spawner: its slot is no longer
	// its own, even if the new cluster reclaimed the same slot.
	t.Cleanup(func() {
		if err := old.Close(); err != nil {
			t.Errorf("closing the swept cluster: %v", err)
		}
	})
	orphan := old.Command(context.Background(), 0, "sleep", "1004")
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	// Pretend the owner is gone: a pid that exited.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	forged := strconv.Itoa(dead.Process.Pid) + " 1 feed\n"
	if err := os.WriteFile(filepath.Join(old.Dir, "owner"), []byte(forged), 0o600); err != nil {
		t.Fatal(err)
	}

	c := Setup(t, 1)
	if err := orphan.Wait(); err == nil {
		t.Error("sleep in the crashed run's host exited normally; the sweep should have killed it")
	}
	<-old.sshd[0].done // the sweep killed the crashed run's sshd too
	if c.slot == old.slot && ownerOf(c.slot) == old.owner {
		t.Errorf("slot %d reclaimed with the swept cluster's owner line", c.slot)
	}
	if out, err := c.SSHCommand(ctx, 0, "hostname").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "host1" {
		t.Errorf("new cluster after sweep: %q, %v", out, err)
	}
}

func TestConcurrentClustersGetDistinctSubnets(t *testing.T) {
	t.Parallel()
	type res struct {
		c   *Cluster
		err error
	}
	ch := make(chan res, 2)
	for range 2 {
		go func() {
			c, err := New(testCtx(t), 1)
			ch <- res{c, err}
		}()
	}
	var cs []*Cluster
	var skip error
	for range 2 {
		r := <-ch
		if errors.Is(r.err, ErrNotPermitted) {
			skip = r.err
			continue
		}
		if r.err != nil {
			t.Error(r.err)
			continue
		}
		cs = append(cs, r.c)
		t.Cleanup(func() {
			if err := r.c.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	if skip != nil {
		t.Skip(skip)
	}
	if len(cs) != 2 {
		return // failed above
	}
	if cs[0].Prefix == cs[1].Prefix || cs[0].Bridge == cs[1].Bridge || cs[0].Hosts[0].NS == cs[1].Hosts[0].NS {
		t.Errorf("clusters share %s / %s", cs[0].Prefix, cs[0].Bridge)
	}
	ctx := testCtx(t)
	for _, c := range cs {
		if out, err := c.SSHCommand(ctx, 0, "hostname").CombinedOutput(); err != nil {
			t.Errorf("ssh into %s: %v: %s", c.Bridge, err, out)
		}
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		slot int
		want string
	}{{0, "198.18.0.0/24"}, {255, "198.18.255.0/24"}, {256, "198.19.0.0/24"}, {511, "198.19.255.0/24"}} {
		if got := slotPrefix(tc.slot).String(); got != tc.want {
			t.Errorf("slotPrefix(%d) = %s, want %s", tc.slot, got, tc.want)
		}
	}
	for name, want := range map[string]int{"gvn0-br": 0, "gvn12-host3": 12, "gvn511": 511, "gvn7-h1": 7} {
		if got, ok := parseSlot(name); !ok || got != want {
			t.Errorf("parseSlot(%q) = %d, %v; want %d", name, got, ok, want)
		}
	}
	for _, name := range []string{"gvn", "gvn-br", "gvn512-br", "gvn01-br", "eth0", "gvnx-br"} {
		if s, ok := parseSlot(name); ok {
			t.Errorf("parseSlot(%q) = %d; want not ours", name, s)
		}
	}
	h := Host{Name: "host1", Addr: "198.18.0.11", SSHPort: 2222}
	if got, want := knownHostsLine(h, "ssh-ed25519 AAAA host1"), "[host1]:2222,[198.18.0.11]:2222 ssh-ed25519 AAAA\n"; got != want {
		t.Errorf("knownHostsLine = %q, want %q", got, want)
	}
	c := newCluster(3, 3, config{sshPort: 22}, &tools{})
	if got, want := c.HostsFlag(2), "198.18.3.11:2,198.18.3.12:2,198.18.3.13:2"; got != want {
		t.Errorf("HostsFlag = %q, want %q", got, want)
	}
	if got, want := c.HostNamesFlag(0), "host1,host2,host3"; got != want {
		t.Errorf("HostNamesFlag = %q, want %q", got, want)
	}
	if c.RootAddr != "198.18.3.1" || c.Bridge != "gvn3-br" || c.Hosts[2].NS != "gvn3-host3" || c.Hosts[2].Veth != "gvn3-h3" {
		t.Errorf("names: %+v", c)
	}
}
