package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/env"
	"github.com/gorovod/gorovod/internal/launch"
	"github.com/gorovod/gorovod/internal/rendezvous"
)

var (
	gorunBin string // gorun built for the tests
	selfBin  string // this test binary, which doubles as a worker program
)

const workerEnv = "GORUN_TEST_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		os.Exit(testWorker(os.Args[1:]))
	}
	dir, err := os.MkdirTemp("", "gorun-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gorunBin = filepath.Join(dir, "gorun")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v0.0.0-test", "-o", gorunBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building gorun:", err)
		os.Exit(1)
	}
	if selfBin, err = os.Executable(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testWorker is the worker program for tests that need rendezvous:
//
//	register RANKS       ranks in RANKS register, the others wait to be stopped
//	register-or-exit RANKS  the others exit 0 at once
func testWorker(args []string) int {
	rank, _ := strconv.Atoi(os.Getenv(env.Rank))
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: worker MODE RANKS")
		return 2
	}
	mine := false
	for _, r := range strings.Split(args[1], ",") {
		if r == strconv.Itoa(rank) {
			mine = true
		}
	}
	if !mine {
		fmt.Printf("rank %d: not registering\n", rank)
		if args[0] == "register-or-exit" {
			return 0
		}
		time.Sleep(time.Hour) // until gorun stops the job
		return 0
	}
	secret, err := hex.DecodeString(os.Getenv(env.Secret))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad secret:", err)
		return 1
	}
	timeout, err := time.ParseDuration(os.Getenv(env.StartTimeout))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad start timeout:", err)
		return 1
	}
	localRank, _ := strconv.Atoi(os.Getenv(env.LocalRank))
	ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
	defer cancel()
	w, err := rendezvous.Register(ctx, os.Getenv(env.RendezvousAddr), secret, rendezvous.Registration{
		Rank: rank, Host: os.Getenv(env.Hostname), LocalRank: localRank, Addr: fmt.Sprintf("127.0.0.1:%d", 40000+rank), Pid: os.Getpid(),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "rank %d: rendezvous: %v\n", rank, err)
		return 1
	}
	fmt.Printf("rank %d: world size %d, local rank %d of %d\n", rank, w.Size, w.Peers[rank].LocalRank, w.Peers[rank].LocalSize)
	return 0
}

type result struct {
	stdout, stderr string
	code           int
}

// cleanEnv is the test's environment without GOROVOD_ variables.
func cleanEnv(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOROVOD_") {
			out = append(out, kv)
		}
	}
	return append(out, extra...)
}

// gorun runs the gorun binary; exceeding bound (a hang) fails the test.
func gorun(t *testing.T, bound time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	for i, a := range args {
		if a == "WORKER" {
			args[i] = selfBin
		}
	}
	cmd := exec.CommandContext(ctx, gorunBin, args...)
	cmd.Env = cleanEnv(workerEnv + "=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ctx.Err() != nil {
		t.Fatalf("gorun %v did not finish within %v\nstdout:\n%s\nstderr:\n%s", args, bound, r.stdout, r.stderr)
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return r
}

// gone reports whether pid no longer runs (absent, or a zombie).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("worker process %d still running after gorun exited", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var pidLine = regexp.MustCompile(`<stdout>:pid (\d+)`)

func pids(t *testing.T, out string) []int {
	t.Helper()
	var ps []int
	for _, m := range pidLine.FindAllStringSubmatch(out, -1) {
		p, err := strconv.Atoi(m[1])
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

func TestPrefixesOutput(t *testing.T) {
	r := gorun(t, 20*time.Second, "-np", "3", "sh", "-c", `echo "out $GOROVOD_RANK"; echo "err $GOROVOD_RANK" >&2; printf "tail $GOROVOD_RANK"`)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for rank := range 3 {
		for _, want := range []string{fmt.Sprintf("[%d]<stdout>:out %d\n", rank, rank), fmt.Sprintf("[%d]<stdout>:tail %d\n", rank, rank)} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
			}
		}
		if want := fmt.Sprintf("[%d]<stderr>:err %d\n", rank, rank); !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	for _, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		if !regexp.MustCompile(`^\[[0-2]\]<stdout>:(out|tail) [0-2]$`).MatchString(line) {
			t.Errorf("unexpected stdout line %q", line)
		}
	}
}

func TestHostname(t *testing.T) {
	r := gorun(t, 20*time.Second, "-np", "2", "hostname")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "[0]<stdout>:") || !strings.Contains(r.stdout, "[1]<stdout>:") {
		t.Fatalf("stdout %q", r.stdout)
	}
	if r.stderr != "" {
		t.Fatalf("a job that never registers should not log anything by default, got:\n%s", r.stderr)
	}
}

func TestStartTimeoutDoesNotKillNonGorovodPrograms(t *testing.T) {
	r := gorun(t, 20*time.Second, "-np", "2", "--start-timeout", "50ms", "sh", "-c", "sleep 0.3; echo done")
	if r.code != 0 || strings.Count(r.stdout, "done") != 2 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func TestWorkerEnv(t *testing.T) {
	r := gorun(t, 20*time.Second, "-np", "3", "-H", "localhost:4", "--start-timeout", "7",
		"--fusion-threshold-mb", "64", "--cycle-time-ms", "2.5", "--cache-capacity", "0",
		"--stall-check-warning-time-seconds", "5", "--stall-check-shutdown-time-seconds", "20",
		"--no-stall-check", "--timeline-filename", "tl.json", "--disable-shm", "--verbose",
		"-x", "FOO=bar baz", "-x", "HOME", "-x", "GORUN_TEST_SURELY_UNSET",
		"sh", "-c", `env | grep -E '^(GOROVOD_|FOO=|HOME=)' | sort`)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	vars := map[int]map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var rank int
		if _, err := fmt.Sscanf(line, "[%d]<stdout>:", &rank); err != nil {
			t.Fatalf("line %q", line)
		}
		kv := line[strings.Index(line, ":")+1:]
		k, v, _ := strings.Cut(kv, "=")
		if vars[rank] == nil {
			vars[rank] = map[string]string{}
		}
		vars[rank][k] = v
	}
	for rank := range 3 {
		v := vars[rank]
		want := map[string]string{
			"GOROVOD_RANK": strconv.Itoa(rank), "GOROVOD_SIZE": "3", "GOROVOD_LOCAL_RANK": strconv.Itoa(rank),
			"GOROVOD_LOCAL_SIZE": "3", "GOROVOD_CROSS_RANK": "0", "GOROVOD_CROSS_SIZE": "1",
			"GOROVOD_HOSTNAME": "localhost", "GOROVOD_EPOCH": "0", "GOROVOD_START_TIMEOUT": "7s",
			"GOROVOD_BIND_ADDR": "127.0.0.1", "GOROVOD_LOG_LEVEL": "debug", "GOROVOD_LAUNCHER": "gorun",
			"GOROVOD_FUSION_THRESHOLD": strconv.Itoa(64 << 20), "GOROVOD_CYCLE_TIME": "2.5ms",
			"GOROVOD_CACHE_CAPACITY": "0", "GOROVOD_STALL_CHECK_TIME": "5s", "GOROVOD_STALL_SHUTDOWN_TIME": "20s",
			"GOROVOD_STALL_CHECK_DISABLE": "1", "GOROVOD_TIMELINE": "tl.json", "GOROVOD_DISABLE_SHM": "1",
			"FOO": "bar baz", "HOME": os.Getenv("HOME"),
		}
		for k, w := range want {
			if v[k] != w {
				t.Errorf("rank %d: %s=%q, want %q", rank, k, v[k], w)
			}
		}
		if !regexp.MustCompile(`^127\.0\.0\.1:\d+$`).MatchString(v["GOROVOD_RENDEZVOUS_ADDR"]) {
			t.Errorf("rank %d: rendezvous address %q", rank, v["GOROVOD_RENDEZVOUS_ADDR"])
		}
		if s, err := hex.DecodeString(v["GOROVOD_SECRET"]); err != nil || len(s) != 32 {
			t.Errorf("rank %d: secret %q is not 32 hex bytes", rank, v["GOROVOD_SECRET"])
		}
		if v["GOROVOD_SECRET"] != vars[0]["GOROVOD_SECRET"] {
			t.Errorf("ranks got different secrets")
		}
	}
	if !strings.Contains(r.stderr, "GORUN_TEST_SURELY_UNSET") {
		t.Errorf("an -x variable missing from gorun's environment should be mentioned:\n%s", r.stderr)
	}

	// Without tuning flags nothing is forwarded, and each job has its own secret.
	r2 := gorun(t, 20*time.Second, "-np", "1", "sh", "-c", `env | grep ^GOROVOD_ | sort`)
	for _, name := range []string{"GOROVOD_FUSION_THRESHOLD", "GOROVOD_CYCLE_TIME", "GOROVOD_CACHE_CAPACITY",
		"GOROVOD_STALL_CHECK_TIME", "GOROVOD_STALL_SHUTDOWN_TIME", "GOROVOD_STALL_CHECK_DISABLE",
		"GOROVOD_TIMELINE", "GOROVOD_DISABLE_SHM", "GOROVOD_LOG_LEVEL"} {
		if strings.Contains(r2.stdout, name+"=") {
			t.Errorf("%s forwarded without its flag:\n%s", name, r2.stdout)
		}
	}
	if strings.Contains(r2.stdout, "GOROVOD_SECRET="+vars[0]["GOROVOD_SECRET"]) {
		t.Error("two jobs got the same secret")
	}
}

func TestFailingWorkerStopsJob(t *testing.T) {
	dir := t.TempDir()
	// Ranks 0 and 2 announce their pids and wait; rank 1 fails once both are up.
	script := fmt.Sprintf(`if [ "$GOROVOD_RANK" = 1 ]; then
  while [ ! -e %[1]s/0 ] || [ ! -e %[1]s/2 ]; do sleep 0.01; done
  echo failing >&2; exit 3
fi
echo "pid $$"; touch %[1]s/$GOROVOD_RANK; exec sleep 60`, dir)
	start := time.Now()
	r := gorun(t, 5*time.Second, "-np", "3", "sh", "-c", script)
	if r.code != 3 {
		t.Fatalf("exit %d, want 3\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !regexp.MustCompile(`rank 1 \(pid \d+, host localhost\) exited with code 3`).MatchString(r.stderr) {
		t.Errorf("stderr does not report rank 1's failure:\n%s", r.stderr)
	}
	ps := pids(t, r.stdout)
	if len(ps) != 2 {
		t.Fatalf("want 2 pids in output:\n%s", r.stdout)
	}
	for _, p := range ps {
		waitGone(t, p)
	}
	t.Logf("failure to exit took %v", time.Since(start))
}

func TestWorkerKilledBySignal(t *testing.T) {
	r := gorun(t, 10*time.Second, "-np", "2", "sh", "-c", `if [ "$GOROVOD_RANK" = 1 ]; then kill -KILL $$; fi; exec sleep 60`)
	if r.code != 137 {
		t.Fatalf("exit %d, want 137\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !regexp.MustCompile(`rank 1 \(pid \d+, host localhost\) was killed by signal SIGKILL`).MatchString(r.stderr) {
		t.Errorf("stderr does not name the signal:\n%s", r.stderr)
	}
}

// startJob starts gorun with workers that print their pids and sleep, and
// returns once every worker printed.
func startJob(t *testing.T, ctx context.Context, np int) (*exec.Cmd, []int, *bufio.Scanner, *bytes.Buffer) {
	t.Helper()
	cmd := exec.CommandContext(ctx, gorunBin, "-np", strconv.Itoa(np), "sh", "-c", `echo "pid $$"; exec sleep 60`)
	cmd.Env = cleanEnv()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := new(bytes.Buffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var text strings.Builder
	for len(pids(t, text.String())) < np && sc.Scan() {
		text.WriteString(sc.Text() + "\n")
	}
	ps := pids(t, text.String())
	if len(ps) != np {
		t.Fatalf("workers did not start: %q %s", text.String(), stderr.String())
	}
	return cmd, ps, sc, stderr
}

func TestWorkersDieWithGorun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd, ps, _, _ := startJob(t, ctx, 3)
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: gorun cannot clean up itself
		t.Fatal(err)
	}
	_ = cmd.Wait()
	for _, p := range ps {
		waitGone(t, p)
	}
}

func TestSIGINTStopsWorkers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd, ps, sc, stderr := startJob(t, ctx, 2)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() {
	}
	err := cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("gorun did not stop after SIGINT\n%s", stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("gorun ended with %v, want exit code 130\n%s", err, stderr.String())
	}
	for _, p := range ps {
		waitGone(t, p)
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "script")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hostfile := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hostfile, []byte("localhost slots=2\nlocalhost:x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--bogus", "-np", "2", "true"}, "unknown flag: --bogus"},
		{[]string{"-np", "0", "true"}, "-np is 0, must be at least 1"},
		{[]string{"-np", "-3", "true"}, "-np is -3, must be at least 1"},
		{[]string{"-np", "x", "true"}, `invalid argument "x"`},
		{[]string{"-np", "2", "-H", "host:", "true"}, "missing slot count"},
		{[]string{"-np", "2", "-H", "host:x", "true"}, `slot count "x" is not a number`},
		{[]string{"-np", "2", "-H", "host:0", "true"}, "slot count 0 must be between 1 and"},
		{[]string{"-np", "2", "-H", ":4", "true"}, "missing host name"},
		{[]string{"-np", "2", "-H", "", "true"}, "empty host list"},
		{[]string{"-np", "5", "-H", "localhost:4", "true"}, "5 processes requested but only 4 slots given by -H"},
		{[]string{"-np", "100000", "true"}, "-np 100000 is more workers than this machine runs: at most"},
		{[]string{"-np", "3", "--hostfile", hostfile, "true"}, "line 2"},
		{[]string{"-np", "2", filepath.Join(dir, "nope")}, "no such file"},
		{[]string{"-np", "2", "surely-not-a-program-xyz"}, "not found in PATH"},
		{[]string{"-np", "2", notExec}, "is not executable"},
		{[]string{"-np", "2", dir}, "is a directory"},
		{[]string{"-np", "2"}, "no program given"},
		{[]string{"-np", "2", "--"}, "no program given"},
		{[]string{"true"}, "-np"},
		{[]string{"-np", "1", "--start-timeout", "soon", "true"}, `"soon" is not a duration`},
		{[]string{"-np", "1", "--start-timeout", "0", "true"}, "--start-timeout is 0s, must be positive"},
		{[]string{"-np", "1", "--cycle-time-ms", "0", "true"}, "--cycle-time-ms is 0, must be > 0"},
		{[]string{"-np", "1", "--fusion-threshold-mb", "-1", "true"}, "--fusion-threshold-mb is -1"},
		{[]string{"-np", "1", "--cache-capacity", "-1", "true"}, "--cache-capacity is -1"},
		{[]string{"-np", "1", "-x", "A-B=1", "true"}, `"A-B" is not a variable name`},
		{[]string{"-np", "1", "-H", "localhost:1", "--hostfile", hostfile, "true"}, "either -H or --hostfile"},
		{[]string{"-np", "1", "--ssh-port", "70000", "true"}, "--ssh-port is 70000"},
	} {
		r := gorun(t, 10*time.Second, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.msg) || r.stdout != "" {
			t.Errorf("gorun %q: exit %d, stderr %q; want exit 2 and %q", tc.args, r.code, r.stderr, tc.msg)
		}
	}
}

func TestUnreachableHostFailsPreflight(t *testing.T) {
	r := gorun(t, 30*time.Second, "-np", "2", "-H", "localhost:1,no-such-host.invalid:1", "true")
	want := "no-such-host.invalid: ssh: Could not resolve hostname no-such-host.invalid"
	if r.code != 1 || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "1 of 1 hosts failed the ssh check; no worker was started") || r.stdout != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q; want exit 1 and %q", r.code, r.stdout, r.stderr, want)
	}
}

func TestSSHFlagsReachSSH(t *testing.T) {
	r := gorun(t, 30*time.Second, "-np", "1", "-H", "no-such-host.invalid:1", "--verbose", "-p", "2222", "-i", "/no/key", "true")
	if r.code != 1 || !strings.Contains(r.stderr, `"-o", "BatchMode=yes", "-p", "2222", "-i", "/no/key"`) {
		t.Fatalf("exit %d, stderr %q; want the ssh command line with -p and -i in the verbose log", r.code, r.stderr)
	}
}

func TestProgramArgsAreNotGorunFlags(t *testing.T) {
	r := gorun(t, 10*time.Second, "-np=1", "sh", "-c", `echo "$@"`, "sh", "-np", "7", "--verbose", "-H", "x")
	if r.code != 0 || !strings.Contains(r.stdout, "[0]<stdout>:-np 7 --verbose -H x\n") {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = gorun(t, 10*time.Second, "-H", "localhost:2", "--", "sh", "-c", `echo "rank $GOROVOD_RANK of $GOROVOD_SIZE"`)
	if r.code != 0 || !strings.Contains(r.stdout, "[1]<stdout>:rank 1 of 2\n") {
		t.Fatalf("-np defaults to the slots of -H: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestVersionAndHelp(t *testing.T) {
	r := gorun(t, 10*time.Second, "--version")
	if r.code != 0 || r.stdout != "gorun v0.0.0-test\n" {
		t.Fatalf("--version: exit %d, %q", r.code, r.stdout)
	}
	r = gorun(t, 10*time.Second, "--help")
	for _, want := range []string{"gorun [flags] [--] PROGRAM [ARGS...]", "gorun -np 2 hostname", "--start-timeout", "--kill-grace-period", "Exit codes"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("--help: exit %d, output lacks %q", r.code, want)
		}
	}
}

func TestRendezvousWorld(t *testing.T) {
	r := gorun(t, 20*time.Second, "-np", "3", "WORKER", "register", "0,1,2")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for rank := range 3 {
		if want := fmt.Sprintf("[%d]<stdout>:rank %d: world size 3, local rank %d of 3\n", rank, rank, rank); !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestStartTimeoutNamesMissingRanks(t *testing.T) {
	r := gorun(t, 20*time.Second, "-np", "3", "--start-timeout", "1s", "WORKER", "register", "0,1")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, rank := range []int{0, 1} {
		want := fmt.Sprintf("[%d]<stderr>:rank %d: rendezvous: rendezvous start timeout: ranks [2] did not register within 1s", rank, rank)
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
}

func TestWorkerExitBeforeRegisteringFailsOthersAtOnce(t *testing.T) {
	// A start timeout far beyond the hang bound: the waiting ranks must
	// learn at once that rank 2 will never register.
	r := gorun(t, 15*time.Second, "-np", "3", "--start-timeout", "10m", "WORKER", "register-or-exit", "0,1")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !regexp.MustCompile(`rendezvous aborted: rank 2 \(pid \d+, host localhost\) exited with code 0 before registering`).MatchString(r.stderr) {
		t.Errorf("stderr does not explain:\n%s", r.stderr)
	}
}

func TestOutputFilename(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "logs")
	r := gorun(t, 10*time.Second, "-np", "2", "--output-filename", dir, "sh", "-c", `echo "hi $GOROVOD_RANK"; echo oops >&2`)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for rank := range 2 {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("rank.%d", rank), "stdout"))
		if err != nil || string(b) != fmt.Sprintf("hi %d\n", rank) {
			t.Errorf("rank %d stdout file: %q, %v", rank, b, err)
		}
		b, err = os.ReadFile(filepath.Join(dir, fmt.Sprintf("rank.%d", rank), "stderr"))
		if err != nil || string(b) != "oops\n" {
			t.Errorf("rank %d stderr file: %q, %v", rank, b, err)
		}
	}
}

func TestHostfile(t *testing.T) {
	hf := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hf, []byte("# local only\nlocalhost slots=2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := gorun(t, 10*time.Second, "--hostfile", hf, "sh", "-c", `echo "rank $GOROVOD_RANK of $GOROVOD_SIZE on $GOROVOD_HOSTNAME"`)
	if r.code != 0 || !strings.Contains(r.stdout, "[1]<stdout>:rank 1 of 2 on localhost\n") {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestKillGracePeriod(t *testing.T) {
	dir := t.TempDir()
	// Rank 0 ignores SIGTERM; rank 1 fails once rank 0 is up. gorun must
	// SIGKILL rank 0 after the grace period and still exit with rank 1's code.
	script := fmt.Sprintf(`if [ "$GOROVOD_RANK" = 1 ]; then
  while [ ! -e %[1]s/up ]; do sleep 0.01; done; exit 5
fi
trap "" TERM; echo "pid $$"; touch %[1]s/up; while :; do sleep 1; done`, dir)
	r := gorun(t, 10*time.Second, "-np", "2", "--kill-grace-period", "200ms", "sh", "-c", script)
	if r.code != 5 {
		t.Fatalf("exit %d, want 5\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "killing them") {
		t.Errorf("stderr does not say the workers were killed:\n%s", r.stderr)
	}
	for _, p := range pids(t, r.stdout) {
		waitGone(t, p)
	}
}

func TestCheck(t *testing.T) {
	r := gorun(t, 40*time.Second, "--check")
	if r.code != 0 || !strings.Contains(r.stdout, "Transports:") || !strings.Contains(r.stdout, "tcp") {
		t.Fatalf("--check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = gorun(t, 10*time.Second, "--check", "hostname")
	if r.code != 2 || !strings.Contains(r.stderr, "--check takes no program") {
		t.Fatalf("--check with a program: exit %d\n%s", r.code, r.stderr)
	}
}

// TestWorkersShareTheHostsCores: workers sharing a host get GOMAXPROCS set
// to their share of its cores, unless the user set it; a worker alone on
// its host keeps the Go default.
func TestWorkersShareTheHostsCores(t *testing.T) {
	user := os.Getenv("GOMAXPROCS") // passed through untouched when set
	share := strconv.Itoa(max(1, runtime.NumCPU()/2))
	if user != "" {
		share = user
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-np", "2"}, share},
		{[]string{"-np", "2", "-x", "GOMAXPROCS=5"}, "5"},
		{[]string{"-np", "1"}, user},
	} {
		args := append(tc.args, "sh", "-c", `echo "gomaxprocs=$GOMAXPROCS"`)
		r := gorun(t, 20*time.Second, args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", tc.args, r.code, r.stdout, r.stderr)
		}
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if np, _ := strconv.Atoi(tc.args[1]); len(lines) != np {
			t.Fatalf("%v: %d output lines, want %d:\n%s", tc.args, len(lines), np, r.stdout)
		}
		for _, line := range lines {
			if _, v, _ := strings.Cut(line, ":"); v != "gomaxprocs="+tc.want {
				t.Errorf("%v: worker printed %q, want gomaxprocs=%s", tc.args, line, tc.want)
			}
		}
	}
}

// TestWorkersAreBoundToTheirCores: with --bind-to core workers sharing a
// host get disjoint cpu lists (GOROVOD_CPU_LIST) unless they outnumber the
// cores or the user set a list; by default none; --bind-to with another
// word is a usage error.
func TestWorkersAreBoundToTheirCores(t *testing.T) {
	cpus := launch.AllowedCPUs()
	if len(cpus) < 2 {
		t.Skipf("%d allowed cpus: nothing to share", len(cpus))
	}
	half := len(cpus) / 2
	list := func(cs []int) string {
		s := make([]string, len(cs))
		for i, c := range cs {
			s[i] = strconv.Itoa(c)
		}
		return strings.Join(s, ",")
	}
	for _, tc := range []struct {
		args []string
		want []string // by local rank
	}{
		{[]string{"-np", "2", "--bind-to", "core"}, []string{list(cpus[:half]), list(cpus[half : 2*half])}},
		{[]string{"-np", "2"}, []string{"", ""}},
		{[]string{"-np", "2", "--bind-to", "core", "-x", "GOROVOD_CPU_LIST=0"}, []string{"0", "0"}},
		{[]string{"-np", strconv.Itoa(len(cpus) + 1), "--bind-to", "core"}, nil},
	} {
		args := append(tc.args, "sh", "-c", `echo "cpus=$GOROVOD_CPU_LIST"`)
		r := gorun(t, 20*time.Second, args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", tc.args, r.code, r.stdout, r.stderr)
		}
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			tag, v, _ := strings.Cut(line, ":")
			rank, _ := strconv.Atoi(strings.Trim(tag, "[]<stdout>"))
			want := ""
			if tc.want != nil {
				want = tc.want[rank]
			}
			if v != "cpus="+want {
				t.Errorf("%v: rank %d printed %q, want cpus=%s", tc.args, rank, line, want)
			}
		}
	}
	if r := gorun(t, 20*time.Second, "-np", "2", "--bind-to", "socket", "true"); r.code != 2 || !strings.Contains(r.stderr, "--bind-to") {
		t.Errorf("--bind-to socket: exit %d, stderr %q; want a usage error (2) naming --bind-to", r.code, r.stderr)
	}
}
