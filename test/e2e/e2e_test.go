// Package e2e runs real jobs: gorun starting the test programs as separate
// processes that rendezvous, connect and run collectives.
package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gorovod-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	cmd := exec.Command("go", "build", "-o", dir+"/",
		"github.com/gorovod/gorovod/cmd/gorun",
		"github.com/gorovod/gorovod/test/allreducecheck",
		"github.com/gorovod/gorovod/test/worker",
		"github.com/gorovod/gorovod/cmd/gorovod-bench")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building test binaries:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	out  string
	code int
	took time.Duration
}

// gorun runs bin/gorun with args and a hang bound; a run that exceeds the
// bound fails the test.
func gorun(t *testing.T, bound time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	for i, a := range args {
		if a == "allreducecheck" || a == "worker" || a == "gorovod-bench" {
			args[i] = filepath.Join(binDir, a)
		}
	}
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "gorun"), args...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	r := result{out: string(out), took: time.Since(start)}
	if ctx.Err() != nil {
		t.Fatalf("gorun %s did not finish within %v; output:\n%s", strings.Join(args, " "), bound, out)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("gorun: %v", err)
	}
	return r
}

// shmFiles lists Gorovod's files in /dev/shm.
func shmFiles(t *testing.T) []string {
	t.Helper()
	m, err := filepath.Glob("/dev/shm/gorovod-*")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// noShmLeftovers fails t if the job left files in /dev/shm that were not
// there before it.
func noShmLeftovers(t *testing.T, before []string) {
	t.Helper()
	old := map[string]bool{}
	for _, f := range before {
		old[f] = true
	}
	for _, f := range shmFiles(t) {
		if !old[f] {
			t.Errorf("shared-memory file left behind: %s", f)
		}
	}
}

func TestAllreduceEveryDtypeOpAndLength(t *testing.T) {
	defer noShmLeftovers(t, shmFiles(t))
	r := gorun(t, 3*time.Minute, "-np", "3", "allreducecheck")
	if r.code != 0 {
		t.Fatalf("exit code %d; output:\n%s", r.code, r.out)
	}
	for rank := 0; rank < 3; rank++ {
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^\[%d\]<stdout>:\s*rank %d of 3: \d+ checks OK`, rank, rank))
		if !re.MatchString(r.out) {
			t.Errorf("no success line with prefix for rank %d; output:\n%s", rank, r.out)
		}
	}
}

func TestAllreduceTCPOnly(t *testing.T) {
	r := gorun(t, 3*time.Minute, "-np", "3", "--disable-shm", "allreducecheck", "-quick")
	if r.code != 0 {
		t.Fatalf("exit code %d; output:\n%s", r.code, r.out)
	}
}

func TestStartTimeoutNamesRanksThatNeverRegistered(t *testing.T) {
	r := gorun(t, time.Minute, "-np", "3", "--start-timeout", "3s", "worker", "-mode", "noinit", "-rank", "2")
	if r.code == 0 {
		t.Fatalf("gorun succeeded although rank 2 never called Init; output:\n%s", r.out)
	}
	if !regexp.MustCompile(`\[2\].*did not register|did not register.*\[2\]|rank 2 .*did not register|ranks? \[?2\]? did not register`).MatchString(r.out) {
		t.Fatalf("output does not name rank 2 as not registered:\n%s", r.out)
	}
}

func TestMismatchFailsEveryRankAndJobGoesOn(t *testing.T) {
	r := gorun(t, time.Minute, "-np", "3", "worker", "-mode", "mismatch", "-rank", "1")
	if r.code != 0 {
		t.Fatalf("exit code %d; output:\n%s", r.code, r.out)
	}
	for rank := 0; rank < 3; rank++ {
		re := regexp.MustCompile(fmt.Sprintf(`rank %d: mismatch after (\S+): .*rank 1.*1000|rank %d: mismatch after (\S+): .*1000.*rank 1`, rank, rank))
		m := re.FindStringSubmatch(r.out)
		if m == nil {
			t.Errorf("rank %d: no mismatch error naming rank 1 and count 1000; output:\n%s", rank, r.out)
			continue
		}
		if !strings.Contains(r.out, "1024") {
			t.Errorf("error does not name the other count 1024:\n%s", r.out)
		}
		if !strings.Contains(r.out, fmt.Sprintf("rank %d: next allreduce ok", rank)) {
			t.Errorf("rank %d: allreduce after the mismatch did not work:\n%s", rank, r.out)
		}
	}
}

func TestStallWarningThenTimeout(t *testing.T) {
	r := gorun(t, time.Minute, "-np", "3", "--stall-check-warning-time-seconds", "2",
		"--stall-check-shutdown-time-seconds", "4", "worker", "-mode", "stall", "-rank", "2")
	if r.code == 0 {
		t.Fatalf("gorun exited 0 after a stall shutdown; output:\n%s", r.out)
	}
	if !regexp.MustCompile(`(?s)stall.*rank 2: .*grad/x.*alive`).MatchString(r.out) {
		t.Errorf("rank 0 did not log the missing rank 2 and tensor grad/x:\n%s", r.out)
	}
	if !regexp.MustCompile(`rank 2: grad/x \(waiting up to [^)]*\); last submitted allreduce "grad/other" [0-9.]+m?s ago`).MatchString(r.out) {
		t.Errorf("the stall report does not say what rank 2 last did:\n%s", r.out)
	}
	for _, rank := range []int{0, 1} {
		if !regexp.MustCompile(fmt.Sprintf(`rank %d: grad/x: .*timed out`, rank)).MatchString(r.out) {
			t.Errorf("rank %d: call did not fail with ErrTimeout:\n%s", rank, r.out)
		}
	}
}

func TestPeerDeathFailsEveryOtherRankNamingIt(t *testing.T) {
	for _, shm := range []bool{true, false} {
		t.Run(fmt.Sprintf("shm=%v", shm), func(t *testing.T) {
			defer noShmLeftovers(t, shmFiles(t))
			args := []string{"-np", "3"}
			if !shm {
				args = append(args, "--disable-shm")
			}
			args = append(args, "worker", "-mode", "die", "-rank", "1", "-n", "4000000")
			r := gorun(t, time.Minute, args...)
			if r.code == 0 {
				t.Fatalf("gorun exited 0 though rank 1 died; output:\n%s", r.out)
			}
			for _, rank := range []int{0, 2} {
				re := regexp.MustCompile(fmt.Sprintf(`rank %d: allreduce failed after .*rank 1 (on localhost was lost|\(pid \d+, host localhost\) exited with code 7).*\(peer lost: true\)`, rank))
				if !re.MatchString(r.out) {
					t.Errorf("rank %d did not fail with ErrPeerLost naming rank 1:\n%s", rank, r.out)
				}
			}
		})
	}
}

// TestKilledWorkerIsTheFirstFailure: a worker killed by SIGKILL is the
// job's first failure, in gorun's exit code (128+9) and first message and
// in every survivor's error, however fast the survivors exit.
func TestKilledWorkerIsTheFirstFailure(t *testing.T) {
	for _, shm := range []bool{true, false} {
		t.Run(fmt.Sprintf("shm=%v", shm), func(t *testing.T) {
			defer noShmLeftovers(t, shmFiles(t))
			args := []string{"-np", "3"}
			if !shm {
				args = append(args, "--disable-shm")
			}
			args = append(args, "worker", "-mode", "kill", "-rank", "1", "-n", "4000000")
			r := gorun(t, time.Minute, args...)
			if r.code != 128+9 {
				t.Fatalf("gorun exited %d, want 137 (rank 1 killed by SIGKILL); output:\n%s", r.code, r.out)
			}
			first := firstLauncherError(r.out)
			// Rank 1 first: its death as gorun saw it, or (when a survivor
			// was reaped first) as the failure oracle recorded it.
			if !regexp.MustCompile(`^(first failure: )?rank 1 `).MatchString(first) {
				t.Errorf("gorun's first error %q does not name rank 1 first; output:\n%s", first, r.out)
			}
			if !regexp.MustCompile(`(?m)^\S+\tERROR\t\S+\t(first failure: )?rank 1 \(pid \d+, host localhost\) was killed by signal SIGKILL`).MatchString(r.out) {
				t.Errorf("gorun did not report rank 1's SIGKILL; output:\n%s", r.out)
			}
			for _, rank := range []int{0, 2} {
				re := regexp.MustCompile(fmt.Sprintf(`rank %d: allreduce failed after \S+: rank 1 .*\(peer lost: true\)`, rank))
				if !re.MatchString(r.out) {
					t.Errorf("rank %d did not fail with ErrPeerLost naming rank 1 first:\n%s", rank, r.out)
				}
			}
		})
	}
}

// TestKillDuringNegotiationIsNamedByEverySurvivor: rank 2 dies while the
// ranks negotiate (each call a new name: requests gathered to rank 0,
// responses broadcast); rank 1, which only talks to rank 0 there, learns
// of it through rank 0's fail-stop and must still name rank 2.
func TestKillDuringNegotiationIsNamedByEverySurvivor(t *testing.T) {
	for _, shm := range []bool{true, false} {
		t.Run(fmt.Sprintf("shm=%v", shm), func(t *testing.T) {
			defer noShmLeftovers(t, shmFiles(t))
			args := []string{"-np", "3"}
			if !shm {
				args = append(args, "--disable-shm")
			}
			r := gorun(t, time.Minute, append(args, "worker", "-mode", "negkill", "-rank", "2")...)
			if r.code != 128+9 {
				t.Fatalf("gorun exited %d, want 137; output:\n%s", r.code, r.out)
			}
			for _, rank := range []int{0, 1} {
				re := regexp.MustCompile(fmt.Sprintf(`rank %d: call \d+ failed: rank 2 .*\(peer lost: true\)`, rank))
				if !re.MatchString(r.out) {
					t.Errorf("rank %d did not fail with ErrPeerLost naming rank 2 first:\n%s", rank, r.out)
				}
			}
		})
	}
}

// firstLauncherError returns gorun's own first ERROR line (worker lines
// start with "[rank]<").
func firstLauncherError(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "[") && strings.Contains(line, "\tERROR\t") {
			_, msg, _ := strings.Cut(line, ".go:")
			_, msg, _ = strings.Cut(msg, "\t")
			return msg
		}
	}
	return ""
}

func TestSteadyStateNeedsNoRequestsAndFuses(t *testing.T) {
	r := gorun(t, time.Minute, "-np", "2", "worker", "-mode", "steady", "-steps", "20")
	if r.code != 0 {
		t.Fatalf("exit code %d; output:\n%s", r.code, r.out)
	}
	re := regexp.MustCompile(`rank (\d): steady: requests after first step (\d+), backend ops per step ([\d.]+)`)
	ms := re.FindAllStringSubmatch(r.out, -1)
	if len(ms) != 2 {
		t.Fatalf("want 2 steady lines; output:\n%s", r.out)
	}
	for _, m := range ms {
		if m[2] != "0" {
			t.Errorf("rank %s sent %s requests to rank 0 after the first step", m[1], m[2])
		}
		var ops float64
		fmt.Sscan(m[3], &ops)
		if ops > 2 {
			t.Errorf("rank %s ran %.2f backend ops per step, want <= 2", m[1], ops)
		}
	}
}

func TestProcessSetsJoinGroupedAndObjects(t *testing.T) {
	r := gorun(t, time.Minute, "-np", "3", "worker", "-mode", "features")
	if r.code != 0 {
		t.Fatalf("exit code %d; output:\n%s", r.code, r.out)
	}
	for rank := 0; rank < 3; rank++ {
		for _, what := range []string{"process set ok", "grouped allreduce ok", "objects ok", "join ok (last 2)"} {
			if !strings.Contains(r.out, fmt.Sprintf("rank %d: %s", rank, what)) {
				t.Errorf("rank %d did not report %q:\n%s", rank, what, r.out)
			}
		}
	}
}

func TestBenchChecksEveryOpAndMode(t *testing.T) {
	for _, op := range []string{"allreduce", "allgather", "broadcast", "reducescatter", "alltoall"} {
		for _, direct := range []bool{false, true} {
			args := []string{"-np", "3", "gorovod-bench", op, "-b", "1K", "-e", "1M", "-f", "32", "-c", "1", "-n", "3", "-w", "1", "-d", "bf16"}
			if op == "allreduce" {
				args = append(args, "-o", "max")
			}
			if direct {
				args = append(args, "--direct", "--reps", "3") // batched timing, median row
			}
			r := gorun(t, time.Minute, args...)
			if direct && !strings.Contains(r.out, "median of 3 batches") {
				t.Errorf("%s --reps 3: header does not say how time was taken:\n%s", op, r.out)
			}
			if r.code != 0 || !strings.Contains(r.out, "# Out of bounds values : 0 OK") {
				t.Errorf("%s direct=%v: exit %d, output:\n%s", op, direct, r.code, r.out)
			}
		}
	}
	r := gorun(t, time.Minute, "-np", "2", "gorovod-bench", "negotiation", "--tensors", "50", "--steps", "20")
	if r.code != 0 || !strings.Contains(r.out, "steps/s") {
		t.Errorf("negotiation mode: exit %d, output:\n%s", r.code, r.out)
	}
}

func TestTimelineOfAThreeRankRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "timeline.json")
	r := gorun(t, time.Minute, "-np", "3", "--timeline-filename", path, "worker", "-mode", "steady", "-steps", "2")
	if r.code != 0 {
		t.Fatalf("exit code %d; output:\n%s", r.code, r.out)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var events []struct {
		Name string         `json:"name"`
		Ph   string         `json:"ph"`
		Pid  int            `json:"pid"`
		Args map[string]any `json:"args"`
	}
	if err := json.Unmarshal(data, &events); err != nil {
		t.Fatalf("timeline is not valid JSON: %v", err)
	}
	// Per tensor (pid): the phases in order, and every rank's readiness.
	phases := map[int][]string{}
	ready := map[int]map[float64]bool{}
	depth := map[int]int{}
	for _, e := range events {
		switch e.Ph {
		case "B":
			phases[e.Pid] = append(phases[e.Pid], e.Name)
			depth[e.Pid]++
		case "E":
			depth[e.Pid]--
		case "X":
			if rank, ok := e.Args["rank"].(float64); ok {
				if ready[e.Pid] == nil {
					ready[e.Pid] = map[float64]bool{}
				}
				ready[e.Pid][rank] = true
			}
		}
	}
	want := []string{"NEGOTIATE_ALLREDUCE", "ALLREDUCE", "QUEUE", "MEMCPY_IN_FUSION_BUFFER", "CPU_ALLREDUCE", "MEMCPY_OUT_FUSION_BUFFER"}
	complete := 0
	for pid, ph := range phases {
		if depth[pid] != 0 {
			t.Errorf("tensor %d: unbalanced B/E events", pid)
		}
		if len(ph) >= len(want) && strings.Join(ph[:len(want)], ",") == strings.Join(want, ",") && len(ready[pid]) == 3 {
			complete++
		}
	}
	if complete < 200 {
		t.Errorf("%d tensors have the full phase sequence %v with 3 ranks' readiness, want 200 (first step)", complete, want)
	}
}
