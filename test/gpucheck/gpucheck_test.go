//go:build cgo

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorovod/gorovod/nccl/fakenccl"
)

// These tests run gpucheck under gorun, each rank a process, on the NCCL
// test double loaded through the normal dlopen path (LD_LIBRARY_PATH).

var binDir string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "gorovod-gpucheck-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/gorovod/gorovod/cmd/gorun", "github.com/gorovod/gorovod/test/gpucheck")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building test binaries:", err)
		return 1
	}
	err = fakenccl.Build(context.Background(), filepath.Join(dir, "fake"), fakenccl.Options{})
	if errors.Is(err, fakenccl.ErrNoCompiler) {
		fmt.Fprintln(os.Stderr, "gpucheck tests skipped:", err)
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

type result struct {
	out  string
	code int
	took time.Duration
}

// gorun runs `gorun -np np gpucheck args...` on the double with env added;
// a run that exceeds bound fails the test.
func gorun(t *testing.T, bound time.Duration, np int, env []string, args ...string) result {
	t.Helper()
	return gorunArgs(t, bound, np, env, nil, args...)
}

// gorunArgs is gorun with flags of gorun's own before the program.
func gorunArgs(t *testing.T, bound time.Duration, np int, env, flags []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	argv := append(append(flags, "-np", fmt.Sprint(np), filepath.Join(binDir, "gpucheck")), args...)
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "gorun"), argv...)
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+filepath.Join(binDir, "fake"), "FAKECUDA_DEVICES=4")
	cmd.Env = append(cmd.Env, env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	r := result{out: string(out), took: time.Since(start)}
	if ctx.Err() != nil {
		t.Fatalf("gorun %s did not finish within %v; output:\n%s", strings.Join(argv, " "), bound, out)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("gorun: %v", err)
	}
	return r
}

// TestDeviceCollectivesUnderGorun: the matrix, the mixed step and the
// fusion count at np 2 and 4; local ranks get the GPUs GOROVOD_GPU_MAP
// lists, in reverse.
func TestDeviceCollectivesUnderGorun(t *testing.T) {
	for _, np := range []int{2, 4} {
		t.Run(fmt.Sprintf("np%d", np), func(t *testing.T) {
			gpus := make([]string, np)
			for r := range gpus {
				gpus[r] = fmt.Sprint(np - 1 - r)
			}
			// The batch window is longer than a submission gap on a loaded
			// machine, so the 200 small tensors of the fusion check meet in
			// one or two cycles.
			res := gorun(t, 3*time.Minute, np, []string{"GOROVOD_GPU_MAP=" + strings.Join(gpus, ","),
				"GOROVOD_CYCLE_TIME=20ms", "GOROVOD_BATCH_WINDOW=5ms"})
			if res.code != 0 {
				t.Fatalf("exit %d:\n%s", res.code, res.out)
			}
			for r := 0; r < np; r++ {
				re := regexp.MustCompile(fmt.Sprintf(`rank %d of %d on GPU %d: (\d+) device checks OK, mixed host\+device OK, 200 small tensors in [12] NCCL calls`, r, np, np-1-r))
				if !re.MatchString(res.out) {
					t.Errorf("rank %d did not report its checks on GPU %d:\n%s", r, np-1-r, res.out)
				}
			}
		})
	}
}

// TestDeviceFaultsUnderGorun: an async error, a hung collective and a
// killed rank each end the job within the progress deadline, every
// surviving rank's waiting call failing with a named error that it
// reports. gorun stops the other workers once one has failed; gpucheck's
// fault mode outlives the SIGTERM until its call has ended (the kill grace
// period here is far longer than the progress deadline), so each
// survivor's report is there to check.
func TestDeviceFaultsUnderGorun(t *testing.T) {
	for _, tc := range []struct {
		name, fault string
		// want matches each rank's report, by rank; "" expects none (the
		// rank died).
		want []string
		code int
	}{
		{"async-error", "error:1:3", []string{
			`rank 0: ErrPeerLost after .*rank 1 aborted its communicator`,
			`rank 1: ErrPeerLost after .*injected async error on rank 1`}, 2},
		{"hang", "hang:1:3", []string{
			`rank 0: (ErrTimeout|ErrPeerLost) after .*(progress deadline|rank 1 aborted)`,
			`rank 1: (ErrTimeout|ErrPeerLost) after .*(progress deadline|rank 0 aborted)`}, 2},
		{"killed-rank", "exit:1:3", []string{`rank 0: ErrPeerLost after .*\brank 1\b`, ""}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := gorunArgs(t, 2*time.Minute, 2, []string{"FAKENCCL_FAULT=" + tc.fault, "GOROVOD_PROGRESS_TIMEOUT=3s"},
				[]string{"--kill-grace-period", "30s"}, "-mode", "fault")
			if res.code != tc.code {
				t.Errorf("gorun exited %d, want %d:\n%s", res.code, tc.code, res.out)
			}
			for r, w := range tc.want {
				line := regexp.MustCompile(fmt.Sprintf(`(?m)^\[%d\]<stdout>:rank %d: .*$`, r, r)).FindString(res.out)
				switch {
				case w == "" && line != "":
					t.Errorf("rank %d reported %q, want no report (it died)", r, line)
				case w != "" && !regexp.MustCompile(w).MatchString(line):
					t.Errorf("rank %d reported %q, want a match of %q:\n%s", r, line, w, res.out)
				}
			}
			if tc.code == 3 && !strings.Contains(res.out, "rank 1 (pid") {
				t.Errorf("gorun did not name the killed rank 1:\n%s", res.out)
			}
			if res.took > time.Minute {
				t.Errorf("the job took %v to end", res.took)
			}
		})
	}
}
