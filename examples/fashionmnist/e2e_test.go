package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestTwoRanksUnderGorun builds gorun and this program and runs a short job
// of two real processes over package collective: both ranks must print the
// same parameter checksum, and rank 0 the test accuracy.
func TestTwoRanksUnderGorun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs two processes")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build gorun with")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := t.TempDir()
	build := exec.CommandContext(ctx, goTool, "build", "-o", bin+"/",
		"github.com/gorovod/gorovod/cmd/gorun", "github.com/gorovod/gorovod/examples/fashionmnist")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building: %v\n%s", err, out)
	}
	job := func(extra ...string) []byte {
		t.Helper()
		args := append([]string{"-np", "2", filepath.Join(bin, "fashionmnist"),
			"-data", filepath.Join(bin, "absent"), "-limit", "1280", "-epochs", "2", "-hidden", "32", "-grad-stats"}, extra...)
		out, err := exec.CommandContext(ctx, filepath.Join(bin, "gorun"), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("gorun %v: %v\n%s", extra, err, out)
		}
		checkSameChecksums(t, out)
		return out
	}
	out := job()
	// float16 gradients: still identical across ranks, half the bytes, as
	// both the helper and the collective layer count them.
	none, fp16 := gradBytes(t, out), gradBytes(t, job("-compression", "fp16"))
	if none[0] == 0 || 2*fp16[0] != none[0] || none[1]-fp16[1] != fp16[0] {
		t.Errorf("gradient/collective bytes of rank 0: none %v, fp16 %v; want fp16 gradients at half and the collective total lower by as much", none, fp16)
	}
	acc := regexp.MustCompile(`(?m)^\[0\]<stdout>:test accuracy ([01]\.\d+)`).FindSubmatch(out)
	if acc == nil {
		t.Fatalf("rank 0 printed no test accuracy:\n%s", out)
	}
	// Generated data is easy: two short epochs suffice.
	if a, err := strconv.ParseFloat(string(acc[1]), 64); err != nil || a < 0.9 {
		t.Errorf("test accuracy %s, want at least 0.9:\n%s", acc[1], out)
	}
	if n := len(regexp.MustCompile(`(?m)^\[\d\]<stderr>:.*generated data`).FindAll(out, -1)); n != 2 {
		t.Errorf("%d fallback lines on stderr, want one per rank:\n%s", n, out)
	}
}

func checkSameChecksums(t *testing.T, out []byte) {
	t.Helper()
	sums := regexp.MustCompile(`(?m)^\[(\d)\]<stdout>:rank (\d): parameter checksum (sha256:[0-9a-f]{64})$`).FindAllSubmatch(out, -1)
	if len(sums) != 2 {
		t.Fatalf("want a checksum line from each of 2 ranks:\n%s", out)
	}
	for _, m := range sums {
		if string(m[1]) != string(m[2]) {
			t.Errorf("line of rank %s names rank %s", m[1], m[2])
		}
	}
	if string(sums[0][3]) != string(sums[1][3]) {
		t.Errorf("checksums differ across ranks:\n%s", out)
	}
}

// gradBytes reads rank 0's -grad-stats line: gradient bytes, collective bytes.
func gradBytes(t *testing.T, out []byte) [2]int64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\[0\]<stdout>:rank 0: gradients (\d+) bytes .*; collective bytes (\d+)$`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("rank 0 printed no gradient statistics:\n%s", out)
	}
	var r [2]int64
	for i := range r {
		v, err := strconv.ParseInt(string(m[i+1]), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		r[i] = v
	}
	return r
}
