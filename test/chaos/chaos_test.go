package chaos

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	runs      = flag.Int("chaos.runs", 12, "number of runs")
	seedFlag  = flag.Uint64("chaos.seed", 0, "seed of the scenarios (0: from the clock)")
	onlyRun   = flag.Int("chaos.run", -1, "run only this run of the seed's sequence")
	keepGoing = flag.Bool("chaos.all", true, "finish every run even after a failure")
)

// progressTimeout is the workers' GOROVOD_PROGRESS_TIMEOUT: a stop past it
// fails the job, a stop well short of it does not.
const progressTimeout = 3 * time.Second

var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "gorovod-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	cmd := exec.Command("go", "build", "-o", dir+"/",
		"github.com/gorovod/gorovod/cmd/gorun",
		"github.com/gorovod/gorovod/test/worker")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building test binaries:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type fault int

const (
	killWorker fault = iota // SIGKILL of a rank other than 0
	killRank0
	killGorun
	stopPast  // SIGSTOP of a rank past the progress timeout, then SIGCONT
	stopShort // SIGSTOP well short of it
	garbage   // random bytes to every listening port of the job
	numFaults
)

func (f fault) String() string {
	return [...]string{"kill-worker", "kill-rank0", "kill-gorun", "stop-past", "stop-short", "garbage"}[f]
}

// scenario is one run, drawn from the seed.
type scenario struct {
	np     int
	shm    bool
	fault  fault
	target int           // the rank the fault hits
	delay  time.Duration // after the trigger (workers started, or ready for stops)
}

func (s scenario) String() string {
	return fmt.Sprintf("np=%d shm=%v fault=%v target=%d delay=%v", s.np, s.shm, s.fault, s.target, s.delay)
}

func draw(seed uint64, run int) scenario {
	rng := rand.New(rand.NewPCG(seed, uint64(run)))
	s := scenario{np: 2 + rng.IntN(3), shm: rng.IntN(2) == 0, fault: fault(rng.IntN(int(numFaults)))}
	switch s.fault {
	case killWorker:
		s.target = 1 + rng.IntN(s.np-1)
	case killRank0, killGorun:
		s.target = 0
	default:
		s.target = rng.IntN(s.np)
	}
	s.delay = time.Duration(rng.Int64N(int64(1500 * time.Millisecond)))
	return s
}

// Problem categories.
const (
	catHang     = "hang"
	catOrphan   = "orphan"
	catLeftover = "leftover"
	catBlame    = "blame"
	catOther    = "other"
)

var categories = []string{catHang, catOrphan, catLeftover, catBlame, catOther}

type problem struct{ cat, what string }

func TestChaos(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	fmt.Fprintf(os.Stderr, "chaos: seed %d, %d runs (replay: go test ./test/chaos -chaos.seed %d -chaos.runs %d)\n", seed, *runs, seed, *runs)
	t.Logf("seed %d", seed)
	counts := map[string]int{}
	faults := map[fault]int{}
	hits := map[fault]int{} // runs the fault hit before the job ended
	for i := 0; i < *runs; i++ {
		if *onlyRun >= 0 && i != *onlyRun {
			continue
		}
		sc := draw(seed, i)
		faults[sc.fault]++
		out, hit, probs := runOne(t, sc)
		if hit {
			hits[sc.fault]++
		}
		for _, p := range probs {
			counts[p.cat]++
			t.Errorf("run %d (%v): %s: %s", i, sc, p.cat, p.what)
		}
		if len(probs) > 0 {
			t.Logf("run %d output:\n%s", i, out)
			if !*keepGoing {
				break
			}
		} else if testing.Verbose() {
			t.Logf("run %d (%v): ok", i, sc)
		}
	}
	var summary []string
	for _, c := range categories {
		summary = append(summary, fmt.Sprintf("%s=%d", c, counts[c]))
	}
	var fs []string
	for f := fault(0); f < numFaults; f++ {
		fs = append(fs, fmt.Sprintf("%v=%d/%d", f, hits[f], faults[f]))
	}
	fmt.Fprintf(os.Stderr, "chaos: seed %d: faults that hit/runs %s; problems %s\n", seed, strings.Join(fs, " "), strings.Join(summary, " "))
}

// job is one running gorun and what its output told about the workers.
type job struct {
	sc  scenario
	cmd *exec.Cmd

	mu      sync.Mutex
	out     strings.Builder
	pids    map[int]int // rank -> pid
	pidfds  map[int]int // rank -> pidfd (opened at the pid line, so no reuse)
	tag     string      // the job's shared-memory tag
	ready   int
	started chan struct{} // every rank printed its pid
	readyC  chan struct{} // every rank is past Init
	outDone chan struct{}
}

var (
	pidLine   = regexp.MustCompile(`^\[(\d+)\]<stdout>:chaos: rank (\d+) pid (\d+)$`)
	readyLine = regexp.MustCompile(`^\[(\d+)\]<stdout>:chaos: rank \d+ ready$`)
)

func (j *job) read(r io.Reader) {
	defer close(j.outDone)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		j.mu.Lock()
		j.out.WriteString(line + "\n")
		if m := pidLine.FindStringSubmatch(line); m != nil {
			rank, _ := strconv.Atoi(m[2])
			pid, _ := strconv.Atoi(m[3])
			j.pids[rank] = pid
			if fd, err := pidfdOpen(pid); err == nil {
				j.pidfds[rank] = fd
			}
			if j.tag == "" {
				j.tag = shmTag(pid)
			}
			if len(j.pids) == j.sc.np {
				close(j.started)
			}
		}
		if readyLine.MatchString(line) {
			j.ready++
			if j.ready == j.sc.np {
				close(j.readyC)
			}
		}
		j.mu.Unlock()
	}
}

func (j *job) output() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.out.String()
}

// runOne runs sc and returns the job's output, whether the fault hit the
// job before it ended, and what went wrong.
func runOne(t *testing.T, sc scenario) (string, bool, []problem) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := []string{"-np", strconv.Itoa(sc.np), "--kill-grace-period", "15s", "--start-timeout", "20s"}
	if !sc.shm {
		args = append(args, "--disable-shm")
	}
	args = append(args, filepath.Join(binDir, "worker"), "-mode", "chaos", "-steps", "150")
	j := &job{sc: sc, pids: map[int]int{}, pidfds: map[int]int{}, started: make(chan struct{}), readyC: make(chan struct{}), outDone: make(chan struct{})}
	j.cmd = exec.Command(filepath.Join(binDir, "gorun"), args...)
	j.cmd.Env = append(os.Environ(), "GOROVOD_PROGRESS_TIMEOUT="+progressTimeout.String())
	j.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // gorun dies with the test
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	j.cmd.Stdout, j.cmd.Stderr = pw, pw
	if err := j.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	go j.read(pr)
	exited := make(chan error, 1)
	go func() { exited <- j.cmd.Wait() }()
	defer func() {
		for _, fd := range j.pidfds {
			syscall.Close(fd)
		}
	}()

	injected, injErr := inject(ctx, j, exited)
	var probs []problem
	if injErr != nil {
		probs = append(probs, problem{catOther, "injecting: " + injErr.Error()})
	}
	var waitErr error
	select {
	case waitErr = <-exited:
	case <-ctx.Done():
		probs = append(probs, problem{catHang, "gorun did not exit within the run's deadline"})
		killAll(j)
		waitErr = <-exited
	}
	select {
	case <-j.outDone:
	case <-time.After(10 * time.Second):
		probs = append(probs, problem{catHang, "gorun's output stayed open after it exited"})
	}
	code := exitCode(waitErr)
	probs = append(probs, checkProcesses(j)...)
	probs = append(probs, checkShm(j)...)
	out := j.output()
	probs = append(probs, checkOutcome(sc, injected, code, out)...)
	return out, injected, probs
}

// inject waits for the trigger and injects sc's fault. injected is false
// when the job ended before the fault could hit it.
func inject(ctx context.Context, j *job, exited chan error) (injected bool, err error) {
	trigger := j.started
	if j.sc.fault == stopPast || j.sc.fault == stopShort {
		trigger = j.readyC
	}
	select {
	case <-trigger:
	case <-ctx.Done():
		return false, nil
	case err := <-exited:
		reExit(j, exited, err)
		return false, nil
	}
	select {
	case <-time.After(j.sc.delay):
	case <-ctx.Done():
		return false, nil
	case err := <-exited:
		reExit(j, exited, err)
		return false, nil
	}
	j.mu.Lock()
	pid := j.pids[j.sc.target]
	j.mu.Unlock()
	// The fault hits only a process that has not ended yet.
	signal := func(sig syscall.Signal) bool {
		return !gone(pid) && syscall.Kill(pid, sig) == nil
	}
	switch j.sc.fault {
	case killWorker, killRank0:
		return signal(syscall.SIGKILL), nil
	case killGorun:
		return !gone(j.cmd.Process.Pid) && j.cmd.Process.Signal(syscall.SIGKILL) == nil, nil
	case stopPast, stopShort:
		if !signal(syscall.SIGSTOP) {
			return false, nil
		}
		d := progressTimeout / 6
		if j.sc.fault == stopPast {
			d = progressTimeout + 3*time.Second
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
		signal(syscall.SIGCONT)
		return true, nil
	case garbage:
		return sendGarbage(j, rand.New(rand.NewPCG(uint64(j.sc.delay), 7))), nil
	}
	return false, fmt.Errorf("unknown fault %v", j.sc.fault)
}

// reExit puts gorun's exit back for runOne to read.
func reExit(_ *job, exited chan<- error, err error) {
	go func() { exited <- err }()
}

// gone reports whether pid has ended (absent or a zombie).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

func killAll(j *job) {
	_ = j.cmd.Process.Signal(syscall.SIGKILL)
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, pid := range j.pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// checkProcesses: every worker ends soon after gorun (its own exit, gorun's
// stop, or the parent-death signal when gorun was killed).
func checkProcesses(j *job) []problem {
	j.mu.Lock()
	defer j.mu.Unlock()
	var probs []problem
	if len(j.pids) < j.sc.np {
		// A worker that never printed its pid was never seen: nothing to
		// check it by (gorun was killed before it started).
		if j.sc.fault != killGorun {
			probs = append(probs, problem{catOther, fmt.Sprintf("only %d of %d workers started", len(j.pids), j.sc.np)})
		}
	}
	ranks := make([]int, 0, len(j.pidfds))
	for r := range j.pidfds {
		ranks = append(ranks, r)
	}
	sort.Ints(ranks)
	for _, r := range ranks {
		if !waitPidfd(j.pidfds[r], 10*time.Second) {
			probs = append(probs, problem{catOrphan, fmt.Sprintf("rank %d (pid %d) still runs after gorun exited", r, j.pids[r])})
			_ = syscall.Kill(j.pids[r], syscall.SIGKILL)
		}
	}
	return probs
}

// checkShm: no file of this job is left in /dev/shm.
func checkShm(j *job) []problem {
	j.mu.Lock()
	tag := j.tag
	j.mu.Unlock()
	if tag == "" {
		return nil
	}
	left, _ := filepath.Glob("/dev/shm/gorovod-" + tag + "-*")
	var probs []problem
	for _, f := range left {
		probs = append(probs, problem{catLeftover, f})
		_ = os.Remove(f)
	}
	return probs
}

var (
	rankRe    = regexp.MustCompile(`rank (\d+)`)
	failedRe  = regexp.MustCompile(`(?m)^\[(\d+)\]<stdout>:chaos: rank \d+ failed: (.*)$`)
	doneRe    = regexp.MustCompile(`(?m)^\[(\d+)\]<stdout>:chaos: rank \d+ done$`)
	gorunLine = regexp.MustCompile(`(?m)^gorun: error: (.*)$`) // gorun's own error lines (workers' lines start with "[rank]")
)

// firstRank is the first rank a message names, or -1.
func firstRank(msg string) int {
	m := rankRe.FindStringSubmatch(msg)
	if m == nil {
		return -1
	}
	r, _ := strconv.Atoi(m[1])
	return r
}

// checkOutcome checks gorun's exit code and the blame in its output.
func checkOutcome(sc scenario, injected bool, code int, out string) []problem {
	done := map[int]bool{}
	for _, m := range doneRe.FindAllStringSubmatch(out, -1) {
		r, _ := strconv.Atoi(m[1])
		done[r] = true
	}
	failed := map[int]string{}
	for _, m := range failedRe.FindAllStringSubmatch(out, -1) {
		r, _ := strconv.Atoi(m[1])
		failed[r] = m[2]
	}
	allDone := len(done) == sc.np
	switch {
	case sc.fault == killGorun && injected:
		// (exit 0: the kill reached gorun as it exited after the job)
		if code != 128+int(syscall.SIGKILL) && (code != 0 || !allDone) {
			return []problem{{catOther, fmt.Sprintf("gorun killed by SIGKILL exited %d", code)}}
		}
		return nil
	case !injected, sc.fault == stopShort, sc.fault == garbage:
		if code != 0 || !allDone {
			return []problem{{catOther, fmt.Sprintf("job should have succeeded: exit %d, ranks done %v, failed %v", code, keys(done), failed)}}
		}
		return nil
	case sc.fault == stopPast && allDone && code == 0:
		return nil // stopped after its last collective: nothing to blame
	case (sc.fault == killWorker || sc.fault == killRank0) && allDone && code == 0:
		// Every rank printed done and exited 0: the kill reached the
		// target on its way out (after its last collective), where
		// SIGKILL no longer changes the exit status. Seen once in 400
		// runs (seed 1796661482241012941, run 24: np 3, 483 ms).
		return nil
	}
	// A kill or a stop past the deadline: the target is to blame.
	var probs []problem
	blame := func(what string, args ...any) { probs = append(probs, problem{catBlame, fmt.Sprintf(what, args...)}) }
	if sc.fault != stopPast && code != 128+int(syscall.SIGKILL) {
		blame("gorun exited %d, want 137 (rank %d killed by SIGKILL)", code, sc.target)
	}
	if code == 0 {
		blame("gorun exited 0 though rank %d was stopped past the deadline and not every rank finished", sc.target)
	}
	if first := gorunLine.FindStringSubmatch(out); first == nil || firstRank(first[1]) != sc.target {
		msg := "(none)"
		if first != nil {
			msg = first[1]
		}
		blame("gorun's first error does not name rank %d first: %s", sc.target, msg)
	}
	for r := 0; r < sc.np; r++ {
		if r == sc.target {
			continue
		}
		msg, ok := failed[r]
		switch {
		case ok && firstRank(msg) != sc.target:
			blame("rank %d's error does not name rank %d first: %s", r, sc.target, msg)
		case !ok && !done[r]:
			probs = append(probs, problem{catOther, fmt.Sprintf("rank %d ended without saying why", r)})
		}
	}
	return probs
}

func keys(m map[int]bool) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

// shmTag is the job's tag in shared-memory file names, derived from the job
// secret in a worker's environment as internal/transport/mesh derives it.
func shmTag(pid int) string {
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return ""
	}
	for _, kv := range strings.Split(string(env), "\x00") {
		if v, ok := strings.CutPrefix(kv, "GOROVOD_SECRET="); ok {
			secret, err := hex.DecodeString(v)
			if err != nil {
				return ""
			}
			h := sha256.Sum256(append([]byte("gorovod shm tag\x00"), secret...))
			return hex.EncodeToString(h[:4])
		}
	}
	return ""
}
