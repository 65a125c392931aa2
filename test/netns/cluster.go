package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ErrNotPermitted means this machine does not let the process create
// network namespaces (not root, no CAP_NET_ADMIN/CAP_SYS_ADMIN, or the
// kernel refuses). Setup turns it into t.Skip; every other error fails.
var ErrNotPermitted = errors.New("netns: creating network namespaces is not permitted here")

// Host is one simulated machine: a network namespace with its own UTS
// namespace (hostname), address and sshd.
type Host struct {
	Name    string // "host1", "host2", ...: hostname inside, ssh alias in SSHConfig, /etc/hosts name inside every host
	NS      string // network namespace, for ip netns exec / ip -n
	Addr    string // IPv4 address in 198.18.0.0/15, e.g. "198.18.0.11"
	SSHPort int    // sshd port on Addr (22 unless WithSSHPort)
	Veth    string // root-side veth on the bridge; Disconnect sets it down
}

// Cluster is a set of hosts on one bridge in the root namespace. The root
// namespace (where the test and gorun run) has RootAddr on the bridge, so
// it reaches every host and every host reaches it back. Hosts have no
// route beyond the /24.
type Cluster struct {
	Hosts    []Host
	Bridge   string       // bridge interface in the root namespace, e.g. "gvn0-br"
	RootAddr string       // root namespace address on Bridge, e.g. "198.18.0.1"
	Prefix   netip.Prefix // the cluster's /24, e.g. 198.18.0.0/24
	Dir      string       // state directory (keys, configs, logs); removed by Close

	KeyFile    string // private key authorised as root on every host (ssh -i)
	KnownHosts string // known_hosts with every host's key under its name and address
	SSHConfig  string // ssh_config for ssh -F: host aliases, key, known hosts, BatchMode

	slot    int
	owner   string // content of the slot's owner file: only its owner tears it down
	tools   *tools
	spawner *spawner

	mu        sync.Mutex
	sshd      []*daemon // nil while stopped
	closeOnce sync.Once
	closeErr  error
}

type config struct {
	sshPort int
}

// Option configures New and Setup.
type Option func(*config)

// WithSSHPort makes every sshd listen on port instead of 22.
func WithSSHPort(port int) Option { return func(c *config) { c.sshPort = port } }

// Setup creates a cluster of n hosts for the test and closes it with
// t.Cleanup. It skips the test when the machine forbids namespaces and
// fails it on any other error.
func Setup(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := New(ctx, n, opts...)
	if errors.Is(err, ErrNotPermitted) {
		t.Skipf("skipping multi-host test: %v", err)
	}
	if err != nil {
		t.Fatalf("netns.Setup(%d hosts): %v", n, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i, h := range c.Hosts {
				t.Logf("sshd log of %s (%s):\n%s", h.Name, h.Addr, c.SSHDLog(i))
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("netns cleanup: %v", err)
		}
	})
	return c
}

// New creates n hosts (1..200): namespaces, bridge, veths, keys, configs and
// a running sshd per host. The caller must Close the cluster. Leftovers of
// crashed earlier runs are removed first.
func New(ctx context.Context, n int, opts ...Option) (*Cluster, error) {
	cfg := config{sshPort: 22}
	for _, o := range opts {
		o(&cfg)
	}
	if n < 1 || n > maxHosts {
		return nil, fmt.Errorf("netns: host count %d out of range 1..%d", n, maxHosts)
	}
	if cfg.sshPort < 1 || cfg.sshPort > 65535 {
		return nil, fmt.Errorf("netns: ssh port %d out of range 1..65535", cfg.sshPort)
	}
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	t, err := findTools()
	if err != nil {
		return nil, err
	}
	unlock, err := lockMachine(ctx)
	if err != nil {
		return nil, err
	}
	// A sweep failure only matters if it leaves no free slot; claim says so.
	sweepErr := sweep(ctx, t)
	slot, own, err := claim()
	unlock()
	if err != nil {
		return nil, errors.Join(err, sweepErr)
	}
	c := newCluster(slot, n, cfg, t)
	c.owner = own
	c.spawner = newSpawner()
	if err := c.build(ctx); err != nil {
		if cerr := c.Close(); cerr != nil {
			err = fmt.Errorf("%w (and cleanup failed: %v)", err, cerr)
		}
		return nil, err
	}
	return c, nil
}

func newCluster(slot, n int, cfg config, t *tools) *Cluster {
	base := slotName(slot)
	c := &Cluster{
		Bridge:   base + "-br",
		RootAddr: slotAddr(slot, 1),
		Prefix:   slotPrefix(slot),
		Dir:      filepath.Join(stateRoot, base),
		slot:     slot,
		tools:    t,
		sshd:     make([]*daemon, n),
	}
	c.KeyFile = filepath.Join(c.Dir, "id_ed25519")
	c.KnownHosts = filepath.Join(c.Dir, "known_hosts")
	c.SSHConfig = filepath.Join(c.Dir, "ssh_config")
	for i := 0; i < n; i++ {
		name := "host" + strconv.Itoa(i+1)
		c.Hosts = append(c.Hosts, Host{
			Name:    name,
			NS:      base + "-" + name,
			Addr:    slotAddr(slot, 10+i+1),
			SSHPort: cfg.sshPort,
			Veth:    base + "-h" + strconv.Itoa(i+1),
		})
	}
	return c
}

func (c *Cluster) hostDir(i int) string { return filepath.Join(c.Dir, c.Hosts[i].Name) }
func (c *Cluster) utsFile(i int) string { return filepath.Join(c.Dir, "uts-"+c.Hosts[i].Name) }

// build creates everything after the slot is claimed; Close undoes any part.
func (c *Cluster) build(ctx context.Context) error {
	// sshd refuses to start without its privilege separation directory,
	// which a machine that never ran the system sshd may lack.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return fmt.Errorf("netns: creating /run/sshd: %w", err)
	}
	pub, err := c.tools.keygen(ctx, c.KeyFile, "gorovod-netns-test")
	if err != nil {
		return err
	}
	authorized := filepath.Join(c.Dir, "authorized_keys")
	if err := os.WriteFile(authorized, []byte(pub+"\n"), 0o600); err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	for _, s := range c.networkSteps() {
		if err := c.ip(ctx, s...); err != nil {
			return err
		}
	}
	var known strings.Builder
	for i := range c.Hosts {
		line, err := c.configureHost(ctx, i, authorized)
		if err != nil {
			return err
		}
		known.WriteString(line)
	}
	if err := os.WriteFile(c.KnownHosts, []byte(known.String()), 0o600); err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	if err := os.WriteFile(c.SSHConfig, []byte(sshConfig(c)), 0o600); err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.Hosts {
		d, err := c.startSSHD(ctx, i)
		if err != nil {
			return err
		}
		c.sshd[i] = d
	}
	return nil
}

// ip runs ip(8) with args; a refusal for lack of privilege is
// ErrNotPermitted.
func (c *Cluster) ip(ctx context.Context, args ...string) error {
	out, err := c.tools.ip(ctx, args...)
	if err != nil {
		err = fmt.Errorf("netns: ip %s: %w: %s", strings.Join(args, " "), err, out)
		if bytes.Contains(out, []byte("Operation not permitted")) {
			err = fmt.Errorf("%w: %w", ErrNotPermitted, err)
		}
	}
	return err
}

// networkSteps are the ip(8) commands that build the network: the bridge
// with the root address, then per host a namespace joined to the bridge by
// a veth whose inside end is eth0 with the host's address.
func (c *Cluster) networkSteps() [][]string {
	steps := [][]string{
		{"link", "add", c.Bridge, "type", "bridge"},
		{"addr", "add", c.RootAddr + "/24", "dev", c.Bridge},
		{"link", "set", c.Bridge, "up"},
	}
	for _, h := range c.Hosts {
		steps = append(steps,
			[]string{"netns", "add", h.NS},
			[]string{"link", "add", h.Veth, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
			[]string{"link", "set", h.Veth, "master", c.Bridge, "up"},
			[]string{"-n", h.NS, "addr", "add", h.Addr + "/24", "dev", "eth0"},
			[]string{"-n", h.NS, "link", "set", "eth0", "up"},
			[]string{"-n", h.NS, "link", "set", "lo", "up"},
		)
	}
	return steps
}

// configureHost writes host i's sshd key and config, its /etc/hosts and
// its UTS namespace (hostname); it returns the host's known_hosts line.
func (c *Cluster) configureHost(ctx context.Context, i int, authorized string) (string, error) {
	h := c.Hosts[i]
	dir := c.hostDir(i)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("netns: %w", err)
	}
	hostPub, err := c.tools.keygen(ctx, filepath.Join(dir, "ssh_host_ed25519_key"), h.Name)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(sshdConfig(h, dir, authorized)), 0o600); err != nil {
		return "", fmt.Errorf("netns: %w", err)
	}
	etc := filepath.Join(etcNetns, h.NS)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return "", fmt.Errorf("netns: %w", err)
	}
	if err := os.WriteFile(filepath.Join(etc, "hosts"), []byte(hostsFile(c)), 0o644); err != nil {
		return "", fmt.Errorf("netns: %w", err)
	}
	// A persistent UTS namespace (bind-mounted on the file) gives the
	// host its own hostname for sshd, its sessions and Command alike.
	uts := c.utsFile(i)
	if err := os.WriteFile(uts, nil, 0o600); err != nil {
		return "", fmt.Errorf("netns: %w", err)
	}
	if out, err := exec.CommandContext(ctx, c.tools.unshare, "--uts="+uts, "hostname", h.Name).CombinedOutput(); err != nil {
		return "", fmt.Errorf("netns: %s: creating UTS namespace: %w: %s", h.Name, err, out)
	}
	return knownHostsLine(h, hostPub), nil
}

// Close stops every sshd, kills every process left in the namespaces and
// deletes namespaces, links, the bridge and Dir. It is idempotent.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		var errs []error
		c.mu.Lock()
		for i, d := range c.sshd {
			if d != nil {
				if err := d.stop(); err != nil {
					errs = append(errs, fmt.Errorf("stopping sshd of %s: %w", c.Hosts[i].Name, err))
				}
				c.sshd[i] = nil
			}
		}
		c.mu.Unlock()
		c.spawner.close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// A slot whose owner file is no longer ours was swept and maybe
		// reclaimed (only if this process looked dead): not ours to remove.
		if ownerOf(c.slot) == c.owner {
			if err := teardown(ctx, c.tools, c.slot); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			c.closeErr = fmt.Errorf("netns: closing cluster %s: %w", c.Bridge, errors.Join(errs...))
		}
	})
	return c.closeErr
}

func (c *Cluster) host(i int) (Host, error) {
	if i < 0 || i >= len(c.Hosts) {
		return Host{}, fmt.Errorf("netns: host index %d out of range 0..%d", i, len(c.Hosts)-1)
	}
	return c.Hosts[i], nil
}

// SSHArgs are the ssh options that reach the hosts by name ("host1") or by
// address without prompts: ["-F", SSHConfig]. The config names the key,
// the known_hosts file (strict checking on), user root and BatchMode.
func (c *Cluster) SSHArgs() []string { return []string{"-F", c.SSHConfig} }

// SSHCommand returns "ssh -F SSHConfig hostN remote..." run from the root
// namespace. As with ssh, the remote words are joined by spaces and run by
// the remote shell.
func (c *Cluster) SSHCommand(ctx context.Context, i int, remote ...string) *exec.Cmd {
	h, err := c.host(i)
	cmd := exec.CommandContext(ctx, "ssh", append(append(c.SSHArgs(), h.Name), remote...)...)
	if err != nil {
		cmd.Err = err // Start and Run report it
	}
	return cmd
}

// Command returns a command that runs name inside host i (its network and
// UTS namespaces, and its /etc/hosts), without ssh. The filesystem is the
// machine's, so any binary the test built is runnable at the same path.
func (c *Cluster) Command(ctx context.Context, i int, name string, args ...string) *exec.Cmd {
	h, err := c.host(i)
	utsArg := "--uts"
	if err == nil {
		utsArg += "=" + c.utsFile(i)
	}
	cmd := exec.CommandContext(ctx, c.tools.ipPath, append([]string{"netns", "exec", h.NS,
		c.tools.nsenter, utsArg, "--", name}, args...)...)
	if err != nil {
		cmd.Err = err
	}
	return cmd
}

// Run runs name inside host i and returns its combined output; a failure
// names the host and the command and includes the output.
func (c *Cluster) Run(ctx context.Context, i int, name string, args ...string) ([]byte, error) {
	out, err := c.Command(ctx, i, name, args...).CombinedOutput()
	if err != nil {
		who := strconv.Itoa(i)
		if i >= 0 && i < len(c.Hosts) {
			who = c.Hosts[i].Name
		}
		return out, fmt.Errorf("netns: on %s: %s %s: %w: %s", who, name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Processes returns the pids of live processes inside host i whose command
// line (arguments joined by spaces, as pgrep -f sees it) matches the
// regular expression pattern.
func (c *Cluster) Processes(i int, pattern string) ([]int, error) {
	h, err := c.host(i)
	if err != nil {
		return nil, err
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("netns: process pattern: %w", err)
	}
	id, err := statNS(filepath.Join(netnsRun, h.NS))
	if err != nil {
		return nil, fmt.Errorf("netns: namespace of %s: %w", h.Name, err)
	}
	return matching(pidsIn(id), re), nil
}

// AwaitProcesses polls host i until exactly want live processes match
// pattern (as in Processes) and returns their pids; want 0 waits until none
// is left. A process just started may still be exec'ing through ip netns
// exec and nsenter, so checks right after Start should use this.
func (c *Cluster) AwaitProcesses(ctx context.Context, i int, pattern string, want int) ([]int, error) {
	for {
		pids, err := c.Processes(i, pattern)
		if err != nil || len(pids) == want {
			return pids, err
		}
		select {
		case <-ctx.Done():
			return pids, fmt.Errorf("netns: on %s: %d processes match %q, want %d: %w", c.Hosts[i].Name, len(pids), pattern, want, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// StopSSHD stops host i's sshd, so new ssh connections to it are refused
// at once ("Connection refused"). Sessions already open keep running.
// Stopping a stopped sshd is a no-op.
func (c *Cluster) StopSSHD(i int) error {
	if _, err := c.host(i); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	d := c.sshd[i]
	if d == nil {
		return nil
	}
	c.sshd[i] = nil
	if err := d.stop(); err != nil {
		return fmt.Errorf("netns: stopping sshd of %s: %w", c.Hosts[i].Name, err)
	}
	return nil
}

// StartSSHD restarts host i's sshd after StopSSHD and waits until it
// answers. Starting a running sshd is a no-op.
func (c *Cluster) StartSSHD(ctx context.Context, i int) error {
	if _, err := c.host(i); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sshd[i] != nil {
		return nil
	}
	d, err := c.startSSHD(ctx, i)
	if err != nil {
		return err
	}
	c.sshd[i] = d
	return nil
}

// Disconnect takes host i's link to the bridge down: packets to and from
// it are dropped (connections time out rather than being refused), as when
// a machine drops off the network. Reconnect undoes it.
func (c *Cluster) Disconnect(i int) error { return c.setLink(i, "down") }

// Reconnect brings host i's link back up after Disconnect.
func (c *Cluster) Reconnect(i int) error { return c.setLink(i, "up") }

func (c *Cluster) setLink(i int, state string) error {
	h, err := c.host(i)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := c.tools.ip(ctx, "link", "set", h.Veth, state); err != nil {
		return fmt.Errorf("netns: setting link of %s %s: %w: %s", h.Name, state, err, out)
	}
	return nil
}

// HostsFlag is a gorun -H value naming every host by address with slots
// slots each, e.g. "198.18.0.11:2,198.18.0.12:2". slots <= 0 omits the
// count.
func (c *Cluster) HostsFlag(slots int) string {
	return c.hostsFlag(slots, func(h Host) string { return h.Addr })
}

// HostNamesFlag is HostsFlag by name: "host1:2,host2:2". The names resolve
// through SSHConfig (ssh -F) and, inside the hosts, through /etc/hosts; not
// in the root namespace's resolver.
func (c *Cluster) HostNamesFlag(slots int) string {
	return c.hostsFlag(slots, func(h Host) string { return h.Name })
}

func (c *Cluster) hostsFlag(slots int, name func(Host) string) string {
	parts := make([]string, len(c.Hosts))
	for i, h := range c.Hosts {
		parts[i] = name(h)
		if slots > 0 {
			parts[i] += ":" + strconv.Itoa(slots)
		}
	}
	return strings.Join(parts, ",")
}

// SSHDLog returns host i's sshd log (sshd -e output), for failure reports.
func (c *Cluster) SSHDLog(i int) string {
	if _, err := c.host(i); err != nil {
		return err.Error()
	}
	b, err := os.ReadFile(filepath.Join(c.hostDir(i), "sshd.log"))
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}
