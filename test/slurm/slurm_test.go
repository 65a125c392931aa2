// Package slurm runs Gorovod under a real Slurm: the test starts munged,
// slurmctld and slurmd from Debian's slurm-wlm packages on this machine
// (one node, foreground, a configuration the test writes into a temporary
// folder), runs allreducecheck with srun -n 2 and srun -n 3, and stops them.
// The workers find their place in Slurm's SLURM_* variables alone; rank 0
// serves rendezvous on a port derived from the job and step ids.
//
// It needs root (slurmd runs the tasks) and the packages slurmctld, slurmd,
// slurm-client and munge; when they are missing it runs
// scripts/deps.sh slurm, and skips, saying why, only when that cannot
// install them. Runs take /tmp/gorovod-slurm.lock (or run under
// "flock /tmp/gorovod-slurm.lock"), so two checkouts on one machine do not
// start two clusters at once.
package slurm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

var binDir string // allreducecheck, built for the test

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gorovod-slurm-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/gorovod/gorovod/test/allreducecheck")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building allreducecheck:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var slurmPrograms = []string{"munged", "mungekey", "slurmctld", "slurmd", "srun", "sinfo"}

// requireSlurm installs the packages if they are missing, or skips.
func requireSlurm(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("a one-node Slurm needs Linux and root (slurmd runs the tasks); not root here")
	}
	if missing := missingPrograms(); len(missing) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "../../scripts/deps.sh", "slurm").CombinedOutput()
		t.Logf("scripts/deps.sh slurm (for %v): %v %s", missing, err, out)
	}
	if missing := missingPrograms(); len(missing) > 0 {
		t.Skipf("Slurm cannot run here: %v missing and scripts/deps.sh slurm could not install "+
			"slurmctld, slurmd, slurm-client and munge (see /tmp/gorovod-deps.log)", missing)
	}
}

func missingPrograms() []string {
	var missing []string
	for _, p := range slurmPrograms {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	return missing
}

const lockPath = "/tmp/gorovod-slurm.lock"

// lockSlurm takes /tmp/gorovod-slurm.lock (waiting at most until ctx
// ends): one cluster on this machine at a time. Under
// "flock /tmp/gorovod-slurm.lock go test ..." the test inherits the
// wrapper's locked descriptor and holds the lock already.
func lockSlurm(ctx context.Context, t *testing.T) {
	t.Helper()
	if inheritedLock() {
		return
	}
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	err = poll(ctx, lockPath, func() (bool, error) {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		return err == nil, nil
	})
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the lock
}

// inheritedLock reports whether one of this process's descriptors is the
// lock file, locked (a flock on a descriptor whose open file already holds
// the lock succeeds at once; one another process holds fails).
func inheritedLock() bool {
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		if target, err := os.Readlink("/proc/self/fd/" + fd.Name()); err != nil || target != lockPath {
			continue
		}
		var n int
		if _, err := fmt.Sscan(fd.Name(), &n); err == nil && syscall.Flock(n, syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			return true
		}
	}
	return false
}

func TestSrunAllreducecheck(t *testing.T) {
	requireSlurm(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	lockSlurm(ctx, t)
	before := slurmProcesses(t)

	startCtx, startCancel := context.WithTimeout(ctx, time.Minute)
	c, err := startCluster(startCtx)
	startCancel()
	if c != nil {
		defer func() {
			c.stop(t)
			noLeftovers(ctx, t, before)
		}()
	}
	if err != nil {
		t.Fatalf("starting the cluster: %v", err)
	}
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("srun-n%d", n), func(t *testing.T) { srunCheck(ctx, t, c, n) })
	}
}

// srunCheck runs allreducecheck as n Slurm tasks and checks every rank
// reports success with the right world size.
func srunCheck(ctx context.Context, t *testing.T, c *cluster, n int) {
	rctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(rctx, "srun", "-n", fmt.Sprint(n), "--kill-on-bad-exit=1", "--job-name=gorovod-test",
		filepath.Join(binDir, "allreducecheck"))
	cmd.Dir, cmd.Env = c.dir, c.env()
	out, err := cmd.CombinedOutput()
	if rctx.Err() != nil {
		t.Fatalf("srun -n %d did not finish within 3 minutes; output:\n%s", n, out)
	}
	if err != nil {
		t.Fatalf("srun -n %d: %v; output:\n%s", n, err, out)
	}
	t.Logf("srun -n %d:\n%s", n, out)
	for rank := range n {
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^rank %d of %d: [1-9]\d* checks OK$`, rank, n))
		if !re.MatchString(string(out)) {
			t.Errorf("srun -n %d: no success line for rank %d; output:\n%s", n, rank, out)
		}
	}
}

// slurmProcesses lists the pids of processes named like Slurm's, munge's
// and the test program.
func slurmProcesses(t *testing.T) []string {
	t.Helper()
	comms, err := filepath.Glob("/proc/[0-9]*/comm")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, f := range comms {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // exited meanwhile
		}
		switch strings.TrimSpace(string(b)) {
		case "munged", "slurmctld", "slurmd", "slurmstepd", "allreducecheck":
			pids = append(pids, strings.Split(f, "/")[2])
		}
	}
	return pids
}

// noLeftovers waits, boundedly, until no such process is left that was not
// there before the test.
func noLeftovers(ctx context.Context, t *testing.T, before []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var extra []string
	err := poll(ctx, "Slurm's processes to end", func() (bool, error) {
		extra = extra[:0]
		for _, p := range slurmProcesses(t) {
			if !slices.Contains(before, p) {
				extra = append(extra, p)
			}
		}
		return len(extra) == 0, nil
	})
	if err != nil {
		t.Errorf("%v: left running: pids %v", err, extra)
	}
}
