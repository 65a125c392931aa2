package slurm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cluster is a one-node Slurm on this machine: a private munged, slurmctld
// and slurmd, each a foreground child of the test, configured in dir.
type cluster struct {
	dir, conf string
	daemons   []*daemon // in start order; stopped in reverse
}

// daemon is one started program; done closes when it has exited and been
// reaped.
type daemon struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // set before done closes
}

func startDaemon(dir, name string, env []string, args ...string) (*daemon, error) {
	out, err := os.Create(filepath.Join(dir, name+".out"))
	if err != nil {
		return nil, err
	}
	defer out.Close() // the child has its own copy
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a ^C to the test must not reach it first
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { // owner: the daemon; ends when the process exits
		d.err = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

// stop sends SIGTERM, waits up to grace, then kills; it returns once the
// process is reaped.
func (d *daemon) stop(grace time.Duration) error {
	select {
	case <-d.done:
		return fmt.Errorf("%s had already exited: %v", d.name, d.err)
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return nil
	case <-time.After(grace):
	}
	_ = d.cmd.Process.Kill()
	<-d.done
	return fmt.Errorf("%s did not stop within %v of SIGTERM; killed", d.name, grace)
}

// freePorts returns n TCP ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

const slurmConf = `ClusterName=gorovodtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=%[2]d
SlurmdPort=%[3]d
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=%[1]s/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation=%[1]s/state
SlurmdSpoolDir=%[1]s/spool
SlurmctldPidFile=%[1]s/slurmctld.pid
SlurmdPidFile=%[1]s/slurmd.pid
SlurmctldLogFile=%[1]s/slurmctld.log
SlurmdLogFile=%[1]s/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SwitchType=switch/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=8 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
`

// startCluster starts munged, slurmctld and slurmd with a configuration in
// a fresh folder and waits for the node to be idle. The node declares 8
// CPUs (config_overrides) so that srun -n 3 runs on 2 cores without
// --overcommit.
func startCluster(ctx context.Context) (*cluster, error) {
	dir, err := os.MkdirTemp("", "gorovod-slurm-")
	if err != nil {
		return nil, err
	}
	// munged refuses a socket folder that others cannot enter (MkdirTemp
	// makes 0700).
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	c := &cluster{dir: dir, conf: filepath.Join(dir, "slurm.conf")}
	for _, sub := range []string{"state", "spool"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			return c, err
		}
	}
	if err := c.startMunge(ctx); err != nil {
		return c, err
	}
	ports, err := freePorts(2)
	if err != nil {
		return c, err
	}
	if err := os.WriteFile(c.conf, fmt.Appendf(nil, slurmConf, dir, ports[0], ports[1]), 0o644); err != nil {
		return c, err
	}
	env := c.env()
	for _, s := range []struct {
		name string
		args []string
	}{
		{"slurmctld", []string{"-D", "-c", "-f", c.conf}},
		{"slurmd", []string{"-D", "-N", "localhost", "-f", c.conf}},
	} {
		d, err := startDaemon(dir, s.name, env, s.args...)
		if err != nil {
			return c, err
		}
		c.daemons = append(c.daemons, d)
	}
	return c, c.waitIdle(ctx)
}

func (c *cluster) startMunge(ctx context.Context) error {
	key := filepath.Join(c.dir, "munge.key")
	if out, err := exec.CommandContext(ctx, "mungekey", "-c", "-k", key).CombinedOutput(); err != nil {
		return fmt.Errorf("mungekey: %v: %s", err, out)
	}
	sock := filepath.Join(c.dir, "munge.sock")
	d, err := startDaemon(c.dir, "munged", os.Environ(), "-F", "--socket="+sock, "--key-file="+key,
		"--pid-file="+filepath.Join(c.dir, "munged.pid"), "--log-file="+filepath.Join(c.dir, "munged.log"),
		"--seed-file="+filepath.Join(c.dir, "munged.seed"))
	if err != nil {
		return err
	}
	c.daemons = append(c.daemons, d)
	return poll(ctx, "munged's socket", func() (bool, error) {
		if _, err := os.Stat(sock); err == nil {
			return true, nil
		}
		return false, exited(d)
	})
}

// waitIdle polls sinfo until the node is idle.
func (c *cluster) waitIdle(ctx context.Context) error {
	last := ""
	err := poll(ctx, "the node to be idle", func() (bool, error) {
		for _, d := range c.daemons {
			if err := exited(d); err != nil {
				return false, err
			}
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, "sinfo", "-h", "-N", "-o", "%T")
		cmd.Env = c.env()
		out, _ := cmd.CombinedOutput()
		last = strings.TrimSpace(string(out))
		return last == "idle", nil
	})
	if err != nil {
		return fmt.Errorf("%w (sinfo said %q)", err, last)
	}
	return nil
}

// exited reports a daemon that is gone, with the end of its output.
func exited(d *daemon) error {
	select {
	case <-d.done:
		out, _ := os.ReadFile(filepath.Join(d.cmd.Dir, d.name+".out"))
		return fmt.Errorf("%s exited: %v\n%s", d.name, d.err, tail(string(out), 2000))
	default:
		return nil
	}
}

// poll calls ready every 50 ms until it is true, it fails, or ctx ends.
func poll(ctx context.Context, what string, ready func() (bool, error)) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := ready()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// env is the environment of Slurm's clients: this process's, without any
// launcher's variables (the test may itself run under one), with SLURM_CONF.
func (c *cluster) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if launcherVar(name) {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "SLURM_CONF="+c.conf)
}

func launcherVar(name string) bool {
	for _, p := range []string{"SLURM_", "GOROVOD_", "OMPI_", "PMI_", "PMIX_", "HOROVOD_"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	switch name {
	case "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT":
		return true
	}
	return false
}

// stop stops the daemons, last started first, and removes the folder; on
// failure it first logs the daemons' logs.
func (c *cluster) stop(t *testing.T) {
	t.Helper()
	if t.Failed() {
		c.logLogs(t)
	}
	var errs []error
	for i := len(c.daemons) - 1; i >= 0; i-- {
		errs = append(errs, c.daemons[i].stop(15*time.Second))
	}
	if err := errors.Join(errs...); err != nil {
		t.Error(err)
	}
	if err := os.RemoveAll(c.dir); err != nil {
		t.Error(err)
	}
}

func (c *cluster) logLogs(t *testing.T) {
	t.Helper()
	for _, f := range []string{"munged.log", "slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out"} {
		if b, err := os.ReadFile(filepath.Join(c.dir, f)); err == nil {
			t.Logf("%s:\n%s", f, tail(string(b), 4000))
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
