package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/gorovod/gorovod/examples/internal/fashion"
)

func startLocal(context.Context) (Comm, func() error, error) {
	return localComm{}, func() error { return nil }, nil
}

var checksumLine = regexp.MustCompile(`(?m)^rank 0: parameter checksum sha256:[0-9a-f]{64}$`)

func TestRunFallsBackToGeneratedDataWithOneLine(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"-data", filepath.Join(t.TempDir(), "absent"), "-limit", "640", "-epochs", "2", "-hidden", "16"}
	if code := run(context.Background(), args, &stdout, &stderr, startLocal); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "cannot read Fashion-MNIST") || !strings.Contains(lines[0], "generated data") {
		t.Errorf("stderr should be one line about the fallback, got:\n%s", stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"on generated data (640 training, 640 test samples)", "epoch 1/2  loss", "epoch 2/2  loss", "test accuracy "} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if !checksumLine.MatchString(out) {
		t.Errorf("stdout lacks the checksum line:\n%s", out)
	}
}

func TestRunReadsIDXDirectory(t *testing.T) {
	dir := t.TempDir()
	writeSplit(t, dir, "train", 128, 5, true)
	writeSplit(t, dir, "t10k", 20, 5, false)
	var stdout, stderr bytes.Buffer
	args := []string{"-data", dir, "-epochs", "1", "-batch", "16", "-hidden", "8"}
	if code := run(context.Background(), args, &stdout, &stderr, startLocal); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("unexpected stderr: %s", stderr.String())
	}
	if !strings.Contains(stdout.String(), "25-8-10 MLP on Fashion-MNIST (128 training, 20 test samples)") {
		t.Errorf("header does not describe the data read:\n%s", stdout.String())
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-epochs", "0"}, {"-limit", "-1"}, {"-nosuchflag"}, {"extra"}, {"-lr", "0"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr, startLocal); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		if stderr.Len() == 0 {
			t.Errorf("%v: nothing on stderr", args)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"-h"}, &stdout, &stderr, startLocal); code != 0 || !strings.Contains(stderr.String(), "-epochs") {
		t.Errorf("-h: exit %d, usage:\n%s", code, stderr.String())
	}
}

func TestRunReportsJoinFailure(t *testing.T) {
	var stdout, stderr bytes.Buffer
	fail := func(context.Context) (Comm, func() error, error) { return nil, nil, errors.New("no rendezvous") }
	if code := run(context.Background(), nil, &stdout, &stderr, fail); code != 1 || !strings.Contains(stderr.String(), "joining the job: no rendezvous") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}

// TestAllRanksFallBackTogether: when one rank lacks the files, every rank
// trains on generated data, so their models stay comparable.
func TestAllRanksFallBackTogether(t *testing.T) {
	checkNoLeak(t)
	dir := t.TempDir()
	writeSplit(t, dir, "train", 64, 28, false)
	writeSplit(t, dir, "t10k", 16, 28, false)
	w := newWorld(2)
	names := make([]string, 2)
	errs := make([]string, 2)
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := options{data: dir, limit: 100}
			o.Seed = 1
			if r == 1 {
				o.data = filepath.Join(dir, "absent")
			}
			var stderr bytes.Buffer
			train, _, name, err := loadData(context.Background(), o, w.comm(r), &stderr)
			if err == nil && train.Len() != 100 {
				t.Errorf("rank %d: %d training samples, want the limit of 100", r, train.Len())
			}
			names[r], errs[r] = name, stderr.String()
		}()
	}
	wg.Wait()
	if names[0] != "generated data" || names[1] != "generated data" {
		t.Errorf("data sets %q, want generated data on both ranks", names)
	}
	if !strings.Contains(errs[0], "1 rank(s) cannot read") || !strings.Contains(errs[1], "cannot read Fashion-MNIST") {
		t.Errorf("stderr of rank 0 %q, rank 1 %q", errs[0], errs[1])
	}
}

func TestProgressPrinter(t *testing.T) {
	mid := Progress{Epoch: 1, Epochs: 2, Step: 5, Steps: 10, Loss: 0.5, Acc: 0.8, SamplesPerSec: 1000, CommShare: 0.1}
	end := mid
	end.Step, end.EpochEnd, end.TestAcc = 10, true, 0.85

	var plain bytes.Buffer
	pp := newProgressPrinter(&plain, false)
	pp.report(mid)
	pp.report(end)
	want := "epoch 1/2  loss 0.5000  acc 0.8000  test acc 0.8500  1000 samples/s  comm 10.0%\n"
	if plain.String() != want {
		t.Errorf("pipe output %q, want %q", plain.String(), want)
	}

	var tty bytes.Buffer
	pp = newProgressPrinter(&tty, true)
	pp.report(mid)
	pp.report(end)
	out := tty.String()
	if !strings.HasPrefix(out, "\r\x1b[Kepoch 1/2 [===============               ] 5/10") {
		t.Errorf("terminal bar %q", out)
	}
	if !strings.HasSuffix(out, "\r\x1b[K"+want) {
		t.Errorf("terminal epoch line %q should overwrite the bar", out)
	}
}

// writeSplit writes n images of side x side pixels with labels i mod 10 as
// the prefix-* IDX files of a split.
func writeSplit(t *testing.T, dir, prefix string, n, side int, gz bool) {
	t.Helper()
	d := &Dataset{X: make([]float32, n*side*side), Y: make([]uint8, n), Dim: side * side}
	for i := range d.X {
		d.X[i] = float32(i%7) / 6
	}
	for i := range d.Y {
		d.Y[i] = uint8(i % 10)
	}
	if err := fashion.WriteIDX(dir, prefix, d, side, gz); err != nil {
		t.Fatal(err)
	}
}
