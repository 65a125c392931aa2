package netns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// keygen writes an ed25519 key pair at path and path.pub and returns the
// public key line.
func (t *tools) keygen(ctx context.Context, path, comment string) (string, error) {
	out, err := exec.CommandContext(ctx, t.sshKeygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("netns: ssh-keygen %s: %w: %s", path, err, out)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		return "", fmt.Errorf("netns: reading %s.pub: %w", path, err)
	}
	return strings.TrimSpace(string(pub)), nil
}

// sshdConfig is a self-contained sshd configuration: nothing from
// /etc/ssh is read, so the machine's own sshd settings do not matter.
func sshdConfig(h Host, dir, authorizedKeys string) string {
	return fmt.Sprintf(`# gorovod test host %[1]s (test/netns)
ListenAddress %[2]s
Port %[3]d
HostKey %[4]s/ssh_host_ed25519_key
PidFile %[4]s/sshd.pid
AuthorizedKeysFile %[5]s
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
# gorun may open several sessions per host at once.
MaxStartups 100
MaxSessions 100
LogLevel INFO
`, h.Name, h.Addr, h.SSHPort, dir, authorizedKeys)
}

// sshConfig maps each host name and address to its address and port and
// carries every client option the tests need, so "ssh -F file host1 cmd"
// works with no other option and reads nothing from ~/.ssh or /etc/ssh.
func sshConfig(c *Cluster) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# gorovod test cluster %s (test/netns): use with ssh -F\n", c.Bridge)
	for _, h := range c.Hosts {
		fmt.Fprintf(&b, "Host %s %s\n  HostName %s\n  Port %d\n", h.Name, h.Addr, h.Addr, h.SSHPort)
	}
	fmt.Fprintf(&b, `Host *
  User root
  IdentityFile %s
  IdentitiesOnly yes
  UserKnownHostsFile %s
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  CheckHostIP no
  BatchMode yes
  ConnectTimeout 10
  LogLevel ERROR
`, c.KeyFile, c.KnownHosts)
	return b.String()
}

// knownHostsLine lists a host under its name and its address, in the
// [name]:port form when the port is not 22, as ssh looks it up.
func knownHostsLine(h Host, pub string) string {
	names := []string{h.Name, h.Addr}
	if h.SSHPort != 22 {
		for i, n := range names {
			names[i] = "[" + n + "]:" + strconv.Itoa(h.SSHPort)
		}
	}
	// Drop the comment: known_hosts wants "names type key".
	f := strings.Fields(pub)
	if len(f) > 2 {
		f = f[:2]
	}
	return strings.Join(names, ",") + " " + strings.Join(f, " ") + "\n"
}

// hostsFile is the /etc/hosts seen inside every namespace (ip netns exec
// bind-mounts /etc/netns/<ns>/hosts over /etc/hosts), so a process on one
// host can resolve the others by name. The launcher's address also answers
// to the machine's own hostname, which a launcher may advertise.
func hostsFile(c *Cluster) string {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	root := "launcher"
	if hn, err := os.Hostname(); err == nil && hn != "" && hn != "localhost" {
		root += " " + hn
	}
	fmt.Fprintf(&b, "%s\t%s\n", c.RootAddr, root)
	for _, h := range c.Hosts {
		fmt.Fprintf(&b, "%s\t%s\n", h.Addr, h.Name)
	}
	return b.String()
}

// daemon is one running sshd. Its wait goroutine is owned by the daemon and
// ends when sshd exits; stop makes it exit.
type daemon struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid after done is closed
}

// startSSHD starts sshd in the foreground inside host i's network and UTS
// namespaces and waits until it answers with an SSH banner.
func (c *Cluster) startSSHD(ctx context.Context, i int) (*daemon, error) {
	h := c.Hosts[i]
	dir := c.hostDir(i)
	logf, err := os.OpenFile(filepath.Join(dir, "sshd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("netns: %s: opening sshd log: %w", h.Name, err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(c.tools.ipPath, "netns", "exec", h.NS,
		c.tools.nsenter, "--uts="+c.utsFile(i), "--",
		c.tools.sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test binary dies without cleanup, sshd dies with it; the next
	// Setup's sweep removes the rest. ip and nsenter exec, so this is sshd.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.spawner.start(cmd); err != nil {
		return nil, fmt.Errorf("netns: %s: starting sshd: %w", h.Name, err)
	}
	d := &daemon{cmd: cmd, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	if err := c.waitSSH(ctx, i, d); err != nil {
		d.stop()
		return nil, err
	}
	return d, nil
}

// waitSSH polls host i's ssh port from the root namespace until it sends
// the SSH banner, sshd exits, or ctx ends.
func (c *Cluster) waitSSH(ctx context.Context, i int, d *daemon) error {
	h := c.Hosts[i]
	addr := net.JoinHostPort(h.Addr, strconv.Itoa(h.SSHPort))
	var last error
	for {
		select {
		case <-d.done:
			return fmt.Errorf("netns: %s: sshd exited during start (%v); log:\n%s", h.Name, d.err, c.SSHDLog(i))
		case <-ctx.Done():
			return fmt.Errorf("netns: %s: sshd not answering on %s (last error: %v): %w; log:\n%s", h.Name, addr, last, ctx.Err(), c.SSHDLog(i))
		default:
		}
		if last = sshBanner(ctx, addr); last == nil {
			return nil
		}
		select {
		case <-d.done:
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func sshBanner(ctx context.Context, addr string) error {
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := dctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// Read the whole banner line so closing does not reset the connection.
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "SSH-") {
		return fmt.Errorf("unexpected banner %q", line)
	}
	return nil
}

// stop terminates sshd (SIGTERM, then SIGKILL) and waits for it. Sessions
// sshd already forked keep running; Close kills them with the namespace.
func (d *daemon) stop() error {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(3 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
	var ee *exec.ExitError
	if d.err != nil && !errors.As(d.err, &ee) {
		return d.err // not an exit status: Wait itself failed
	}
	return nil
}
