package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/gorovod/gorovod/internal/env"
	"github.com/gorovod/gorovod/internal/hosts"
	"github.com/gorovod/gorovod/internal/launch"
	"github.com/gorovod/gorovod/internal/netif"
)

// preflightTimeout bounds the ssh check of all hosts (they run in parallel).
const preflightTimeout = 30 * time.Second

// netPlan says where the rendezvous service listens and, per host, which
// address its workers dial for rendezvous and which they listen on.
type netPlan struct {
	listen string            // IP for the rendezvous listener; "" = every interface
	remote map[string]bool   // hosts reached over ssh
	rdv    map[string]string // host -> launcher IP its workers dial
	bind   map[string]string // host -> IP its workers' data plane listens on
	local  string            // rendezvous and bind IP of workers on this machine
}

func (n netPlan) isRemote(host string) bool { return n.remote[host] }

func (n netPlan) rendezvousIP(host string) string {
	if ip, ok := n.rdv[host]; ok {
		return ip
	}
	return n.localIP()
}

func (n netPlan) bindIP(host string) string {
	if ip, ok := n.bind[host]; ok {
		return ip
	}
	return n.localIP()
}

func (n netPlan) localIP() string {
	if n.local == "" {
		return "127.0.0.1"
	}
	return n.local
}

// remoteHosts lists, in rank order, the hosts that are not this machine.
func remoteHosts(slots []hosts.Slot) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range slots {
		if !seen[s.Host] && !launch.IsLocalHost(s.Host) {
			seen[s.Host] = true
			out = append(out, s.Host)
		}
	}
	return out
}

// prepareRemote builds the ssh spawner, checks every remote host before any
// worker starts, and plans the addresses.
func prepareRemote(ctx context.Context, o *options, remote []string, slots []hosts.Slot, forker *launch.Local, log *zap.Logger) (*launch.SSH, netPlan, error) {
	var np netPlan
	extra, err := launch.SplitArgs(os.Getenv(env.SSHArgs))
	if err != nil {
		return nil, np, usagef("%s: %v", env.SSHArgs, err)
	}
	var silence time.Duration
	if v := os.Getenv(env.SSHSilenceTimeout); v != "" {
		if silence, err = time.ParseDuration(v); err != nil || silence < 3*time.Millisecond {
			return nil, np, usagef("%s=%q: want a duration such as 30s", env.SSHSilenceTimeout, v)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, np, fmt.Errorf("finding gorun's own path (remote hosts run gorun at the same path): %w", err)
	}
	if p, err := filepath.EvalSymlinks(self); err == nil {
		self = p
	}
	ssh := &launch.SSH{
		Config:          launch.SSHConfig{Port: o.sshPort, IdentityFile: o.sshIdentity, ExtraArgs: extra},
		Forker:          forker,
		RemoteGorun:     self,
		KillGracePeriod: time.Duration(o.killGrace),
		SilenceTimeout:  silence,
	}
	ifaces := netif.ParseInterfaces(o.netIfaces)
	cwd, err := os.Getwd()
	if err != nil {
		return nil, np, fmt.Errorf("working directory: %w", err)
	}
	log.Debug("checking remote hosts over ssh", zap.Strings("hosts", remote), zap.Strings("ssh", ssh.Config.Args("HOST", "CMD")))
	pctx, cancel := context.WithTimeout(ctx, preflightTimeout)
	defer cancel()
	probes, err := ssh.Preflight(pctx, remote, ifaces, cwd)
	if err != nil {
		return nil, np, err
	}
	np, err = planNetwork(slots, probes, ifaces)
	if err != nil {
		return nil, np, err
	}
	log.Info("network", zap.String("rendezvous_listen", orAll(np.listen)), zap.String("local_workers", np.localIP()))
	for _, h := range remote {
		log.Info("host "+h, zap.String("hostname", probes[h].Hostname), zap.String("ssh_addr", probes[h].HostAddr),
			zap.String("rendezvous_via", np.rdv[h]), zap.String("data_plane", np.bind[h]),
			zap.String("chosen_by", choiceReason(ifaces)))
	}
	return ssh, np, nil
}

func orAll(ip string) string {
	if ip == "" {
		return "all interfaces"
	}
	return ip
}

func choiceReason(ifaces []string) string {
	if len(ifaces) > 0 {
		return "--network-interface " + strings.Join(ifaces, ",")
	}
	return "route to the launcher"
}

// planNetwork picks the addresses of a job with remote hosts. Each remote
// host dials the launcher at the address it saw the ssh connection come
// from (proven reachable); its workers listen on the address its probe
// chose (interface or route). Workers on this machine never use loopback,
// so remote peers reach them: they use an address of --network-interface
// when this machine has one, else the launcher's address the first host
// saw. The rendezvous service listens on that one address when every
// worker dials the same, else on all interfaces.
func planNetwork(slots []hosts.Slot, probes map[string]launch.ProbeResult, ifaces []string) (netPlan, error) {
	np := netPlan{remote: map[string]bool{}, rdv: map[string]string{}, bind: map[string]string{}}
	var first netip.Addr
	dialed := map[string]bool{}
	hasLocal := false
	for _, s := range slots {
		pr, ok := probes[s.Host]
		if !ok {
			hasLocal = true
			continue
		}
		if np.remote[s.Host] {
			continue
		}
		np.remote[s.Host] = true
		a, err := netip.ParseAddr(pr.LauncherAddr)
		if err != nil {
			return np, fmt.Errorf("host %s did not say which address it sees gorun at (SSH_CONNECTION %q)", s.Host, pr.LauncherAddr)
		}
		if !first.IsValid() {
			first = a
		}
		np.rdv[s.Host] = a.String()
		np.bind[s.Host] = pr.BindAddr
		dialed[a.String()] = true
	}
	np.local = first.String()
	if len(ifaces) > 0 {
		if a, err := netif.InterfaceAddr(ifaces, first); err == nil {
			np.local = a.String()
		}
	}
	if hasLocal {
		dialed[np.local] = true
	}
	if len(dialed) == 1 && launch.IsLocalHost(first.WithZone("").String()) {
		np.listen = first.String()
	}
	return np, nil
}

// gorovodVars keeps the GOROVOD_* entries of an environment.
func gorovodVars(environ []string) []string {
	var out []string
	for _, kv := range environ {
		if strings.HasPrefix(kv, "GOROVOD_") && !strings.HasPrefix(kv, env.SSHArgs+"=") {
			out = append(out, kv)
		}
	}
	return out
}
