package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gorovod/gorovod/internal/consultest"
)

// End-to-end tests of elastic jobs: gorun hosts the driver and starts this
// example as separate processes on this machine; the tests kill, stop and
// add workers and hosts while it trains. Settings are fast (slot cooldown
// 1 s) so each test takes a few seconds, except the heartbeat, which is
// gorun's default of 1 s: on a loaded machine (CI runs test packages in
// parallel on 2 cores) every worker's heartbeat was seen late at once, by
// 0.5 s to over 1.5 s, which 3 missed heartbeats of 200 or 500 ms took for
// 3 hung workers.
const heartbeat = time.Second

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gorovod-elastic-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/gorovod/gorovod/cmd/gorun", "github.com/gorovod/gorovod/examples/elastic")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// job is a running gorun whose output lines are collected.
type job struct {
	t       *testing.T
	cmd     *exec.Cmd
	mu      sync.Mutex
	lines   []string
	changed chan struct{}
	done    chan struct{}
	code    int
}

func startJob(t *testing.T, bound time.Duration, args ...string) *job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	t.Cleanup(cancel)
	full := append([]string{"--heartbeat", heartbeat.String(), "--start-timeout", "10s"}, args...)
	for i, a := range full {
		if a == "EXAMPLE" {
			full[i] = filepath.Join(binDir, "elastic")
		}
	}
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "gorun"), full...)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	j := &job{t: t, cmd: cmd, changed: make(chan struct{}), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			j.mu.Lock()
			j.lines = append(j.lines, sc.Text())
			close(j.changed)
			j.changed = make(chan struct{})
			j.mu.Unlock()
		}
		pr.Close()
		err := cmd.Wait()
		var ee *exec.ExitError
		j.mu.Lock()
		if errors.As(err, &ee) {
			j.code = ee.ExitCode()
		} else if err != nil {
			j.code = -1
		}
		j.mu.Unlock()
		close(j.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-j.done
		if t.Failed() {
			t.Logf("gorun output:\n%s", j.output())
		}
	})
	return j
}

func (j *job) output() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return strings.Join(j.lines, "\n")
}

// waitFor waits up to bound for a line matching re and returns its
// submatches. Each line is matched once: rescanning every line on each new
// one would make this reader, and through the pipe gorun and its workers,
// slow down as the output grows.
func (j *job) waitFor(re string, bound time.Duration) []string {
	j.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	next := 0
	for {
		j.mu.Lock()
		for ; next < len(j.lines); next++ {
			if m := rx.FindStringSubmatch(j.lines[next]); m != nil {
				j.mu.Unlock()
				return m
			}
		}
		ch := j.changed
		j.mu.Unlock()
		select {
		case <-ch:
		case <-j.done:
			if m := rx.FindStringSubmatch(j.output()); m != nil {
				return m
			}
			j.t.Fatalf("gorun exited (code %d) before printing %q", j.code, re)
		case <-deadline.C:
			j.t.Fatalf("no line matching %q within %v", re, bound)
		}
	}
}

// wait waits up to bound for gorun to exit and returns its exit code.
func (j *job) wait(bound time.Duration) int {
	j.t.Helper()
	select {
	case <-j.done:
		return j.code
	case <-time.After(bound):
		j.t.Fatalf("gorun did not exit within %v", bound)
		return 0
	}
}

func (j *job) pid(id string) int {
	j.t.Helper()
	m := j.waitFor(`started worker `+id+` on \S+ \(pid (\d+)\)`, 10*time.Second)
	n, _ := strconv.Atoi(m[1])
	return n
}

func (j *job) signal(id string, sig syscall.Signal) {
	j.t.Helper()
	if err := syscall.Kill(j.pid(id), sig); err != nil {
		j.t.Fatalf("signal %v to %s: %v", sig, id, err)
	}
}

var workerLine = regexp.MustCompile(`^\[(w\d+)\]<stdout>:(\w[\w-]*) (.*)$`)

// progress is what each worker printed: its committed steps, the steps it
// started at, its final checksum.
type progress struct {
	log      []string
	checksum string
	updated  []string
}

func (j *job) progress() map[string]*progress {
	out := map[string]*progress{}
	for _, l := range strings.Split(j.output(), "\n") {
		m := workerLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		p := out[m[1]]
		if p == nil {
			p = &progress{}
			out[m[1]] = p
		}
		fields := map[string]string{}
		for _, f := range strings.Fields(m[3]) {
			if k, v, ok := strings.Cut(f, "="); ok {
				fields[k] = v
			}
		}
		switch m[2] {
		case "commit":
			p.log = append(p.log, "c"+fields["step"])
		case "start":
			p.log = append(p.log, "s"+fields["step"])
		case "done":
			p.checksum = fields["checksum"]
		case "hosts-updated":
			p.updated = append(p.updated, fields["step"])
		}
	}
	return out
}

// checkSteps: the worker's committed steps, counting those adopted by a
// sync at a start, are first+1..n, each once.
func checkSteps(t *testing.T, id string, p *progress, n int) {
	t.Helper()
	var got []int
	last := -1
	for _, e := range p.log {
		v, _ := strconv.Atoi(e[1:])
		switch e[0] {
		case 'c':
			got = append(got, v)
			last = v
		case 's':
			if last >= 0 && v < last {
				t.Fatalf("%s restarted at step %d after committing %d: %v", id, v, last, p.log)
			}
			for s := last + 1; last >= 0 && s <= v; s++ {
				got = append(got, s)
			}
			last = v
		}
	}
	if len(got) == 0 {
		t.Fatalf("%s committed nothing", id)
	}
	first := got[0]
	for i, s := range got {
		if s != first+i {
			t.Fatalf("%s: committed steps have a gap or repeat at %d: %v", id, s, p.log)
		}
	}
	if got[len(got)-1] != n {
		t.Fatalf("%s: last committed step %d, want %d", id, got[len(got)-1], n)
	}
}

// checkDone: every worker that finished has the same checksum, and at
// least want of them finished.
func checkDone(t *testing.T, ps map[string]*progress, want int) {
	t.Helper()
	sum, n := "", 0
	for id, p := range ps {
		if p.checksum == "" {
			continue
		}
		n++
		if sum == "" {
			sum = p.checksum
		} else if p.checksum != sum {
			t.Fatalf("%s ends with parameters %s, another rank with %s", id, p.checksum, sum)
		}
	}
	if n < want {
		t.Fatalf("%d workers finished, want %d", n, want)
	}
}

const steps = 120

func trainArgs(extra ...string) []string { return trainArgsN(steps, extra...) }

func trainArgsN(n int, extra ...string) []string {
	return append(extra, "EXAMPLE", "-data", "synthetic", "-samples", "2000", "-steps", strconv.Itoa(n), "-step-delay", "15ms")
}

func testKill(t *testing.T, victim string, survivors []string, newRank0 string) {
	j := startJob(t, 90*time.Second, trainArgs("--min-np", "2", "-H", "localhost:4", "--blacklist-cooldown-range", "1s,4s")...)
	j.waitFor(`^\[w1\]<stdout>:commit step=20$`, 30*time.Second)
	j.signal(victim, syscall.SIGKILL)
	m := j.waitFor(`elastic: epoch 2: 3 workers \[0=(w\d+)@`, 20*time.Second)
	if m[1] != newRank0 {
		t.Fatalf("rank 0 of epoch 2 is %s, want %s (the oldest surviving slot)", m[1], newRank0)
	}
	j.waitFor(`elastic: started worker w5 on localhost\[`, 20*time.Second)
	j.waitFor(`elastic: epoch 3: 4 workers`, 20*time.Second)
	if code := j.wait(60 * time.Second); code != 0 {
		t.Fatalf("gorun exited with %d", code)
	}
	ps := j.progress()
	for _, id := range survivors {
		if ps[id] == nil {
			t.Fatalf("no output from survivor %s", id)
		}
		checkSteps(t, id, ps[id], steps)
	}
	checkDone(t, ps, 4)
}

// Acceptance 1: kill -9 of a non-zero rank: 3 survivors go on, the slot is
// refilled after its cooldown, the run completes with equal parameters.
func TestKillNonZeroRank(t *testing.T) {
	testKill(t, "w3", []string{"w1", "w2", "w4"}, "w1")
}

// Acceptance 2: the same with rank 0; the new rank 0 is the oldest
// surviving slot.
func TestKillRankZero(t *testing.T) {
	testKill(t, "w1", []string{"w2", "w3", "w4"}, "w2")
}

// Acceptance 4: a stopped worker is removed after 3 missed heartbeats, the
// others go on; after SIGCONT it learns it is out and exits.
func TestStoppedWorkerIsRemoved(t *testing.T) {
	const n = 400
	j := startJob(t, 90*time.Second, trainArgsN(n, "--min-np", "2", "-H", "localhost:3")...)
	j.waitFor(`^\[w1\]<stdout>:commit step=20$`, 30*time.Second)
	j.signal("w2", syscall.SIGSTOP)
	j.waitFor(`worker w2 on \S+ failed: missed 3 heartbeats`, 20*time.Second)
	j.waitFor(`elastic: epoch 2: 2 workers`, 20*time.Second)
	j.waitFor(`^\[w1\]<stdout>:recovered in`, 20*time.Second)
	j.signal("w2", syscall.SIGCONT)
	j.waitFor(`worker w2 on \S+ exited with code 1`, 20*time.Second)
	if code := j.wait(60 * time.Second); code != 0 {
		t.Fatalf("gorun exited with %d", code)
	}
	if !strings.Contains(j.output(), "[w2]<stderr>:elastic: worker w2 was removed from the job") {
		t.Fatal("w2 did not say it was removed")
	}
	ps := j.progress()
	checkSteps(t, "w1", ps["w1"], n)
	checkSteps(t, "w3", ps["w3"], n)
	checkDone(t, ps, 2)
}

func writeHosts(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func discovery(t *testing.T, hosts string) (script, file string) {
	dir := t.TempDir()
	file = filepath.Join(dir, "hosts.txt")
	writeHosts(t, file, hosts)
	script = filepath.Join(dir, "discover.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\ncat "+file+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, file
}

// Acceptance 5: a host added to the discovery output joins at the next
// commit with the others' parameters, every rank seeing ErrHostsUpdated at
// the same step; a host removed: its worker exits 0, no blacklist.
func TestHostAddedThenRemoved(t *testing.T) {
	script, file := discovery(t, "127.0.0.1:2\n")
	j := startJob(t, 90*time.Second, trainArgs("--min-np", "2", "--host-discovery-script", script, "--discovery-interval", "200ms")...)
	j.waitFor(`^\[w1\]<stdout>:commit step=20$`, 30*time.Second)
	writeHosts(t, file, "127.0.0.1:2\n127.0.0.2:1\n")
	j.waitFor(`elastic: epoch 2: 3 workers .*w3@127\.0\.0\.2\[0\]`, 20*time.Second)
	m := j.waitFor(`^\[w3\]<stdout>:start epoch=2 rank=2 size=3 step=(\d+)`, 10*time.Second)
	j.waitFor(`^\[w3\]<stdout>:commit step=`+strconv.Itoa(mustAtoi(m[1])+10)+`$`, 20*time.Second)
	writeHosts(t, file, "127.0.0.1:2\n")
	j.waitFor(`elastic: worker w3 on 127\.0\.0\.2\[0\] left the job \(exited with code 0\)`, 20*time.Second)
	if code := j.wait(60 * time.Second); code != 0 {
		t.Fatalf("gorun exited with %d", code)
	}
	out := j.output()
	if strings.Contains(out, "blacklisted") || strings.Contains(out, "w3 on 127.0.0.2[0] failed") {
		t.Fatal("a host that left discovery was charged a failure")
	}
	ps := j.progress()
	for _, id := range []string{"w1", "w2"} {
		if len(ps[id].updated) == 0 || ps[id].updated[0] != m[1] {
			t.Fatalf("%s saw ErrHostsUpdated at %v; w3 started at step %s", id, ps[id].updated, m[1])
		}
		checkSteps(t, id, ps[id], steps)
	}
	checkDone(t, ps, 2)
}

func mustAtoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// Acceptance 6: a host whose workers exit 1 twice is blacklisted 1 s, then
// 2 s, and readmitted in between, all logged.
func TestFailingHostIsBlacklistedWithBackoff(t *testing.T) {
	script, _ := discovery(t, "127.0.0.1:2\n127.0.0.2:2\n")
	j := startJob(t, 90*time.Second, "--min-np", "2", "--host-discovery-script", script, "--discovery-interval", "200ms",
		"--blacklist-cooldown-range", "1s,4s", "EXAMPLE", "-data", "synthetic", "-samples", "2000", "-steps", "100000", "-step-delay", "10ms", "-crash-on-host", "127.0.0.2")
	j.waitFor(`host 127\.0\.0\.2 blacklisted for 1s \(blacklisting 1\)`, 20*time.Second)
	j.waitFor(`host 127\.0\.0\.2 readmitted`, 10*time.Second)
	j.waitFor(`host 127\.0\.0\.2 blacklisted for 2s \(blacklisting 2\)`, 20*time.Second)
	out := j.output()
	if strings.Count(out, "readmitted") != 1 {
		t.Fatalf("readmitted %d times before the second blacklisting", strings.Count(out, "readmitted"))
	}
	if strings.Contains(out, "host 127.0.0.1 blacklisted") {
		t.Fatal("the healthy host was blacklisted")
	}
}

// Acceptance 6: more resets than --reset-limit fail the job naming it.
func TestResetLimit(t *testing.T) {
	j := startJob(t, 90*time.Second, trainArgs("--min-np", "1", "-H", "localhost:3", "--reset-limit", "2")...)
	j.waitFor(`^\[w1\]<stdout>:commit step=10$`, 30*time.Second)
	j.signal("w3", syscall.SIGKILL) // reset 1; refilling the slot is reset 2
	j.waitFor(`elastic: epoch 3: 3 workers`, 20*time.Second)
	j.signal("w2", syscall.SIGKILL) // reset 3
	code := j.wait(30 * time.Second)
	if code == 0 || !strings.Contains(j.output(), "--reset-limit is 2") {
		t.Fatalf("gorun exited with %d; want a failure naming --reset-limit 2", code)
	}
}

// Acceptance 7: below --min-np for longer than --elastic-timeout: gorun
// exits non-zero within 4 s naming what it waited for.
func TestBelowMinNP(t *testing.T) {
	script, file := discovery(t, "127.0.0.1:3\n")
	j := startJob(t, 90*time.Second, trainArgs("--min-np", "3", "--host-discovery-script", script, "--discovery-interval", "100ms", "--elastic-timeout", "3s")...)
	j.waitFor(`^\[w1\]<stdout>:commit step=5$`, 30*time.Second)
	writeHosts(t, file, "127.0.0.1:2\n")
	j.waitFor(`elastic: worker w3 on 127\.0\.0\.1\[2\] leaves: its slot left discovery`, 10*time.Second)
	code := j.wait(4 * time.Second)
	if code == 0 {
		t.Fatal("gorun succeeded below --min-np")
	}
	if !strings.Contains(j.output(), "waited 3s for at least 3 workers (--min-np), had 2; hosts seen: 127.0.0.1:2") {
		t.Fatal("the failure does not name what was wanted and what was seen")
	}
}

func consulRegister(t *testing.T, c *api.Client, host, ttl string) {
	t.Helper()
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "train-" + host, Name: "train", Address: host,
		Meta: map[string]string{"slots": "1"}, Check: &api.AgentServiceCheck{CheckID: "ttl-" + host, TTL: ttl, Status: api.HealthPassing}})
	if err != nil {
		t.Fatal(err)
	}
}

// Acceptance 8: Consul: 2 passing instances give a world of 2; registering
// a third grows it; deregistering one shrinks it; an instance whose TTL
// check is not renewed leaves within TTL + 1 s.
func TestConsulDiscovery(t *testing.T) {
	srv := consultest.New()
	defer srv.Close()
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	consulRegister(t, c, "127.0.0.1", "1h")
	consulRegister(t, c, "127.0.0.2", "1h")
	j := startJob(t, 120*time.Second, "--min-np", "1", "--consul", srv.Addr(), "--consul-service", "train",
		"EXAMPLE", "-data", "synthetic", "-samples", "2000", "-steps", "1000000", "-step-delay", "10ms")
	j.waitFor(`elastic: epoch 1: 2 workers`, 30*time.Second)
	consulRegister(t, c, "127.0.0.3", "1h")
	j.waitFor(`elastic: epoch 2: 3 workers .*@127\.0\.0\.3\[0\]`, 20*time.Second)
	if err := c.Agent().ServiceDeregister("train-127.0.0.2"); err != nil {
		t.Fatal(err)
	}
	j.waitFor(`elastic: worker w2 on 127\.0\.0\.2\[0\] left the job \(exited with code 0\)`, 20*time.Second)
	j.waitFor(`elastic: epoch 3: 2 workers`, 20*time.Second)

	// a fourth instance on a TTL check, renewed until its worker trains
	const ttl = 2 * time.Second
	consulRegister(t, c, "127.0.0.4", ttl.String())
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		for i := 0; i < 60 && !strings.Contains(j.output(), "epoch 4: 3 workers"); i++ {
			_ = c.Agent().UpdateTTL("ttl-127.0.0.4", "alive", api.HealthPassing)
			time.Sleep(ttl / 4) // the renewal period of a TTL client, not a synchronisation
		}
	}()
	j.waitFor(`elastic: epoch 4: 3 workers .*@127\.0\.0\.4\[0\]`, 30*time.Second)
	<-renewed
	j.waitFor(`elastic: hosts: .*removed \[127\.0\.0\.4\]`, ttl+time.Second)
	j.waitFor(`elastic: epoch 5: 2 workers`, 20*time.Second)
	if strings.Contains(j.output(), "blacklisted") {
		t.Fatal("hosts that left Consul were blacklisted")
	}
}

// Acceptance 3: a worker killed inside the commit vote, then another inside
// the state sync of the recovery that follows (fault hooks): the survivors
// converge on the highest committed step and finish with equal parameters.
func TestKillInVoteThenInSync(t *testing.T) {
	j := startJob(t, 90*time.Second, trainArgs("--min-np", "2", "-H", "localhost:4", "--blacklist-cooldown-range", "1s,4s",
		"-x", "GOROVOD_ELASTIC_FAULT=w4:vote:20,w3:broadcast:20")...)
	j.waitFor(`fault hook: worker w4 kills itself at vote, step 20`, 30*time.Second)
	j.waitFor(`fault hook: worker w3 kills itself at broadcast, step 20`, 30*time.Second)
	j.waitFor(`elastic: epoch 3: 2 workers`, 20*time.Second)
	if code := j.wait(60 * time.Second); code != 0 {
		t.Fatalf("gorun exited with %d", code)
	}
	ps := j.progress()
	for _, id := range []string{"w1", "w2"} {
		checkSteps(t, id, ps[id], steps)
		if !strings.Contains(j.output(), "["+id+"]<stdout>:start epoch=3 rank=") {
			t.Fatalf("%s did not start in epoch 3", id)
		}
	}
	checkDone(t, ps, 2)
}
