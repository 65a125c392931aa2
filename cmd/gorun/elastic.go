package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/gorovod/gorovod/elastic"
	"github.com/gorovod/gorovod/internal/env"
	"github.com/gorovod/gorovod/internal/hosts"
	"github.com/gorovod/gorovod/internal/launch"
	"github.com/gorovod/gorovod/internal/logging"
)

// elasticOptions are the flags of elastic jobs (docs/elastic.md).
type elasticOptions struct {
	minNP, maxNP      int
	slotsPerHost      int
	discoveryScript   string
	discoveryInterval secondsOrDuration
	consulAddr        string
	consulService     string
	resetLimit        int
	cooldownRange     string
	elasticTimeout    secondsOrDuration
	heartbeat         secondsOrDuration
}

func (e *elasticOptions) register(fs *pflag.FlagSet) {
	e.discoveryInterval = secondsOrDuration(time.Second)
	e.elasticTimeout = secondsOrDuration(10 * time.Minute)
	e.heartbeat = secondsOrDuration(time.Second)
	fs.IntVar(&e.minNP, "min-np", 0, "elastic: run with at least `N` workers; fewer for longer than --elastic-timeout fails the job")
	fs.IntVar(&e.maxNP, "max-np", 0, "elastic: at most `N` workers (default: every discovered slot)")
	fs.IntVar(&e.slotsPerHost, "slots-per-host", 1, "elastic: slots of a discovered host that gives no count")
	fs.StringVar(&e.discoveryScript, "host-discovery-script", "", "elastic: `PROGRAM` printing the available hosts, one 'host' or 'host:slots' per line")
	fs.Var(&e.discoveryInterval, "discovery-interval", "elastic: how often the discovery script runs")
	fs.StringVar(&e.consulAddr, "consul", "", "elastic: discover hosts through the Consul agent at `ADDR` (host:port)")
	fs.StringVar(&e.consulService, "consul-service", "", "elastic: the Consul `SERVICE` whose passing instances are the hosts (meta \"slots\")")
	fs.IntVar(&e.resetLimit, "reset-limit", 0, "elastic: fail after this many resets (0: no limit)")
	fs.StringVar(&e.cooldownRange, "blacklist-cooldown-range", "10s,5m", "elastic: `MIN,MAX` cooldown of a blacklisted host, doubling each time; 0 blacklists for good")
	fs.Var(&e.elasticTimeout, "elastic-timeout", "elastic: how long the job may stay below --min-np")
	fs.Var(&e.heartbeat, "heartbeat", "elastic: worker heartbeat interval; 3 missed heartbeats remove a worker")
}

// enabled reports whether the command line asks for an elastic job.
func (e *elasticOptions) enabled(fs *pflag.FlagSet) bool {
	for _, name := range []string{"min-np", "max-np", "host-discovery-script", "consul", "consul-service"} {
		if fs.Changed(name) {
			return true
		}
	}
	return false
}

// elasticConfig validates the flags and builds the driver's configuration
// (everything but the launcher, the secret and the addresses); it also
// returns the static host list of -H/--hostfile (nil with discovery).
func elasticConfig(o *options, e *elasticOptions, fs *pflag.FlagSet) (cfg elastic.DriverConfig, static []hosts.Host, err error) {
	if e.slotsPerHost < 1 {
		return cfg, nil, usagef("--slots-per-host is %d, must be at least 1", e.slotsPerHost)
	}
	if cfg.Discovery, static, err = elasticDiscovery(o, e, fs); err != nil {
		return cfg, nil, err
	}
	cfg.MinNP, cfg.MaxNP = e.minNP, e.maxNP
	if cfg.MinNP == 0 {
		cfg.MinNP = max(o.np, 1)
	}
	if cfg.MaxNP == 0 {
		cfg.MaxNP = 1 << 20
		if static != nil {
			cfg.MaxNP = hosts.TotalSlots(static)
		}
	}
	if cfg.MaxNP < cfg.MinNP {
		return cfg, nil, usagef("--max-np %d is below --min-np %d", cfg.MaxNP, cfg.MinNP)
	}
	if e.resetLimit < 0 {
		return cfg, nil, usagef("--reset-limit is %d, must not be negative", e.resetLimit)
	}
	lo, hi, err := elastic.ParseCooldownRange(e.cooldownRange)
	if err != nil {
		return cfg, nil, usagef("--blacklist-cooldown-range: %v", err)
	}
	cfg.Policy = elastic.DefaultFailurePolicy()
	cfg.Policy.CooldownMin, cfg.Policy.CooldownMax = lo, hi
	if time.Duration(e.heartbeat) <= 0 || time.Duration(e.elasticTimeout) <= 0 {
		return cfg, nil, usagef("--heartbeat and --elastic-timeout must be positive")
	}
	cfg.ResetLimit = e.resetLimit
	cfg.ElasticTimeout = time.Duration(e.elasticTimeout)
	cfg.Heartbeat = time.Duration(e.heartbeat)
	cfg.StartTimeout = time.Duration(o.startTimeout)
	cfg.KillGracePeriod = time.Duration(o.killGrace)
	return cfg, static, nil
}

// elasticDiscovery picks the host source: a script, Consul, a static host
// list (also returned), or localhost with enough slots.
func elasticDiscovery(o *options, e *elasticOptions, fs *pflag.FlagSet) (d elastic.Discovery, static []hosts.Host, err error) {
	switch {
	case fs.Changed("hosts") && fs.Changed("hostfile"):
		return nil, nil, usagef("give either -H or --hostfile, not both")
	case fs.Changed("hosts"):
		if static, err = hosts.ParseHosts(o.hosts); err != nil {
			return nil, nil, usagef("-H %q: %v", o.hosts, err)
		}
	case fs.Changed("hostfile"):
		f, err := os.Open(o.hostfile)
		if err != nil {
			return nil, nil, usagef("--hostfile: %v", err)
		}
		static, err = hosts.ParseHostfile(f)
		f.Close()
		if err != nil {
			return nil, nil, usagef("--hostfile %s: %v", o.hostfile, err)
		}
	}
	sources := 0
	for _, set := range []bool{e.discoveryScript != "", e.consulAddr != "" || e.consulService != "", static != nil} {
		if set {
			sources++
		}
	}
	switch {
	case sources > 1:
		return nil, nil, usagef("give one host source: --host-discovery-script, --consul/--consul-service, or -H/--hostfile")
	case e.discoveryScript != "":
		if time.Duration(e.discoveryInterval) <= 0 {
			return nil, nil, usagef("--discovery-interval must be positive")
		}
		d = &elastic.Script{Path: e.discoveryScript, Interval: time.Duration(e.discoveryInterval), DefaultSlots: e.slotsPerHost}
	case e.consulAddr != "" || e.consulService != "":
		if e.consulService == "" {
			return nil, nil, usagef("--consul needs --consul-service")
		}
		if d, err = elastic.NewConsul(e.consulAddr, e.consulService, "", e.slotsPerHost); err != nil {
			return nil, nil, usagef("%v", err)
		}
	case static != nil:
		d = &elastic.Static{Hosts: static}
	default:
		np := max(o.np, e.minNP, e.maxNP, 1)
		d = &elastic.Static{Hosts: []hosts.Host{{Name: "localhost", Slots: np}}}
	}
	return d, static, nil
}

// runElastic runs PROGRAM as an elastic job: the driver in this process,
// workers on the discovered hosts.
func runElastic(ctx context.Context, o *options, e *elasticOptions, fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("no program given (usage: gorun --min-np N --host-discovery-script PROG PROGRAM [ARGS...])")
	}
	if _, err := exec.LookPath(args[0]); err != nil {
		return usagef("program %q: %v", args[0], programProblem(err))
	}
	cfg, static, err := elasticConfig(o, e, fs)
	if err != nil {
		return err
	}
	tuning, err := o.tuningEnv(fs)
	if err != nil {
		return err
	}
	exports, _, err := exportEnv(o.envVars, lookupEnv)
	if err != nil {
		return err
	}
	level := ""
	if o.verbose {
		level = "debug"
	}
	log, err := logging.New(level)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return fmt.Errorf("making the job secret: %w", err)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	local := launch.NewLocal()
	defer local.Close()
	np, remote, err := planElasticNetwork(ctx, o, static, local, log)
	if err != nil {
		return err
	}
	cfg.Secret = secret
	cfg.Listen = np.listen // "": every interface (hosts dial different addresses)
	cfg.AddrFor = np.rendezvousIP
	cfg.Launcher = newElasticLauncher(np, local, remote, args, workerCommonEnv(o, secret, tuning), exports, stdout, stderr)
	cfg.Events = &linePrefix{w: stderr, prefix: "[gorun] "}
	cfg.Logger = log.Named("elastic")
	d, err := elastic.NewDriver(cfg)
	if err != nil {
		return usagef("%v", err)
	}
	if err := d.Run(ctx); err != nil {
		if ctx.Err() != nil {
			return exitCodeError{130}
		}
		return err
	}
	return nil
}

// planElasticNetwork checks the remote hosts of a static host list over
// ssh before anything starts and plans which addresses they dial and bind;
// without remote hosts everything stays on loopback.
func planElasticNetwork(ctx context.Context, o *options, static []hosts.Host, local *launch.Local, log *zap.Logger) (netPlan, *launch.SSH, error) {
	np := netPlan{listen: "127.0.0.1"}
	if static == nil {
		return np, nil, nil
	}
	slots, err := hosts.Assign(static, hosts.TotalSlots(static))
	if err != nil {
		return np, nil, usagef("%v", err)
	}
	hs := remoteHosts(slots)
	if len(hs) == 0 {
		return np, nil, nil
	}
	remote, np, err := prepareRemote(ctx, o, hs, slots, local, log)
	return np, remote, err
}

// workerCommonEnv is what every worker gets besides its own variables.
func workerCommonEnv(o *options, secret []byte, tuning []string) []string {
	common := []string{
		env.Secret + "=" + hex.EncodeToString(secret),
		env.StartTimeout + "=" + time.Duration(o.startTimeout).String(),
		env.Launcher + "=gorun",
	}
	if o.verbose {
		common = append(common, env.LogLevel+"=debug")
	}
	if o.netIfaces != "" {
		common = append(common, env.NetworkIface+"="+o.netIfaces)
	}
	return append(common, tuning...)
}

func newElasticLauncher(np netPlan, local *launch.Local, remote *launch.SSH, argv, common, exports []string, stdout, stderr io.Writer) *elasticLauncher {
	spawner := launch.HostRouter{Local: local, IsLocal: func(h string) bool { return !np.isRemote(h) }}
	if remote != nil {
		spawner.Remote = remote
	}
	cwd, _ := os.Getwd()
	out, errOut := launch.NewSinks(stdout, stderr)
	// Local workers inherit gorun's environment; remote ones get their
	// login environment plus -x variables and every GOROVOD_* variable.
	return &elasticLauncher{spawner: spawner, np: np, argv: argv, cwd: cwd,
		localBase:  append(append(os.Environ(), exports...), common...),
		remoteBase: append(append(gorovodVars(os.Environ()), exports...), common...),
		out:        out, errOut: errOut}
}

// elasticLauncher starts elastic workers: on this machine, or over ssh on
// the remote hosts of a static host list.
type elasticLauncher struct {
	spawner               launch.Spawner
	np                    netPlan
	argv                  []string
	cwd                   string
	localBase, remoteBase []string
	out, errOut           *launch.Sink
}

func (l *elasticLauncher) Start(ctx context.Context, w elastic.WorkerSpec) (launch.Proc, error) {
	isRemote := l.np.isRemote(w.Slot.Host)
	if !isRemote && !launch.IsLocalHost(w.Slot.Host) {
		return nil, fmt.Errorf("host %s: discovered remote hosts are not supported yet (give remote hosts with -H or --hostfile)", w.Slot.Host)
	}
	base, dir := l.localBase, ""
	if isRemote {
		base, dir = l.remoteBase, l.cwd
	}
	we := append(append([]string(nil), base...), w.Env...)
	we = append(we,
		env.Hostname+"="+w.Slot.Host,
		env.BindAddr+"="+l.np.bindIP(w.Slot.Host),
		env.LocalRank+"="+strconv.Itoa(w.Slot.Index),
	)
	if w.HostSlots > 1 && !isRemote { // the worker's share of the cores, as for static jobs
		we = launch.WithGOMAXPROCS(append(we, env.LocalSize+"="+strconv.Itoa(w.HostSlots)), runtime.NumCPU())
	}
	return l.spawner.Start(ctx, launch.ProcSpec{
		Rank: int(w.Seq), Host: w.Slot.Host, Argv: l.argv, Env: we, Dir: dir,
		Stdout: launch.NewLineWriter(l.out, "["+w.ID+"]<stdout>:", nil),
		Stderr: launch.NewLineWriter(l.errOut, "["+w.ID+"]<stderr>:", nil),
	})
}

// linePrefix writes each line with a prefix (the driver's event lines).
type linePrefix struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
}

func (p *linePrefix) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line == "" {
			continue
		}
		if _, err := io.WriteString(p.w, p.prefix+line); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}
