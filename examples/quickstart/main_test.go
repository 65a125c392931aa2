package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestLearnsTheLine builds and runs the program (a world of one): it must
// recover the line it was trained on, as docs/getting-started.md shows.
func TestLearnsTheLine(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "quickstart")
	if out, err := exec.CommandContext(ctx, goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("building: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, bin).CombinedOutput()
	if err != nil {
		t.Fatalf("running: %v\n%s", err, out)
	}
	if want := "rank 0 of 1: w = [2.00 -1.00 0.50 3.00], b = 1.00\n"; string(out) != want {
		t.Errorf("output %q, want %q", out, want)
	}
}
