package main

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/collectivetest"
	"github.com/gorovod/gorovod/collective/dataparallel"
)

// trainInWorlds trains with sc on ranks in-process worlds (the real helper,
// background loops and algorithms) and returns each rank's checksum, last
// progress, gradient bytes (the helper's count) and collective bytes (the
// world's count, gorovod_bytes_total).
type worldResult struct {
	sum                  string
	last                 Progress
	gradBytes, collBytes int64
}

func trainInWorlds(t *testing.T, ranks int, sc SyncConfig) []worldResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	train, test := Synthetic(1280, 320, 1)
	res := make([]worldResult, ranks)
	var mu sync.Mutex
	err := collectivetest.Run(ctx, ranks, func(ctx context.Context, w *collective.World) error {
		cfg := smallRecipe
		cfg.Epochs = 2
		cfg.SyncConfig = sc
		cfg.Seed = uint64(100 + w.Rank()) // different local init: the broadcast must win
		tr, err := NewTrainer(cfg, collectiveComm{w: w}, train, test)
		if err != nil {
			return err
		}
		tr.cfg.Seed = 100 // the shuffle seed must agree
		before := w.Stats().Bytes
		last, err := tr.Run(ctx, nil)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		res[w.Rank()] = worldResult{sum: tr.Model.Checksum(), last: last,
			gradBytes: tr.GradStats().WireBytes, collBytes: w.Stats().Bytes - before}
		return nil
	})
	if err != nil {
		t.Fatalf("%+v: %v", sc, err)
	}
	for r, x := range res {
		if x.sum != res[0].sum {
			t.Errorf("%+v: rank %d checksum %s, rank 0 %s", sc, r, x.sum, res[0].sum)
		}
	}
	return res
}

// TestTrainingThroughTheHelper trains two ranks through the helper with
// each compression and with accumulation: every variant learns, the ranks
// end bit-identical, and float16 gradients put half the bytes of float32 on
// the wire, as the collective layer counts them.
func TestTrainingThroughTheHelper(t *testing.T) {
	checkNoLeak(t)
	none := trainInWorlds(t, 2, SyncConfig{Accumulate: 1})[0]
	fp16 := trainInWorlds(t, 2, SyncConfig{Accumulate: 1, Compression: dataparallel.FP16})[0]
	bf16 := trainInWorlds(t, 2, SyncConfig{Accumulate: 1, Compression: dataparallel.BF16})[0]
	acc := trainInWorlds(t, 2, SyncConfig{Accumulate: 2})[0]
	for name, r := range map[string]worldResult{"none": none, "fp16": fp16, "bf16": bf16, "accumulate 2": acc} {
		if r.last.TestAcc < 0.85 {
			t.Errorf("%s: test accuracy %.3f, want at least 0.85", name, r.last.TestAcc)
		}
	}
	if d := none.last.TestAcc - fp16.last.TestAcc; d > 0.01 {
		t.Errorf("fp16 test accuracy %.4f, more than a point below %.4f", fp16.last.TestAcc, none.last.TestAcc)
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

// TestHelperMatchesTheTestWorld: with neither compression nor accumulation
// the helper in real worlds computes exactly what the test world's plain
// averaging does (the same parameters, bit for bit, for two ranks).
func TestHelperMatchesTheTestWorld(t *testing.T) {
	viaHelper := trainInWorlds(t, 2, SyncConfig{Accumulate: 1})
	train, test := Synthetic(1280, 320, 1)
	w := newWorld(2)
	sums := make([]string, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := smallRecipe
			cfg.Epochs = 2
			cfg.Seed = 100
			tr, err := NewTrainer(cfg, w.comm(r), train, test)
			if err != nil {
				errs[r] = err
				return
			}
			_, errs[r] = tr.Run(context.Background(), nil)
			sums[r] = tr.Model.Checksum()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if sums[0] != viaHelper[0].sum {
		t.Errorf("test world %s, real worlds through the helper %s", sums[0], viaHelper[0].sum)
	}
}
