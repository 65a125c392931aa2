package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/gorovod/gorovod/cmd/gorun/internal/sysinfo"
	"github.com/gorovod/gorovod/internal/env"
	"github.com/gorovod/gorovod/internal/hosts"
	"github.com/gorovod/gorovod/internal/launch"
	"github.com/gorovod/gorovod/internal/logging"
	"github.com/gorovod/gorovod/internal/rendezvous"
)

const examples = `  # 4 workers on this machine
  gorun -np 4 ./train -epochs 10

  # the same, hosts spelled out; debug logs from gorun and the workers
  gorun -np 4 -H localhost:4 --verbose ./train

  # programs that do not use Gorovod run too; output lines carry the rank
  gorun -np 2 hostname

  # tuning knobs reach the workers as GOROVOD_* variables
  gorun -np 2 --fusion-threshold-mb 32 --cycle-time-ms 2 ./train

  # 8 workers on two machines over ssh (gorun must be at the same path on both)
  gorun -np 8 -H host1:4,host2:4 ./train
  gorun -np 8 --hostfile hosts.txt -p 2222 -i ~/.ssh/cluster_key --network-interface eth1 ./train
  GOROVOD_SSH_ARGS="-F $HOME/.ssh/cluster_config" gorun -np 8 -H host1:4,host2:4 ./train

  # what does this machine offer (shm, NCCL, GPUs, interfaces)?
  gorun --check

  # pass variables to the workers; keep each rank's output in files too
  gorun -np 2 -x OMP_NUM_THREADS=1 -x PATH --output-filename logs ./train`

const longHelp = `gorun starts a Gorovod job: -np worker processes running PROGRAM, which
find each other through a rendezvous service hosted by gorun.

Every output line of a worker is prefixed with its rank: "[1]<stdout>:" or
"[1]<stderr>:". When a worker fails, gorun stops the others (SIGTERM, then
SIGKILL after --kill-grace-period) and exits with the failing worker's exit
code, or 128+N when it was killed by signal N. SIGINT and SIGTERM sent to
gorun are forwarded to every worker.

Hosts that are not this machine are reached with ssh (BatchMode: keys, never
a password prompt; GOROVOD_SSH_ARGS adds ssh options). Before any worker
starts, gorun checks every host in parallel (ssh, gorun at the same path,
the working directory, --network-interface) and names each host that fails.
Remote workers run in gorun's working directory with their login environment
plus every GOROVOD_* variable and the -x variables; they die with gorun, even
when gorun is killed with SIGKILL or the ssh connection is lost.

Workers learn their place from GOROVOD_* variables (rank, size, local and
cross rank/size, host, rendezvous address, job secret, start timeout).
--start-timeout bounds how long workers that called Init wait for the
others; programs that never call Init are never stopped for it.

Exit codes: 0 all workers succeeded; the failing worker's code; 128+signal;
1 gorun itself failed (including a host failing the ssh check); 2 bad
command line. See docs/gorun.md.`

func newCommand(stdout, stderr io.Writer) *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:           "gorun [flags] [--] PROGRAM [ARGS...]",
		Short:         "Launch a Gorovod job",
		Long:          longHelp,
		Example:       examples,
		Version:       version,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.check {
				return runCheck(cmd.Context(), args, stdout)
			}
			return runJob(cmd.Context(), &o, cmd.Flags(), args, stdout, stderr)
		},
	}
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	cmd.SetVersionTemplate("gorun {{.Version}}\n")
	fs := cmd.Flags()
	fs.SetInterspersed(false) // flags after PROGRAM belong to PROGRAM
	fs.SortFlags = false
	o.register(fs)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	return cmd
}

// runCheck prints the machine probe; the probe bounds each part itself,
// the deadline only keeps a wedged driver from hanging gorun.
func runCheck(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return usagef("--check takes no program (got %q)", args[0])
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return sysinfo.Probe(ctx, probeNCCL).Write(stdout)
}

// plan is a validated job.
type plan struct {
	argv    []string
	slots   []hosts.Slot
	tuning  []string
	exports []string
}

func makePlan(o *options, fs *pflag.FlagSet, args []string) (plan, []string, error) {
	var p plan
	if len(args) == 0 {
		return p, nil, usagef("no program given (usage: gorun -np N PROGRAM [ARGS...])")
	}
	if fs.Changed("num-proc") && o.np < 1 {
		return p, nil, usagef("-np is %d, must be at least 1", o.np)
	}
	if time.Duration(o.startTimeout) <= 0 {
		return p, nil, usagef("--start-timeout is %v, must be positive", time.Duration(o.startTimeout))
	}
	if time.Duration(o.killGrace) < 0 {
		return p, nil, usagef("--kill-grace-period is %v, must not be negative", time.Duration(o.killGrace))
	}
	if o.sshPort < 0 || o.sshPort > 65535 {
		return p, nil, usagef("--ssh-port is %d, must be between 1 and 65535", o.sshPort)
	}
	var hs []hosts.Host
	source := ""
	switch {
	case fs.Changed("hosts") && fs.Changed("hostfile"):
		return p, nil, usagef("give either -H or --hostfile, not both")
	case fs.Changed("hosts"):
		var err error
		if hs, err = hosts.ParseHosts(o.hosts); err != nil {
			return p, nil, usagef("-H %q: %v", o.hosts, err)
		}
		source = "-H"
	case fs.Changed("hostfile"):
		f, err := os.Open(o.hostfile)
		if err != nil {
			return p, nil, usagef("--hostfile: %v", err)
		}
		hs, err = hosts.ParseHostfile(f)
		f.Close()
		if err != nil {
			return p, nil, usagef("--hostfile %s: %v", o.hostfile, err)
		}
		source = "--hostfile"
	default:
		if !fs.Changed("num-proc") {
			return p, nil, usagef("give the number of processes with -np N")
		}
		if limit, why := localWorkerLimit(); o.np > limit {
			return p, nil, usagef("-np %d is more workers than this machine runs: at most %d (%s); give more hosts with -H or --hostfile", o.np, limit, why)
		}
		hs = []hosts.Host{{Name: "localhost", Slots: o.np}}
	}
	np := o.np
	if !fs.Changed("num-proc") {
		np = hosts.TotalSlots(hs)
	}
	if total := hosts.TotalSlots(hs); np > total {
		return p, nil, usagef("%d processes requested but only %d slots given by %s", np, total, source)
	}
	slots, err := hosts.Assign(hs, np)
	if err != nil {
		return p, nil, usagef("%v", err)
	}
	if _, err := exec.LookPath(args[0]); err != nil {
		return p, nil, usagef("program %q: %v", args[0], programProblem(err))
	}
	tuning, err := o.tuningEnv(fs)
	if err != nil {
		return p, nil, err
	}
	exports, missing, err := exportEnv(o.envVars, lookupEnv)
	if err != nil {
		return p, nil, err
	}
	return plan{argv: args, slots: slots, tuning: tuning, exports: exports}, missing, nil
}

// programProblem words exec.LookPath's error for a person.
func programProblem(err error) string {
	var ee *exec.Error
	if errors.As(err, &ee) {
		err = ee.Err
	}
	switch {
	case errors.Is(err, exec.ErrNotFound):
		return "not found in PATH"
	case errors.Is(err, os.ErrNotExist):
		return "no such file"
	case errors.Is(err, syscall.EISDIR):
		return "is a directory"
	case errors.Is(err, os.ErrPermission):
		return "is not executable"
	}
	return err.Error()
}

func runJob(ctx context.Context, o *options, fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) error {
	p, missing, err := makePlan(o, fs, args)
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
	for _, name := range missing {
		log.Warn("-x " + name + ": not set in gorun's environment; not exported")
	}

	if ctx == nil {
		ctx = context.Background()
	}
	local := launch.NewLocal()
	defer local.Close() // after Run: every process it forked has been waited for
	var remote *launch.SSH
	np := netPlan{listen: "127.0.0.1"}
	if hs := remoteHosts(p.slots); len(hs) > 0 {
		if remote, np, err = prepareRemote(ctx, o, hs, p.slots, local, log); err != nil {
			return err
		}
	}

	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return fmt.Errorf("making the job secret: %w", err)
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(np.listen, "0"))
	if err != nil {
		return fmt.Errorf("rendezvous listener on %q: %w", np.listen, err)
	}
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	startTimeout := time.Duration(o.startTimeout)
	srv := rendezvous.NewServer(rendezvous.ServerConfig{
		Size: len(p.slots), Secret: secret, StartTimeout: startTimeout, Epoch: 0,
		Logger: log.Named("rendezvous"),
	})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() {
		srv.Stop()
		if err := <-served; err != nil {
			log.Warn("rendezvous service", zap.Error(err))
		}
	}()

	// Local workers inherit gorun's environment; remote ones get their
	// login environment plus -x variables and every GOROVOD_* variable.
	localBase := append(os.Environ(), p.exports...)
	remoteBase := append(gorovodVars(os.Environ()), p.exports...)
	common := []string{
		env.Size + "=" + strconv.Itoa(len(p.slots)),
		env.Secret + "=" + hex.EncodeToString(secret),
		env.Epoch + "=0",
		env.StartTimeout + "=" + startTimeout.String(),
		env.Launcher + "=gorun",
	}
	if o.verbose {
		common = append(common, env.LogLevel+"=debug")
	}
	if o.netIfaces != "" {
		common = append(common, env.NetworkIface+"="+o.netIfaces)
	}
	common = append(common, p.tuning...)
	cwd, _ := os.Getwd()
	workers := make([]launch.Worker, len(p.slots))
	for i, s := range p.slots {
		base, dir := localBase, ""
		if np.isRemote(s.Host) {
			base, dir = remoteBase, cwd
		}
		we := append(append([]string(nil), base...), common...)
		we = append(we,
			env.RendezvousAddr+"="+net.JoinHostPort(np.rendezvousIP(s.Host), port),
			env.BindAddr+"="+np.bindIP(s.Host),
			env.Rank+"="+strconv.Itoa(s.Rank),
			env.LocalRank+"="+strconv.Itoa(s.LocalRank),
			env.LocalSize+"="+strconv.Itoa(s.LocalSize),
			env.CrossRank+"="+strconv.Itoa(s.CrossRank),
			env.CrossSize+"="+strconv.Itoa(s.CrossSize),
			env.Hostname+"="+s.Host,
		)
		if !np.isRemote(s.Host) { // remote workers get their host's share there
			we = launch.WithGOMAXPROCS(we, runtime.NumCPU())
		}
		workers[i] = launch.Worker{Rank: s.Rank, Host: s.Host, Argv: p.argv, Env: we, Dir: dir}
	}
	log.Debug("starting job", zap.Int("np", len(workers)), zap.Strings("argv", p.argv),
		zap.String("rendezvous", lis.Addr().String()), zap.Duration("start_timeout", startTimeout))

	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)

	spawner := launch.HostRouter{Local: local, IsLocal: func(h string) bool { return !np.isRemote(h) }}
	if remote != nil {
		spawner.Remote = remote
	}
	res, err := launch.Run(ctx, launch.JobConfig{
		Spawner:         spawner,
		Workers:         workers,
		Stdout:          stdout,
		Stderr:          stderr,
		OutputDir:       o.outputDir,
		KillGracePeriod: time.Duration(o.killGrace),
		Logger:          log,
		// The ranks a failed rendezvous answered exit by themselves, each
		// saying why: let them, rather than stopping them mid-sentence.
		Settle: func(launch.Exit) time.Duration {
			if srv.Failed() {
				return 2 * time.Second
			}
			return 0
		},
		// The workers' failure oracle decides which rank a failure started
		// at: the job's first failure and exit code follow it, not the
		// order in which gorun reaped the workers.
		Cause: func() (launch.Cause, bool) {
			v, ok := srv.FirstFailure()
			return launch.Cause{Rank: v.Rank, Description: v.Message}, ok
		},
		OnExit: func(e launch.Exit) {
			// A worker gone before registering never will: fail the
			// ranks waiting for it now rather than at the start timeout.
			srv.WorkerExited(e.Rank, fmt.Sprintf("(pid %d, host %s) %s", e.Pid, e.Host, e.Status))
			if e.Status.Failed() {
				// The workers' failure oracle: their errors name this
				// death if it came before any peer noticed one.
				srv.RecordFailure(e.Rank, e.String())
			}
		},
	}, signals)
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return exitCodeError{res.ExitCode}
	}
	return nil
}
