package main

import (
	"context"
	"testing"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/dataparallel"
)

// TestTrainingThroughTheHelper trains in package collective's world of one
// (the real helper, the real background loop) with each compression and
// with accumulation: every variant learns, and float16 gradients put half
// the bytes of float32 on the wire, as the collective layer counts them.
func TestTrainingThroughTheHelper(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := collective.Init(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := collective.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}()
	train, test := Synthetic(1280, 320, 1)
	type result struct {
		acc       float64
		gradBytes int64 // the helper's count
		collBytes int64 // the collective layer's (gorovod_bytes_total), whole run
	}
	runWith := func(sc SyncConfig) result {
		t.Helper()
		cfg := smallRecipe
		cfg.Epochs = 2
		cfg.SyncConfig = sc
		tr, err := NewTrainer(cfg, collectiveComm{}, train, test)
		if err != nil {
			t.Fatal(err)
		}
		before := collective.GetStats().Bytes
		last, err := tr.Run(ctx, nil)
		if err != nil {
			t.Fatalf("%+v: %v", sc, err)
		}
		return result{acc: last.TestAcc, gradBytes: tr.GradStats().WireBytes, collBytes: collective.GetStats().Bytes - before}
	}
	none := runWith(SyncConfig{Accumulate: 1})
	fp16 := runWith(SyncConfig{Accumulate: 1, Compression: dataparallel.FP16})
	bf16 := runWith(SyncConfig{Accumulate: 1, Compression: dataparallel.BF16})
	acc := runWith(SyncConfig{Accumulate: 2})
	for name, r := range map[string]result{"none": none, "fp16": fp16, "bf16": bf16, "accumulate 2": acc} {
		if r.acc < 0.85 {
			t.Errorf("%s: test accuracy %.3f, want at least 0.85", name, r.acc)
		}
	}
	if none.gradBytes == 0 || fp16.gradBytes*2 != none.gradBytes || bf16.gradBytes != fp16.gradBytes {
		t.Errorf("gradient bytes: none %d, fp16 %d, bf16 %d; want 16-bit formats at half of none", none.gradBytes, fp16.gradBytes, bf16.gradBytes)
	}
	// Both runs broadcast the same parameters and sum the same statistics:
	// what the collective layer counted differs by exactly the saved half.
	if d := none.collBytes - fp16.collBytes; d != fp16.gradBytes {
		t.Errorf("collective bytes: none %d, fp16 %d (difference %d), want a difference of %d", none.collBytes, fp16.collBytes, d, fp16.gradBytes)
	}
	if acc.gradBytes*2 != none.gradBytes {
		t.Errorf("accumulating 2 passes sent %d gradient bytes, want half of %d", acc.gradBytes, none.gradBytes)
	}
}
