package main

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/dataparallel"
)

// TestLearnsOnGeneratedData runs the program in a world of one on the
// generated stand-in: it must learn it (the generated classes are easy) and
// print its result lines.
func TestLearnsOnGeneratedData(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	args := []string{"-data", filepath.Join(t.TempDir(), "absent"), "-steps", "60", "-batch", "16",
		"-eval-every", "30", "-test-limit", "200", "-accumulate", "2", "-compression", "fp16"}
	if code := run(ctx, args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "generated data") {
		t.Errorf("stderr does not mention the fallback:\n%s", stderr.String())
	}
	out := stdout.String()
	m := regexp.MustCompile(`(?m)^test accuracy ([01]\.\d+) \(loss [0-9.]+\) after 60 steps in `).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no result line:\n%s", out)
	}
	if acc, _ := strconv.ParseFloat(m[1], 64); acc < 0.8 {
		t.Errorf("test accuracy %v on generated data, want at least 0.8:\n%s", acc, out)
	}
	for _, want := range []string{"step 30/60  loss", "rank 0: parameter checksum sha256:", "compression fp16"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
}

func TestRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-steps", "0"}, {"-steps", "10", "-accumulate", "3"}, {"-compression", "int8"},
		{"-lr", "0"}, {"-momentum", "1"}, {"extra"}, {"-test-limit", "-1"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", args, code, stderr.String())
		}
	}
}

// TestTwoRanksUnderGorun runs two real processes: both must end with the
// same parameters.
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
		"github.com/gorovod/gorovod/cmd/gorun", "github.com/gorovod/gorovod/examples/fashioncnn")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "gorun"), "-np", "2", filepath.Join(bin, "fashioncnn"),
		"-data", filepath.Join(bin, "absent"), "-steps", "20", "-batch", "8", "-test-limit", "100", "-compression", "bf16").CombinedOutput()
	if err != nil {
		t.Fatalf("gorun: %v\n%s", err, out)
	}
	sums := regexp.MustCompile(`(?m)^\[(\d)\]<stdout>:rank (\d): parameter checksum (sha256:[0-9a-f]{64})$`).FindAllSubmatch(out, -1)
	if len(sums) != 2 || string(sums[0][3]) != string(sums[1][3]) {
		t.Fatalf("want the same checksum from both ranks:\n%s", out)
	}
}

// TestAllreducesStartDuringTheBackwardPass follows the helper's events
// through a few real steps: in every step the allreduce of the first
// gradient (fc.w) starts before the backward pass has produced the last one
// (conv1.b), and all eight are started before Synchronize returns.
func TestAllreducesStartDuringTheBackwardPass(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o, err := parseFlags([]string{"-data", filepath.Join(t.TempDir(), "absent"), "-steps", "3", "-batch", "4",
		"-eval-every", "0", "-test-limit", "10"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	o.observer = func(ev dataparallel.Event) {
		switch ev.Kind {
		case dataparallel.EventReady:
			events = append(events, "ready "+ev.Names[0])
		case dataparallel.EventStart:
			events = append(events, "start "+ev.Names[0])
		case dataparallel.EventSynchronized:
			events = append(events, "synchronized")
		}
	}
	if err := collective.Init(ctx); err != nil {
		t.Fatal(err)
	}
	err = train(ctx, o, io.Discard, io.Discard)
	if serr := collective.Shutdown(ctx); err == nil {
		err = serr
	}
	if err != nil {
		t.Fatal(err)
	}
	steps := 0
	for len(events) > 0 {
		end := slices.Index(events, "synchronized")
		if end < 0 {
			t.Fatalf("events after the last Synchronize: %v", events)
		}
		step := events[:end]
		events = events[end+1:]
		steps++
		started, lastReady := slices.Index(step, "start fc.w"), slices.Index(step, "ready conv1.b")
		if started < 0 || lastReady < 0 || started > lastReady {
			t.Errorf("step %d: fc.w's allreduce did not start before conv1.b was ready: %v", steps, step)
		}
		if n := len(slices.DeleteFunc(slices.Clone(step), func(e string) bool { return !strings.HasPrefix(e, "start ") })); n != 8 {
			t.Errorf("step %d: %d allreduces started, want 8: %v", steps, n, step)
		}
	}
	if steps != 3 {
		t.Errorf("%d steps seen, want 3", steps)
	}
}
