package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// awaitOutput polls j's output until it matches re or bound passes.
func awaitOutput(t *testing.T, j *job, re string, bound time.Duration) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	for {
		if m := rx.FindStringSubmatch(j.output()); m != nil {
			return m
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no output matching %q within %v; output:\n%s", re, bound, j.output())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestElasticMultiHost (issue 10, acceptance 9): an elastic job on three
// hosts of the network-namespace cluster, 2 slots each; one host's sshd and
// workers are killed mid-training: the host is dropped (its slots fail to
// refill and it is blacklisted) and training goes on and completes on the
// other two hosts with equal parameters everywhere.
func TestElasticMultiHost(t *testing.T) {
	example := filepath.Join(binDir, "elastic")
	build := exec.Command("go", "build", "-o", example, "github.com/gorovod/gorovod/examples/elastic")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("building the elastic example: %v", err)
	}
	c := setupCluster(t, 3)
	sshEnv := "GOROVOD_SSH_ARGS=" + strings.Join(c.SSHArgs(), " ")
	j := startGorun(t, []string{sshEnv}, "--min-np", "2", "-H", c.HostNamesFlag(2), "--heartbeat", "300ms",
		"--blacklist-cooldown-range", "1m,1m", example, "-data", "synthetic", "-samples", "2000", "-steps", "300", "-step-delay", "20ms")
	awaitOutput(t, j, `elastic: epoch 1: 6 workers`, time.Minute)
	awaitOutput(t, j, `(?m)^\[w1\]<stdout>:commit step=20$`, time.Minute)

	victim := 2
	if err := c.StopSSHD(victim); err != nil {
		t.Fatal(err)
	}
	pids, err := c.Processes(victim, regexp.QuoteMeta(example))
	if err != nil || len(pids) == 0 {
		t.Fatalf("workers on %s: %v %v", c.Hosts[victim].Name, pids, err)
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	host := regexp.QuoteMeta(c.Hosts[victim].Name)
	awaitOutput(t, j, `elastic: epoch \d+: 4 workers`, time.Minute)
	awaitOutput(t, j, `host `+host+` blacklisted for 1m0s`, time.Minute)
	code, out := j.wait(t, 2*time.Minute)
	if code != 0 {
		t.Fatalf("gorun exited with %d:\n%s", code, out)
	}
	sums := regexp.MustCompile(`(?m)^\[w\d+\]<stdout>:done step=300 checksum=(\w+) `).FindAllStringSubmatch(out, -1)
	if len(sums) != 4 {
		t.Fatalf("%d workers finished, want the 4 on the surviving hosts:\n%s", len(sums), out)
	}
	for _, s := range sums {
		if s[1] != sums[0][1] {
			t.Fatalf("parameters differ: %s and %s", s[1], sums[0][1])
		}
	}
	if regexp.MustCompile(`epoch \d+: [56] workers`).MatchString(out[strings.Index(out, "blacklisted"):]) {
		t.Fatalf("the dropped host came back:\n%s", out)
	}
}
