package launch

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/netif"
)

// The test binary doubles as a tiny launcher for the Pdeathsig test.
func TestMain(m *testing.M) {
	// The test binary also plays gorun's hidden remote modes for the ssh tests.
	if len(os.Args) > 1 && os.Args[1] == RemoteExecFlag {
		os.Exit(RemoteExec(os.Stdin, os.Stdout, os.Stderr))
	}
	if len(os.Args) > 3 && os.Args[1] == RemoteProbeFlag {
		os.Exit(RemoteProbe(netif.ParseInterfaces(os.Args[2]), os.Args[3], os.Stdout))
	}
	if os.Getenv("LAUNCH_TEST_PARENT") == "1" {
		l := NewLocal()
		p, err := l.Start(context.Background(), ProcSpec{Argv: []string{"sleep", "60"}})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println(p.Pid())
		select {} // wait to be killed
	}
	os.Exit(m.Run())
}

func checkNoLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// gone reports whether pid no longer runs (absent, or a zombie nobody reaped).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// waitGone waits (bounded) for pid to end.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestLineWriter(t *testing.T) {
	var out bytes.Buffer
	sink, _ := NewSinks(&out, nil)
	var raw bytes.Buffer
	w := NewLineWriter(sink, Prefix(2, "stdout"), &raw)
	for _, s := range []string{"hel", "lo\nwor", "ld\r\n", "\n", "a\nb\nc", "d"} {
		if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if got, want := out.String(), "[2]<stdout>:hello\n[2]<stdout>:world\n[2]<stdout>:\n[2]<stdout>:a\n[2]<stdout>:b\n"; got != want {
		t.Fatalf("before Flush got %q, want %q", got, want)
	}
	w.Flush()
	w.Flush()
	if got, want := out.String(), "[2]<stdout>:hello\n[2]<stdout>:world\n[2]<stdout>:\n[2]<stdout>:a\n[2]<stdout>:b\n[2]<stdout>:cd\n"; got != want {
		t.Fatalf("after Flush got %q, want %q", got, want)
	}
	if raw.String() != "hello\nworld\r\n\na\nb\ncd" {
		t.Fatalf("raw copy %q", raw.String())
	}

	out.Reset()
	long := strings.Repeat("x", maxLine+10)
	_, _ = w.Write([]byte(long + "\n"))
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 1 || len(lines[0]) != len("[2]<stdout>:")+len(long) {
		t.Fatalf("a long line written at once should stay whole, got %d lines", len(lines))
	}
	out.Reset()
	for i := 0; i < maxLine+5000; i += 1000 {
		_, _ = w.Write([]byte(strings.Repeat("y", 1000)))
	}
	w.Flush()
	if n := strings.Count(out.String(), "\n"); n != 2 {
		t.Fatalf("an unbounded line should be cut at %d bytes into 2 lines, got %d", maxLine, n)
	}
}

func TestLinesDoNotInterleave(t *testing.T) {
	var out lockedBuffer
	sink, _ := NewSinks(&out, nil)
	var wg sync.WaitGroup
	const writers, lines = 8, 200
	for r := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := NewLineWriter(sink, Prefix(r, "stdout"), nil)
			line := fmt.Sprintf("rank %d says %s\n", r, strings.Repeat(strconv.Itoa(r), 50))
			for i := range lines {
				// Split each line across two writes to exercise buffering.
				_, _ = w.Write([]byte(line[:i%len(line)]))
				_, _ = w.Write([]byte(line[i%len(line):]))
			}
			w.Flush()
		}()
	}
	wg.Wait()
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	count := 0
	for sc.Scan() {
		count++
		var r int
		if _, err := fmt.Sscanf(sc.Text(), "[%d]<stdout>:", &r); err != nil {
			t.Fatalf("line without prefix: %q", sc.Text())
		}
		if want := fmt.Sprintf("[%d]<stdout>:rank %d says %s", r, r, strings.Repeat(strconv.Itoa(r), 50)); sc.Text() != want {
			t.Fatalf("torn line %q", sc.Text())
		}
	}
	if count != writers*lines {
		t.Fatalf("%d lines, want %d", count, writers*lines)
	}
}

func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		st   ExitStatus
		code int
		str  string
	}{
		{ExitStatus{}, 0, "exited with code 0"},
		{ExitStatus{Code: 3}, 3, "exited with code 3"},
		{ExitStatus{Signal: syscall.SIGKILL}, 137, "was killed by signal SIGKILL"},
		{ExitStatus{Signal: syscall.SIGSEGV}, 139, "was killed by signal SIGSEGV"},
		{ExitStatus{Err: errors.New("lost the connection")}, 1, "lost the connection"},
	} {
		if tc.st.ExitCode() != tc.code || tc.st.String() != tc.str || tc.st.Failed() != (tc.code != 0) {
			t.Errorf("%+v: code %d %q failed=%v", tc.st, tc.st.ExitCode(), tc.st.String(), tc.st.Failed())
		}
	}
	if got := SignalName(syscall.Signal(77)); got != "signal 77" {
		t.Errorf("SignalName(77) = %q", got)
	}
}

// runJob runs sh -c scripts as workers with a hang bound.
func runJob(t *testing.T, grace time.Duration, signals <-chan os.Signal, scripts ...string) (Result, string, string) {
	t.Helper()
	return runJobWith(t, JobConfig{KillGracePeriod: grace}, signals, scripts...)
}

// runJobWith is runJob with cfg's settings (Spawner, output and workers
// are filled in).
func runJobWith(t *testing.T, cfg JobConfig, signals <-chan os.Signal, scripts ...string) (Result, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := NewLocal()
	defer l.Close()
	var stdout, stderr lockedBuffer
	cfg.Spawner, cfg.Stdout, cfg.Stderr = l, &stdout, &stderr
	for r, s := range scripts {
		cfg.Workers = append(cfg.Workers, Worker{Rank: r, Host: "localhost", Argv: []string{"sh", "-c", s},
			Env: append(os.Environ(), "RANK="+strconv.Itoa(r))})
	}
	res, err := Run(ctx, cfg, signals)
	if err != nil {
		t.Fatalf("Run: %v (hang bound reached?)\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	return res, stdout.String(), stderr.String()
}

func TestRunSuccessPrefixesOutput(t *testing.T) {
	checkNoLeaks(t)
	res, out, errOut := runJob(t, 0, nil,
		`echo "hello from $RANK"; echo "oops $RANK" >&2; printf 'no newline'`,
		`echo "hello from $RANK"; echo "oops $RANK" >&2`)
	if res.ExitCode != 0 || res.FirstFailure != nil {
		t.Fatalf("result %+v", res)
	}
	for _, want := range []string{"[0]<stdout>:hello from 0\n", "[1]<stdout>:hello from 1\n", "[0]<stdout>:no newline\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout %q lacks %q", out, want)
		}
	}
	for _, want := range []string{"[0]<stderr>:oops 0\n", "[1]<stderr>:oops 1\n"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q lacks %q", errOut, want)
		}
	}
}

func TestRunFirstFailureStopsOthers(t *testing.T) {
	checkNoLeaks(t)
	res, out, _ := runJob(t, 3*time.Second, nil,
		`echo pid $$; exec sleep 60`,
		`echo pid $$; sleep 60 & echo pid $!; wait`,
		`exit 3`)
	if res.ExitCode != 3 || res.FirstFailure == nil || res.FirstFailure.Rank != 2 {
		t.Fatalf("result %+v, want exit 3 from rank 2", res)
	}
	if !strings.Contains(res.FirstFailure.String(), "rank 2 (pid ") || !strings.Contains(res.FirstFailure.String(), "host localhost) exited with code 3") {
		t.Fatalf("failure message %q", res.FirstFailure)
	}
	for _, r := range []int{0, 1} {
		if st := res.Exits[r].Status; st.Signal != syscall.SIGTERM {
			t.Errorf("rank %d ended %v, want SIGTERM", r, st)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if _, p, ok := strings.Cut(line, "pid "); ok {
			pid, err := strconv.Atoi(p)
			if err != nil {
				t.Fatalf("bad pid line %q", line)
			}
			waitGone(t, pid)
		}
	}
}

func TestRunKilledBySignal(t *testing.T) {
	checkNoLeaks(t)
	res, _, _ := runJob(t, 0, nil, `exec sleep 60`, `kill -KILL $$`)
	if res.ExitCode != 128+9 || res.FirstFailure == nil || res.FirstFailure.Rank != 1 {
		t.Fatalf("result %+v", res)
	}
	if msg := res.FirstFailure.String(); !strings.Contains(msg, "rank 1 (pid") || !strings.Contains(msg, "was killed by signal SIGKILL") {
		t.Fatalf("message %q", msg)
	}
}

func TestRunGracePeriodThenKill(t *testing.T) {
	checkNoLeaks(t)
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	res, _, _ := runJob(t, 100*time.Millisecond, nil,
		fmt.Sprintf(`trap "" TERM; touch %s; while :; do sleep 1; done`, ready),
		fmt.Sprintf(`while [ ! -e %s ]; do sleep 0.01; done; exit 4`, ready))
	if res.ExitCode != 4 {
		t.Fatalf("exit code %d, want 4", res.ExitCode)
	}
	if st := res.Exits[0].Status; st.Signal != syscall.SIGKILL {
		t.Fatalf("rank 0 ignoring SIGTERM ended %v, want SIGKILL after the grace period", st)
	}
}

func TestRunForwardsSignals(t *testing.T) {
	checkNoLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := NewLocal()
	defer l.Close()
	signals := make(chan os.Signal, 1)
	ups := 0
	// The signal goes out once both workers said they are up (the sink
	// serialises calls to this writer).
	out := writerFunc(func(p []byte) {
		if strings.Contains(string(p), "up") {
			if ups++; ups == 2 {
				signals <- syscall.SIGINT
			}
		}
	})
	res, err := Run(ctx, JobConfig{Spawner: l, Stdout: out, KillGracePeriod: 3 * time.Second, Workers: []Worker{
		{Rank: 0, Host: "localhost", Argv: []string{"sh", "-c", `echo up; exec sleep 60`}},
		{Rank: 1, Host: "localhost", Argv: []string{"sh", "-c", `trap 'exit 0' INT; sleep 60 & echo up; wait`}},
	}}, signals)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Interrupted != syscall.SIGINT || res.ExitCode != 130 || res.FirstFailure != nil {
		t.Fatalf("result %+v, want interrupted by SIGINT, exit 130", res)
	}
	if st := res.Exits[0].Status; st.Signal != syscall.SIGINT {
		t.Fatalf("rank 0 ended %v, want SIGINT", st)
	}
	if st := res.Exits[1].Status; st.Failed() {
		t.Fatalf("rank 1 handled SIGINT but ended %v", st)
	}
}

func TestRunStartFailureKillsStarted(t *testing.T) {
	checkNoLeaks(t)
	l := NewLocal()
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out lockedBuffer
	_, err := Run(ctx, JobConfig{Spawner: l, Stdout: &out, Workers: []Worker{
		{Rank: 0, Host: "localhost", Argv: []string{"sh", "-c", "echo pid $$; exec sleep 60"}},
		{Rank: 1, Host: "localhost", Argv: []string{"/nonexistent/program"}},
	}}, nil)
	if !errors.Is(err, ErrSpawn) || !strings.Contains(err.Error(), "rank 1") {
		t.Fatalf("Run error %v, want ErrSpawn for rank 1", err)
	}
}

func TestRunContextStopsWorkers(t *testing.T) {
	checkNoLeaks(t)
	l := NewLocal()
	defer l.Close()
	bound, stopBound := context.WithTimeout(context.Background(), 10*time.Second)
	defer stopBound()
	ctx, cancel := context.WithCancel(bound)
	defer cancel()
	res, err := Run(ctx, JobConfig{
		Spawner: l,
		Workers: []Worker{{Rank: 0, Host: "localhost", Argv: []string{"sh", "-c", "echo up; exec sleep 60"}}},
		Stdout:  writerFunc(func(p []byte) { cancel() }),
	}, nil)
	if bound.Err() != nil {
		t.Fatal("hang bound reached")
	}
	if !errors.Is(err, context.Canceled) || res.Exits[0].Status.Signal != syscall.SIGTERM {
		t.Fatalf("Run = %+v, %v; want the worker stopped and context.Canceled", res, err)
	}
}

type writerFunc func(p []byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }

func TestOutputDir(t *testing.T) {
	checkNoLeaks(t)
	dir := t.TempDir()
	l := NewLocal()
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out lockedBuffer
	res, err := Run(ctx, JobConfig{Spawner: l, Stdout: &out, Stderr: &out, OutputDir: dir, Workers: []Worker{
		{Rank: 0, Host: "localhost", Argv: []string{"sh", "-c", "echo a; echo b >&2"}},
		{Rank: 1, Host: "localhost", Argv: []string{"sh", "-c", "echo c"}},
		{Rank: 10, Host: "localhost", Argv: []string{"true"}},
	}}, nil)
	if err != nil || res.ExitCode != 0 {
		t.Fatal(res, err)
	}
	for f, want := range map[string]string{"rank.00/stdout": "a\n", "rank.00/stderr": "b\n", "rank.01/stdout": "c\n", "rank.01/stderr": "", "rank.10/stdout": ""} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", f, b, err, want)
		}
	}
	if !strings.Contains(out.String(), "[1]<stdout>:c\n") {
		t.Errorf("console output %q", out.String())
	}
}

func TestWorkerDiesWithLauncher(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	parent := exec.CommandContext(ctx, exe, "-test.run=^$")
	parent.Env = append(os.Environ(), "LAUNCH_TEST_PARENT=1")
	stdout, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("parent said %q", line)
	}
	if gone(child) {
		t.Fatal("child not running")
	}
	_ = parent.Process.Kill()
	_ = parent.Wait()
	waitGone(t, child)
}

func TestOwnFailure(t *testing.T) {
	sent := map[syscall.Signal]bool{syscall.SIGTERM: true}
	for _, tc := range []struct {
		st   ExitStatus
		want bool
	}{
		{ExitStatus{Signal: syscall.SIGTERM}, false}, // the stop itself
		{ExitStatus{Code: 1}, false},                 // may be its answer to the stop
		{ExitStatus{}, false},
		{ExitStatus{Signal: syscall.SIGKILL}, true}, // killed from outside before the grace ended
		{ExitStatus{Signal: syscall.SIGSEGV}, true},
	} {
		if got := ownFailure(tc.st, sent); got != tc.want {
			t.Errorf("ownFailure(%v) = %v, want %v", tc.st, got, tc.want)
		}
	}
	sent[syscall.SIGKILL] = true
	if ownFailure(ExitStatus{Signal: syscall.SIGKILL}, sent) {
		t.Error("SIGKILL after the grace period counted as the worker's own failure")
	}
}

// TestRunSettleLetsOthersEndOnTheirOwn: with Settle, the workers that
// outlive the first failure get that long to end by themselves (a worker
// that takes half a second to report is not stopped), and are stopped when
// it passes.
func TestRunSettleLetsOthersEndOnTheirOwn(t *testing.T) {
	checkNoLeaks(t)
	run := func(settle time.Duration, scripts ...string) Result {
		t.Helper()
		res, _, _ := runJobWith(t, JobConfig{Settle: func(Exit) time.Duration { return settle }}, nil, scripts...)
		return res
	}
	res := run(5*time.Second, `exit 1`, `sleep 0.5; exit 4`)
	if res.FirstFailure == nil || res.FirstFailure.Rank != 0 || res.ExitCode != 1 {
		t.Fatalf("result %+v, want rank 0's exit 1 first", res)
	}
	if st := res.Exits[1].Status; st.Signal != 0 || st.Code != 4 {
		t.Errorf("rank 1 ended %v, want its own exit code 4", st)
	}
	res = run(50*time.Millisecond, `exit 1`, `exec sleep 60`)
	if st := res.Exits[1].Status; st.Signal != syscall.SIGTERM {
		t.Errorf("rank 1 ended %v after the settle time, want SIGTERM", st)
	}
}
