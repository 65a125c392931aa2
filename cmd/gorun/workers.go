package main

import (
	"encoding/hex"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/gorovod/gorovod/cmd/gorun/internal/sysinfo"
	"github.com/gorovod/gorovod/internal/env"
	"github.com/gorovod/gorovod/internal/launch"
)

// jobEnv is what every worker of a job is told, apart from its place.
type jobEnv struct {
	secret       []byte
	startTimeout time.Duration
	rdvPort      string
	master       []string        // MASTER_ADDR, MASTER_PORT; nil when unknown or given with -x
	progress     string          // env.ProgressTTY or env.ProgressLines
	gpus         sysinfo.GPUPlan // this host's GPUs for its local ranks (docs/gpu.md)
}

// buildWorkers gives each slot its argv and environment. Local workers
// inherit gorun's environment; remote ones get their login environment
// plus -x variables and every GOROVOD_* variable of gorun's.
func buildWorkers(o *options, p plan, np netPlan, je jobEnv) []launch.Worker {
	localBase := append(os.Environ(), p.exports...)
	remoteBase := append(gorovodVars(os.Environ()), p.exports...)
	common := []string{
		env.Secret + "=" + hex.EncodeToString(je.secret),
		env.Epoch + "=0",
		env.StartTimeout + "=" + je.startTimeout.String(),
		env.Launcher + "=gorun",
		env.Progress + "=" + je.progress,
	}
	if o.verbose || strings.EqualFold(o.logLevel, "debug") {
		common = append(common, env.LogLevel+"=debug")
	}
	if o.netIfaces != "" {
		common = append(common, env.NetworkIface+"="+o.netIfaces)
	}
	common = append(common, je.master...)
	common = append(common, p.tuning...)
	cwd, _ := os.Getwd()
	node := map[string]int{} // host -> its index, in rank order
	for _, s := range p.slots {
		if _, ok := node[s.Host]; !ok {
			node[s.Host] = len(node)
		}
	}
	workers := make([]launch.Worker, len(p.slots))
	for i, s := range p.slots {
		base, dir := localBase, ""
		if np.isRemote(s.Host) {
			base, dir = remoteBase, cwd
		}
		we := append(append([]string(nil), base...), common...)
		place := env.Place{Rank: s.Rank, Size: len(p.slots), LocalRank: s.LocalRank, LocalSize: s.LocalSize,
			CrossRank: s.CrossRank, CrossSize: s.CrossSize, Node: node[s.Host], Nodes: len(node)}
		we = append(we, place.Vars()...)
		we = append(we,
			env.RendezvousAddr+"="+net.JoinHostPort(np.rendezvousIP(s.Host), je.rdvPort),
			env.BindAddr+"="+np.bindIP(s.Host),
			env.Hostname+"="+s.Host,
		)
		if !np.isRemote(s.Host) { // remote workers get their host's share there
			we = launch.WithGOMAXPROCS(we, runtime.NumCPU())
			we = launch.WithCPUBinding(we, launch.AllowedCPUs())
			we = je.gpus.Env(we, s.LocalRank)
		}
		workers[i] = launch.Worker{Rank: s.Rank, Host: s.Host, Argv: p.argv, Env: we, Dir: dir}
	}
	return workers
}

// masterAddr picks MASTER_ADDR and MASTER_PORT for programs written for
// torch.distributed's env:// rendezvous: rank 0's data-plane address and a
// port that was free there when gorun looked (gorun's own machine: found
// now; a remote host: found by its ssh check). Nothing holds the port, as
// with torchrun; -x MASTER_ADDR=... -x MASTER_PORT=... fix both instead.
// It returns nil when the user exported either or no port is known.
func masterAddr(p plan, np netPlan) ([]string, error) {
	for _, kv := range p.exports {
		if strings.HasPrefix(kv, env.StdMasterAddr+"=") || strings.HasPrefix(kv, env.StdMasterPort+"=") {
			return nil, nil
		}
	}
	host := p.slots[0].Host
	ip := np.bindIP(host)
	port := np.ports[host]
	if !np.isRemote(host) {
		var err error
		if port, err = launch.FreePort(ip); err != nil {
			return nil, err
		}
	}
	if port == 0 {
		return nil, nil
	}
	return env.MasterVars(ip, port), nil
}

// progressHint says whether gorun's stdout is a terminal, for the workers'
// progress output (env.Progress); a value in gorun's environment wins.
func progressHint(stdout io.Writer) string {
	if v := os.Getenv(env.Progress); v != "" {
		return v
	}
	if isTerminal(stdout) {
		return env.ProgressTTY
	}
	return env.ProgressLines
}
