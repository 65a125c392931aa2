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
	job := exec.CommandContext(ctx, filepath.Join(bin, "gorun"), "-np", "2", filepath.Join(bin, "fashionmnist"),
		"-data", filepath.Join(bin, "absent"), "-limit", "1280", "-epochs", "2", "-hidden", "32")
	out, err := job.CombinedOutput()
	if err != nil {
		t.Fatalf("gorun: %v\n%s", err, out)
	}
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
