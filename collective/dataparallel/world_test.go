package dataparallel

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/collectivetest"
)

// These tests run several ranks in one process (collectivetest) through
// the real background loops, negotiation and algorithms.

// checkNoLeak fails the test if goroutines started during it (the worlds'
// loops and links) are still running shortly after it ends.
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		for range 200 {
			if runtime.NumGoroutine() <= before {
				return
			}
			time.Sleep(10 * time.Millisecond) // polling for exit, not synchronising
		}
		t.Errorf("%d goroutines before the test, %d after", before, runtime.NumGoroutine())
	})
}

// regression is a data set for linearGrad: rows xs, targets ys.
type regression struct {
	xs [][]float64
	ys []float64
}

func newRegression(seed uint64, n, dim int) regression {
	rng := rand.New(rand.NewPCG(seed, 9))
	r := regression{xs: make([][]float64, n), ys: make([]float64, n)}
	for s := range r.xs {
		r.xs[s] = make([]float64, dim)
		for i := range r.xs[s] {
			r.xs[s][i] = rng.NormFloat64()
		}
		r.ys[s] = rng.NormFloat64()
	}
	return r
}

// TestAcrossRanksAccumulationEqualsOneBigBatch: 3 ranks x 4 passes x 5
// samples averaged by the helper equal the gradient of all 60 samples at
// once (the global batch), on every rank.
func TestAcrossRanksAccumulationEqualsOneBigBatch(t *testing.T) {
	checkNoLeak(t)
	ctx := testCtx(t)
	const ranks, k, batch, dim = 3, 4, 5, 6
	data := newRegression(7, ranks*k*batch, dim)
	w := make([]float64, dim)
	for i := range w {
		w[i] = float64(i) - 2.5
	}
	want := make([]float64, dim)
	linearGrad(want, w, data.xs, data.ys)

	got := make([][]float64, ranks)
	err := collectivetest.Run(ctx, ranks, func(ctx context.Context, world *collective.World) error {
		g := make([]float64, dim)
		h, err := New[float64](WithAccumulation(k), WithCallOptions(collective.InWorld(world)))
		if err != nil {
			return err
		}
		if err := h.Register("w", g); err != nil {
			return err
		}
		for pass := 0; pass < k; pass++ {
			// Rank r's pass p takes the samples of block p*ranks+r.
			lo := (pass*ranks + world.Rank()) * batch
			linearGrad(g, w, data.xs[lo:lo+batch], data.ys[lo:lo+batch])
			if err := h.Ready(ctx, "w"); err != nil {
				return err
			}
			synced, err := h.Synchronize(ctx)
			if err != nil {
				return err
			}
			if synced != (pass == k-1) {
				return fmt.Errorf("pass %d: synced %v", pass, synced)
			}
		}
		got[world.Rank()] = g
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for r, g := range got {
		for i := range want {
			if math.Abs(g[i]-want[i]) > 1e-12*math.Max(1, math.Abs(want[i])) {
				t.Errorf("rank %d element %d: %v, one pass over the global batch gives %v", r, i, g[i], want[i])
			}
		}
		if !slices.Equal(g, got[0]) {
			t.Errorf("rank %d holds %v, rank 0 %v: ranks must agree bit for bit", r, g, got[0])
		}
	}
}

// TestAcrossRanksCompression averages float16 and bfloat16 gradients of
// two ranks: within the format's precision of the true mean, with the
// same bits on both ranks, and half the bytes of float32 on the wire as
// the worlds count them.
func TestAcrossRanksCompression(t *testing.T) {
	checkNoLeak(t)
	ctx := testCtx(t)
	const ranks, n = 2, 512
	input := func(rank int) []float32 {
		rng := rand.New(rand.NewPCG(uint64(rank), 3))
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	for _, tc := range []struct {
		c   Compression
		eps float64
	}{{None, 0}, {FP16, 1.0 / 1024}, {BF16, 1.0 / 128}} {
		t.Run(tc.c.String(), func(t *testing.T) {
			got := make([][]float32, ranks)
			bytes := make([]int64, ranks)
			err := collectivetest.Run(ctx, ranks, func(ctx context.Context, world *collective.World) error {
				g := input(world.Rank())
				h, err := New[float32](WithCompression(tc.c), WithCallOptions(collective.InWorld(world)))
				if err != nil {
					return err
				}
				before := world.Stats().Bytes
				if err := errors.Join(h.Register("g", g), h.Ready(ctx, "g")); err != nil {
					return err
				}
				if _, err := h.Synchronize(ctx); err != nil {
					return err
				}
				got[world.Rank()], bytes[world.Rank()] = g, world.Stats().Bytes-before
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			a, b := input(0), input(1)
			for i := range a {
				mean := (float64(a[i]) + float64(b[i])) / 2
				// Each input and the sum are rounded once: a few half-ulps of the inputs.
				tol := tc.eps*(math.Abs(float64(a[i]))+math.Abs(float64(b[i]))) + 1e-6
				if d := math.Abs(float64(got[0][i]) - mean); d > tol {
					t.Fatalf("element %d: %v, true mean %v (error %g > %g)", i, got[0][i], mean, d, tol)
				}
			}
			if !slices.Equal(got[0], got[1]) {
				t.Error("the ranks' results differ")
			}
			wantBytes := int64(4 * n)
			if tc.c != None {
				wantBytes = 2 * n
			}
			if bytes[0] != wantBytes || bytes[1] != wantBytes {
				t.Errorf("bytes on the wire per rank %v, want %d", bytes, wantBytes)
			}
		})
	}
}

// TestAcrossRanksProcessSetAndGroups: ranks 0 and 2 of three synchronize in
// a process set, with a grouped pair, summing; rank 1 takes no part.
func TestAcrossRanksProcessSetAndGroups(t *testing.T) {
	checkNoLeak(t)
	ctx := testCtx(t)
	var mu sync.Mutex
	results := map[int][]float32{}
	err := collectivetest.Run(ctx, 3, func(ctx context.Context, world *collective.World) error {
		ps, err := world.NewProcessSet(ctx, []int{0, 2})
		if err != nil {
			return err
		}
		if !ps.Included() {
			return nil
		}
		r := float32(world.Rank())
		a, b, c := []float32{r, 1}, []float32{10 * r}, []float32{100}
		h, err := New[float32](WithOp(collective.Sum), WithCallOptions(collective.InWorld(world), collective.InProcessSet(ps)))
		if err != nil {
			return err
		}
		if err := errors.Join(h.Register("a", a), h.Register("b", b), h.Register("c", c), h.Group("ab", "a", "b")); err != nil {
			return err
		}
		for _, n := range []string{"c", "b", "a"} {
			if err := h.Ready(ctx, n); err != nil {
				return err
			}
		}
		if _, err := h.Synchronize(ctx); err != nil {
			return err
		}
		mu.Lock()
		results[world.Rank()] = slices.Concat(a, b, c)
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{0 + 2, 2, 0 + 20, 200}
	for _, r := range []int{0, 2} {
		if !slices.Equal(results[r], want) {
			t.Errorf("rank %d: %v, want %v", r, results[r], want)
		}
	}
	if _, ok := results[1]; ok {
		t.Error("rank 1, outside the set, synchronized")
	}
}

// TestAcrossRanksBroadcastParameters: every rank ends with root 1's values.
func TestAcrossRanksBroadcastParameters(t *testing.T) {
	checkNoLeak(t)
	ctx := testCtx(t)
	got := make([][]float64, 3)
	err := collectivetest.Run(ctx, 3, func(ctx context.Context, world *collective.World) error {
		r := float64(world.Rank())
		w, b := []float64{r, r + 0.5}, []float64{-r}
		h, err := New[float64](WithCallOptions(collective.InWorld(world)))
		if err != nil {
			return err
		}
		if err := h.BroadcastParameters(ctx, 1, w, b); err != nil {
			return err
		}
		got[world.Rank()] = append(w, b...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for r, g := range got {
		if !slices.Equal(g, []float64{1, 1.5, -1}) {
			t.Errorf("rank %d: %v, want root 1's [1 1.5 -1]", r, g)
		}
	}
}

// TestResetStartsAFreshWindowInANewWorld: a pass interrupted by a reset
// leaves nothing behind, and after Reset(InWorld(new)) the helper works in
// the new world.
func TestResetStartsAFreshWindowInANewWorld(t *testing.T) {
	checkNoLeak(t)
	ctx := testCtx(t)
	bufs := [2][]float32{{0}, {0}}
	helpers := [2]*Gradients[float32]{}
	for r := range helpers {
		h, err := New[float32](WithAccumulation(2), WithPrefix("reset/"))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Register("g", bufs[r]); err != nil {
			t.Fatal(err)
		}
		helpers[r] = h
	}
	// The first world: one pass accumulated, then the "failure".
	err := collectivetest.Run(ctx, 2, func(ctx context.Context, w *collective.World) error {
		h := helpers[w.Rank()]
		h.Reset(collective.InWorld(w))
		bufs[w.Rank()][0] = 1000
		if err := h.Ready(ctx, "g"); err != nil {
			return err
		}
		_, err := h.Synchronize(ctx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// The second world: a whole window of values r+1 and r+3 per rank.
	err = collectivetest.Run(ctx, 2, func(ctx context.Context, w *collective.World) error {
		h, r := helpers[w.Rank()], float32(w.Rank())
		h.Reset(collective.InWorld(w))
		for _, v := range []float32{r + 1, r + 3} {
			bufs[w.Rank()][0] = v
			if err := h.Ready(ctx, "g"); err != nil {
				return err
			}
			if _, err := h.Synchronize(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Mean over ranks of the mean over passes: ((1+3)/2 + (2+4)/2) / 2.
	for r, b := range bufs {
		if b[0] != 2.5 {
			t.Errorf("rank %d: %v, want 2.5 (the 1000 of the abandoned window must not count)", r, b[0])
		}
	}
}
