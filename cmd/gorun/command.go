package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/gorovod/gorovod/cmd/gorun/internal/sysinfo"
	"github.com/gorovod/gorovod/internal/hosts"
	"github.com/gorovod/gorovod/internal/launch"
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
  gorun -np 2 -x OMP_NUM_THREADS=1 -x PATH --output-filename logs ./train

  # only rank 0 on the console, without the prefix (all ranks in logs/)
  gorun -np 4 --output-ranks 0 --no-prefix --output-filename logs ./train

  # settings from a horovodrun-style YAML file; the command line wins
  gorun --config-file job.yaml -np 4 ./train

  # shell completion
  source <(gorun completion bash)`

const longHelp = `gorun starts a Gorovod job: -np worker processes running PROGRAM, which
find each other through a rendezvous service hosted by gorun.

Every output line of a worker is prefixed with its rank: "[1]<stdout>:" or
"[1]<stderr>:" (--no-prefix drops it, --output-ranks picks the ranks shown,
--prefix-output-with-timestamp adds the time). When a worker fails, gorun stops the others (SIGTERM, then
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
cross rank/size, host, rendezvous address, job secret, start timeout), and
from the names other launchers use: RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, GROUP_RANK, GROUP_WORLD_SIZE, MASTER_ADDR/MASTER_PORT (rank 0's address and
a port free there, for torch.distributed) and HOROVOD_RANK, HOROVOD_SIZE,
.... GOROVOD_PROGRESS is "tty" when gorun's stdout is a terminal, else
"lines". --start-timeout bounds how long workers that called Init wait for the
others; programs that never call Init are never stopped for it.

gorun's own messages are one plain line each on stderr ("gorun: error:
rank 1 (pid 4711, host localhost) exited with code 2; ..."), or JSON with
--log-format json. Shell completion: gorun completion bash|zsh|fish|powershell
(a program called completion runs as gorun -np N -- completion).

Exit codes: 0 all workers succeeded; the failing worker's code; 128+signal;
1 gorun itself failed (including a host failing the ssh check); 2 bad
command line. See docs/gorun.md.`

func newCommand(stdout, stderr io.Writer) *cobra.Command {
	var o options
	var eo elasticOptions
	cmd := &cobra.Command{
		Use:           "gorun [flags] [--] PROGRAM [ARGS...]",
		Short:         "Launch a Gorovod job",
		Long:          longHelp,
		Example:       examples,
		Version:       gorunVersion(),
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.configFile != "" {
				if err := applyConfigFile(o.configFile, cmd.Flags()); err != nil {
					return err
				}
			}
			if o.check {
				return runCheck(cmd.Context(), args, stdout)
			}
			if eo.enabled(cmd.Flags()) {
				return runElastic(cmd.Context(), &o, &eo, cmd.Flags(), args, stdout, stderr)
			}
			return runJob(cmd.Context(), &o, cmd.Flags(), args, stdout, stderr)
		},
	}
	// "gorun completion SHELL" is handled before cobra (writeCompletion):
	// cobra's own completion command would take "gorun -np 2 completion"
	// for itself.
	cmd.CompletionOptions.DisableDefaultCmd = true
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	cmd.SetVersionTemplate("gorun {{.Version}}\n")
	fs := cmd.Flags()
	fs.SetInterspersed(false) // flags after PROGRAM belong to PROGRAM
	fs.SortFlags = false
	o.register(fs)
	eo.register(fs)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	registerCompletions(cmd)
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
	if err := o.checkVoice(len(slots)); err != nil {
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

func runJob(ctx context.Context, o *options, fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) (err error) {
	p, missing, err := makePlan(o, fs, args)
	if err != nil {
		return err
	}
	term := newTerminal(stdout, stderr)
	log, err := o.logger(term)
	if err != nil {
		return usagef("%v", err)
	}
	defer func() { _ = log.Sync() }()
	defer func() { err = reportJSON(o, log, err) }()
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

	rdv, err := startRendezvous(o, np, len(p.slots), log)
	if err != nil {
		return err
	}
	defer rdv.stop(log)
	workers, err := jobWorkers(o, p, np, rdv, progressHint(stdout))
	if err != nil {
		return err
	}
	log.Debug("starting job", zap.Int("np", len(workers)), zap.Strings("argv", p.argv),
		zap.String("rendezvous", rdv.lis.Addr().String()), zap.Duration("start_timeout", time.Duration(o.startTimeout)))

	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)

	conOut, conErr := o.console(term, len(workers))
	spawner := launch.HostRouter{Local: local, IsLocal: func(h string) bool { return !np.isRemote(h) }}
	if remote != nil {
		spawner.Remote = remote
	}
	res, err := launch.Run(ctx, launch.JobConfig{
		Spawner:         spawner,
		Workers:         workers,
		Stdout:          conOut,
		Stderr:          conErr,
		OutputDir:       o.outputDir,
		KillGracePeriod: time.Duration(o.killGrace),
		Logger:          log,
		Settle:          rdv.settle,
		Cause:           rdv.cause,
		OnExit:          rdv.workerExited,
	}, signals)
	if err != nil {
		return err
	}
	if hint := o.failureHint(res, p.slots); hint != "" {
		log.Error(hint)
	}
	if res.ExitCode != 0 {
		return exitCodeError{res.ExitCode}
	}
	return nil
}

// jobRendezvous is the rendezvous service gorun runs for a job's workers,
// and the job's failure oracle.
type jobRendezvous struct {
	srv    *rendezvous.Server
	secret []byte
	lis    net.Listener
	port   string
	served chan error
}

// startRendezvous makes the job secret and serves the rendezvous for size
// workers on np's listen address.
func startRendezvous(o *options, np netPlan, size int, log *zap.Logger) (*jobRendezvous, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("making the job secret: %w", err)
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(np.listen, "0"))
	if err != nil {
		return nil, fmt.Errorf("rendezvous listener on %q: %w", np.listen, err)
	}
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	srv := rendezvous.NewServer(rendezvous.ServerConfig{
		Size: size, Secret: secret, StartTimeout: time.Duration(o.startTimeout), Epoch: 0,
		Logger: log.Named("rendezvous"),
	})
	r := &jobRendezvous{srv: srv, secret: secret, lis: lis, port: port, served: make(chan error, 1)}
	go func() { r.served <- srv.Serve(lis) }()
	return r, nil
}

// stop ends the service and waits for it.
func (r *jobRendezvous) stop(log *zap.Logger) {
	r.srv.Stop()
	if err := <-r.served; err != nil {
		log.Warn("rendezvous service", zap.Error(err))
	}
}

// settle: the ranks a failed rendezvous answered exit by themselves, each
// saying why: let them, rather than stopping them mid-sentence.
func (r *jobRendezvous) settle(launch.Exit) time.Duration {
	if r.srv.Failed() {
		return 2 * time.Second
	}
	return 0
}

// cause: the workers' failure oracle decides which rank a failure started
// at: the job's first failure and exit code follow it, not the order in
// which gorun reaped the workers.
func (r *jobRendezvous) cause() (launch.Cause, bool) {
	v, ok := r.srv.FirstFailure()
	return launch.Cause{Rank: v.Rank, Description: v.Message}, ok
}

// workerExited tells the rendezvous of a worker's exit.
func (r *jobRendezvous) workerExited(e launch.Exit) {
	// A worker gone before registering never will: fail the ranks waiting
	// for it now rather than at the start timeout.
	r.srv.WorkerExited(e.Rank, fmt.Sprintf("(pid %d, host %s) %s", e.Pid, e.Host, e.Status))
	if e.Status.Failed() {
		// The workers' failure oracle: their errors name this death if it
		// came before any peer noticed one.
		r.srv.RecordFailure(e.Rank, e.String())
	}
}

// jobWorkers decides each worker's argv and environment: the rendezvous
// to join, the master address, and this host's GPUs.
func jobWorkers(o *options, p plan, np netPlan, rdv *jobRendezvous, progress string) ([]launch.Worker, error) {
	master, err := masterAddr(p, np)
	if err != nil {
		return nil, err
	}
	gpus, err := sysinfo.PlanGPUs(os.Getenv, sysinfo.LocalGPUs()) // docs/gpu.md
	if err != nil {
		return nil, err
	}
	return buildWorkers(o, p, np, jobEnv{
		secret: rdv.secret, startTimeout: time.Duration(o.startTimeout), rdvPort: rdv.port, master: master,
		progress: progress, gpus: gpus,
	}), nil
}
