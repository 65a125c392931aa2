package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorovod/gorovod/test/netns"
)

// TestMultiHost runs gorun across three "hosts" (network namespaces with a
// real sshd each, see test/netns) from the root namespace, so every worker
// is started over ssh. The subtests share one cluster; each one leaves it
// as it found it.
func TestMultiHost(t *testing.T) {
	c := setupCluster(t, 3)
	sshEnv := "GOROVOD_SSH_ARGS=" + strings.Join(c.SSHArgs(), " ")

	t.Run("AllreduceByName", func(t *testing.T) {
		outDir := t.TempDir()
		r := gorunEnv(t, time.Minute, []string{sshEnv}, "-np", "6", "-H", c.HostNamesFlag(2),
			"--output-filename", outDir, "--verbose", "allreducecheck")
		checkAllOK(t, r, 6)
		// The launcher reports its choice of addresses in verbose mode.
		if !strings.Contains(r.out, "route to the launcher") || !strings.Contains(r.out, c.Hosts[1].Addr) {
			t.Errorf("verbose output does not report the address chosen for host2 (%s):\n%s", c.Hosts[1].Addr, r.out)
		}
		// Output files of remote ranks are written on the launcher's side.
		b, err := os.ReadFile(filepath.Join(outDir, "rank.3", "stdout"))
		if err != nil || !strings.Contains(string(b), "rank 3 of 6:") {
			t.Errorf("rank 3's output file: %v %q", err, b)
		}
		checkNoWorkers(t, c, "allreducecheck")
	})

	t.Run("AllreduceByAddressAndInterface", func(t *testing.T) {
		r := gorunEnv(t, time.Minute, []string{sshEnv}, "-np", "6", "-H", c.HostsFlag(2),
			"--network-interface", "eth0", "allreducecheck", "-quick")
		checkAllOK(t, r, 6)
	})

	t.Run("HierarchicalAllreduceAcrossHosts", func(t *testing.T) {
		// Within each host over shared memory, across hosts over TCP; the
		// full check's 65537-element tensors are above the small-message
		// threshold, so they take the hierarchical algorithm.
		r := gorunEnv(t, time.Minute, []string{sshEnv, "GOROVOD_HIERARCHICAL_ALLREDUCE=1"}, "-np", "6", "-H", c.HostNamesFlag(2),
			"allreducecheck")
		checkAllOK(t, r, 6)
	})

	t.Run("LocalAndRemoteWorkers", func(t *testing.T) {
		// Workers on the launcher's machine must not use loopback when
		// remote peers have to reach them.
		r := gorunEnv(t, time.Minute, []string{sshEnv}, "-np", "4", "-H", "localhost:2,host2:2", "--verbose", "allreducecheck", "-quick")
		checkAllOK(t, r, 4)
		if want := "local workers " + c.RootAddr + ")"; !strings.Contains(r.out, want) {
			t.Errorf("verbose output lacks %s:\n%s", want, r.out)
		}
	})

	t.Run("EnvironmentAndDirectoryOfRemoteWorkers", func(t *testing.T) {
		dir := t.TempDir()
		script := `tr '\0' ' ' < /proc/$PPID/cmdline; echo; echo "$FOO|$GOROVOD_EXTRA|$GOROVOD_RANK|$GOROVOD_HOSTNAME|$(hostname)|$(pwd)|${GORUN_TEST_LOCAL_ONLY:-unset}"`
		j := startGorunIn(t, dir, []string{sshEnv, "GOROVOD_EXTRA=from-launcher", "GORUN_TEST_LOCAL_ONLY=1"},
			"-np", "2", "-H", "host1:1,host3:1", "-x", "FOO=a b'c", "sh", "-c", script)
		code, out := j.wait(t, time.Minute)
		if code != 0 {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		for rank, host := range []string{"host1", "host3"} {
			want := fmt.Sprintf("[%d]<stdout>:a b'c|from-launcher|%d|%s|%s|%s|unset\n", rank, rank, host, host, dir)
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
			// The environment (and the job secret in it) is not on any
			// command line: the wrapper's argv is just gorun's mode.
			wrapper := fmt.Sprintf("[%d]<stdout>:%s --internal-remote-exec \n", rank, filepath.Join(binDir, "gorun"))
			if !strings.Contains(out, wrapper) {
				t.Errorf("output lacks the wrapper's command line %q:\n%s", wrapper, out)
			}
		}
	})

	t.Run("StandardEnvironmentOfRemoteWorkers", func(t *testing.T) {
		// RANK & co. reach remote workers; MASTER_ADDR is rank 0's
		// data-plane address (host1's) with a port its ssh check found free.
		// GROUP_RANK is the host's index; Horovod's cross rank and size
		// count the hosts that have the worker's local rank.
		r := gorunEnv(t, time.Minute, []string{sshEnv}, "-np", "3", "-H", "host1:1,host2:2", "sh", "-c",
			`echo "$RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $GROUP_RANK/$GROUP_WORLD_SIZE $HOROVOD_CROSS_RANK/$HOROVOD_CROSS_SIZE $MASTER_ADDR:$MASTER_PORT"`)
		if r.code != 0 {
			t.Fatalf("exit %d:\n%s", r.code, r.out)
		}
		m := regexp.MustCompile(`\[0\]<stdout>:0 3 0 1 0/2 0/2 (\S+):(\d+)\n`).FindStringSubmatch(r.out)
		if m == nil || m[1] != c.Hosts[0].Addr {
			t.Fatalf("rank 0's line, want MASTER_ADDR %s:\n%s", c.Hosts[0].Addr, r.out)
		}
		for _, want := range []string{"[1]<stdout>:1 3 0 2 1/2 1/2 " + m[1] + ":" + m[2] + "\n", "[2]<stdout>:2 3 1 2 1/2 0/1 " + m[1] + ":" + m[2] + "\n"} {
			if !strings.Contains(r.out, want) {
				t.Errorf("output lacks %q:\n%s", want, r.out)
			}
		}
	})

	t.Run("RemoteWorkersShareTheirHostsCores", func(t *testing.T) {
		// Worked out on the remote host (the namespaces share this
		// machine's cores): two workers there get half of them each.
		want := fmt.Sprintf("gomaxprocs=%d", max(1, runtime.NumCPU()/2))
		r := gorunEnv(t, time.Minute, []string{sshEnv}, "-np", "2", "-H", "host2:2", "sh", "-c", `echo "gomaxprocs=$GOMAXPROCS"`)
		if r.code != 0 || strings.Count(r.out, want) != 2 {
			t.Errorf("exit %d; want both workers on host2 to print %s:\n%s", r.code, want, r.out)
		}
	})

	t.Run("UnknownInterfaceFailsPreflight", func(t *testing.T) {
		r := gorunEnv(t, time.Minute, []string{sshEnv}, "-np", "3", "-H", c.HostNamesFlag(1),
			"--network-interface", "ib7", "allreducecheck")
		if r.code == 0 || !strings.Contains(r.out, "ib7") || !strings.Contains(r.out, "host1") {
			t.Errorf("exit %d; want a preflight failure naming ib7 and host1:\n%s", r.code, r.out)
		}
	})

	t.Run("KillingOneRemoteWorkerStopsTheJob", func(t *testing.T) {
		prog := longRunner(t, "kill")
		j := startGorun(t, []string{sshEnv}, "-np", "6", "-H", c.HostNamesFlag(2), "--kill-grace-period", "2s", prog, "600")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pattern := regexp.QuoteMeta(prog)
		for i := range c.Hosts {
			if _, err := c.AwaitProcesses(ctx, i, pattern, 2); err != nil {
				t.Fatalf("workers on %s: %v\n%s", c.Hosts[i].Name, err, j.output())
			}
		}
		pids, err := c.Processes(1, pattern)
		if err != nil || len(pids) == 0 {
			t.Fatalf("workers on host2: %v %v", pids, err)
		}
		if out, err := c.Run(ctx, 1, "kill", "-KILL", strconv.Itoa(pids[0])); err != nil {
			t.Fatalf("kill: %v %s", err, out)
		}
		code, out := j.wait(t, 30*time.Second)
		if code == 0 {
			t.Fatalf("gorun exited 0 after a worker was killed:\n%s", out)
		}
		// Ranks 2 and 3 run on host2.
		if !regexp.MustCompile(`rank [23] \(pid \d+, host host2\) was killed by signal SIGKILL`).MatchString(out) {
			t.Errorf("gorun's output does not name the killed rank on host2:\n%s", out)
		}
		for i := range c.Hosts {
			if _, err := c.AwaitProcesses(ctx, i, pattern, 0); err != nil {
				t.Errorf("workers left on %s: %v", c.Hosts[i].Name, err)
			}
		}
	})

	t.Run("LostSSHConnectionStopsTheJob", func(t *testing.T) {
		prog := longRunner(t, "lostssh")
		j := startGorun(t, []string{sshEnv}, "-np", "6", "-H", c.HostNamesFlag(2), "--kill-grace-period", "2s", prog, "600")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pattern := regexp.QuoteMeta(prog)
		for i := range c.Hosts {
			if _, err := c.AwaitProcesses(ctx, i, pattern, 2); err != nil {
				t.Fatalf("workers on %s: %v\n%s", c.Hosts[i].Name, err, j.output())
			}
		}
		// The ssh client carrying one of host3's workers dies: its worker
		// must go, and the job with it.
		var sshPid int
		for _, pid := range childrenOf(t, j.cmd.Process.Pid) {
			if args := cmdline(pid); len(args) > 0 && filepath.Base(args[0]) == "ssh" && slices.Contains(args, "host3") {
				sshPid = pid
				break
			}
		}
		if sshPid == 0 {
			t.Fatalf("no ssh client of gorun for host3")
		}
		if err := syscall.Kill(sshPid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		code, out := j.wait(t, 30*time.Second)
		if code == 0 || !regexp.MustCompile(`rank [45] \(pid \d+, host host3\) is lost: its ssh client was killed by signal SIGKILL`).MatchString(out) {
			t.Errorf("exit %d; want a failure naming rank 4 or 5 on host3:\n%s", code, out)
		}
		for i := range c.Hosts {
			if _, err := c.AwaitProcesses(ctx, i, pattern, 0); err != nil {
				t.Errorf("workers left on %s: %v", c.Hosts[i].Name, err)
			}
		}
	})

	t.Run("NetworkCutStopsTheJobAndTheCutOffWorkers", func(t *testing.T) {
		prog := longRunner(t, "netcut")
		// Short keepalives so the test is quick: ssh gives up on a silent
		// connection after ~2 s, a remote wrapper after 3 s without a ping.
		fastEnv := []string{sshEnv + " -o ServerAliveInterval=1 -o ServerAliveCountMax=2", "GOROVOD_SSH_SILENCE_TIMEOUT=3s"}
		j := startGorun(t, fastEnv, "-np", "6", "-H", c.HostNamesFlag(2), "--kill-grace-period", "1s", prog, "600")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pattern := regexp.QuoteMeta(prog)
		for i := range c.Hosts {
			if _, err := c.AwaitProcesses(ctx, i, pattern, 2); err != nil {
				t.Fatalf("workers on %s: %v\n%s", c.Hosts[i].Name, err, j.output())
			}
		}
		if err := c.Disconnect(1); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := c.Reconnect(1); err != nil {
				t.Errorf("reconnecting host2: %v", err)
			}
		})
		code, out := j.wait(t, 30*time.Second)
		if code == 0 || !regexp.MustCompile(`rank [23] \(pid \d+, host host2\) is lost: ssh to host2 failed or the connection dropped`).MatchString(out) {
			t.Errorf("exit %d; want a failure naming rank 2 or 3 on host2:\n%s", code, out)
		}
		for i := range c.Hosts {
			if _, err := c.AwaitProcesses(ctx, i, pattern, 0); err != nil {
				t.Errorf("workers left on %s: %v", c.Hosts[i].Name, err)
			}
		}
	})

	t.Run("SIGKILLedLauncherLeavesNoWorker", func(t *testing.T) {
		prog := longRunner(t, "orphan")
		j := startGorun(t, []string{sshEnv}, "-np", "6", "-H", c.HostNamesFlag(2), prog, "600")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pattern := regexp.QuoteMeta(prog)
		for i := range c.Hosts {
			if _, err := c.AwaitProcesses(ctx, i, pattern, 2); err != nil {
				t.Fatalf("workers on %s: %v\n%s", c.Hosts[i].Name, err, j.output())
			}
		}
		if err := j.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		j.wait(t, 10*time.Second)
		for i := range c.Hosts {
			if _, err := c.AwaitProcesses(ctx, i, pattern, 0); err != nil {
				t.Errorf("worker left on %s after gorun was killed: %v", c.Hosts[i].Name, err)
			}
		}
	})

	t.Run("HostWithSSHDDownFailsBeforeAnyWorkerStarts", func(t *testing.T) {
		if err := c.StopSSHD(1); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := c.StartSSHD(ctx, 1); err != nil {
				t.Errorf("restarting host2's sshd: %v", err)
			}
		})
		// Every worker would create this file (the filesystem is shared),
		// so its absence shows that none started anywhere.
		marker := filepath.Join(t.TempDir(), "worker-started")
		r := gorunEnv(t, time.Minute, []string{sshEnv}, "-np", "6", "-H", c.HostNamesFlag(2), "touch", marker)
		if r.code == 0 {
			t.Fatalf("gorun succeeded with host2's sshd down:\n%s", r.out)
		}
		want := fmt.Sprintf("host2 (%s): ssh: connect to host %s port 22: Connection refused", c.Hosts[1].Addr, c.Hosts[1].Addr)
		if !strings.Contains(r.out, want) {
			t.Errorf("output lacks %q:\n%s", want, r.out)
		}
		if strings.Contains(r.out, "host1 (") || strings.Contains(r.out, "host3 (") {
			t.Errorf("healthy hosts reported as failed:\n%s", r.out)
		}
		if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a worker started although the preflight check failed (stat: %v)", err)
		}
	})
}

// setupCluster is netns.Setup, except that cleanup tolerates a veth that
// vanished with its namespace between lookup and delete ("RTNETLINK
// answers: No such device"), a race in the harness's Close that its
// notFound check does not cover yet.
func setupCluster(t *testing.T, n int) *netns.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := netns.New(ctx, n)
	if errors.Is(err, netns.ErrNotPermitted) {
		t.Skipf("skipping multi-host test: %v", err)
	}
	if err != nil {
		t.Fatalf("netns.New(%d hosts): %v", n, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i, h := range c.Hosts {
				t.Logf("sshd log of %s (%s):\n%s", h.Name, h.Addr, c.SSHDLog(i))
			}
		}
		if err := c.Close(); err != nil {
			var rest []string
			for _, line := range strings.Split(err.Error(), "\n") {
				if strings.TrimSpace(line) != "" && !strings.Contains(line, "No such device") {
					rest = append(rest, line)
				}
			}
			if len(rest) > 0 {
				t.Errorf("netns cleanup: %v", err)
			} else {
				t.Logf("netns cleanup (harmless race): %v", err)
			}
		}
	})
	return c
}

// longRunner returns the path of a program that runs until killed and whose
// path is unique to the test, so process lists can be matched exactly: a
// symlink to sleep's binary, called with a long duration.
func longRunner(t *testing.T, name string) string {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep program")
	}
	p := filepath.Join(t.TempDir(), "longrunner-"+name)
	if err := os.Symlink(sleep, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func checkAllOK(t *testing.T, r result, n int) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit code %d; output:\n%s", r.code, r.out)
	}
	for rank := 0; rank < n; rank++ {
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^\[%d\]<stdout>:rank %d of %d: \d+ checks OK$`, rank, rank, n))
		if !re.MatchString(r.out) {
			t.Errorf("no success line with prefix for rank %d; output:\n%s", rank, r.out)
		}
	}
}

func checkNoWorkers(t *testing.T, c *netns.Cluster, name string) {
	t.Helper()
	for i := range c.Hosts {
		if pids, err := c.Processes(i, regexp.QuoteMeta(filepath.Join(binDir, name))); err != nil || len(pids) > 0 {
			t.Errorf("%s on %s after the job: %v %v", name, c.Hosts[i].Name, pids, err)
		}
	}
}

// gorunEnv is gorun with extra environment.
func gorunEnv(t *testing.T, bound time.Duration, extraEnv []string, args ...string) result {
	t.Helper()
	j := startGorun(t, extraEnv, args...)
	code, out := j.wait(t, bound)
	return result{out: out, code: code}
}

type job struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

// startGorun starts bin/gorun in the background; test program names
// (allreducecheck, worker) become paths in binDir.
func startGorun(t *testing.T, extraEnv []string, args ...string) *job {
	t.Helper()
	return startGorunIn(t, "", extraEnv, args...)
}

// startGorunIn is startGorun in working directory dir ("" = the test's).
func startGorunIn(t *testing.T, dir string, extraEnv []string, args ...string) *job {
	t.Helper()
	for i, a := range args {
		if a == "allreducecheck" || a == "worker" {
			args[i] = filepath.Join(binDir, a)
		}
	}
	cmd := exec.Command(filepath.Join(binDir, "gorun"), args...)
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.Dir = dir
	j := &job{cmd: cmd, out: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = j.out, j.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { j.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-j.done
	})
	return j
}

func (j *job) output() string { return j.out.String() }

// wait returns gorun's exit code and output; running past bound fails the
// test.
func (j *job) wait(t *testing.T, bound time.Duration) (int, string) {
	t.Helper()
	timer := time.NewTimer(bound)
	defer timer.Stop()
	select {
	case err := <-j.done:
		j.done <- err // for the cleanup
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			return ee.ExitCode(), j.output()
		case err != nil:
			t.Fatalf("gorun: %v", err)
		}
		return 0, j.output()
	case <-timer.C:
		t.Fatalf("gorun %v did not finish within %v; output:\n%s", j.cmd.Args[1:], bound, j.output())
	}
	return 0, ""
}

// syncBuffer is a bytes.Buffer safe for gorun's two output streams.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// childrenOf lists the pids whose parent is pid.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // gone meanwhile
		}
		// "pid (comm) state ppid ...": comm may hold spaces, so parse after ')'.
		i := bytes.LastIndexByte(b, ')')
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			child, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
			out = append(out, child)
		}
	}
	return out
}

// cmdline is a process's argv, nil when it is gone.
func cmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}
