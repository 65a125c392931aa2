package elastic

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/dataparallel"
)

// The training helper is what WithGradients moves, for every element type.
var (
	_ Resetter = (*dataparallel.Gradients[float32])(nil)
	_ Resetter = (*dataparallel.Gradients[float64])(nil)
)

// dpTrainer trains a four-parameter model with the training helper inside
// Run. Rank r's gradient is the rank-independent part plus r - (n-1)/2, so
// the average over any world is the rank-independent part: the result of
// a run is the same whatever the sizes of its worlds, if every committed
// step is applied once and no pass is counted in the wrong window.
type dpTrainer struct {
	w, b   []float64 // parameters, kept in the State
	gw, gb []float64 // their gradients, registered with the helper
	g      *dataparallel.Gradients[float64]
	st     *State
	k      int // backward passes per step (accumulation)
	steps  int64
	kill   dpKill // where this worker dies (zero: never)
	log    []string
}

type dpKill struct {
	step  int64
	point string // "in-flight", "between-passes" or "vote"
}

const dpRate = 0.1

func newDPTrainer(t *testing.T, init float64, k int, steps int64, kill dpKill) *dpTrainer {
	d := &dpTrainer{w: []float64{init, init + 1, init + 2}, b: []float64{init + 3},
		gw: make([]float64, 3), gb: make([]float64, 1), k: k, steps: steps, kill: kill}
	g, err := dataparallel.New[float64](dataparallel.WithAccumulation(k))
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(g.Register("w", d.gw), g.Register("b", d.gb)); err != nil {
		t.Fatal(err)
	}
	d.g = g
	d.st = NewState(Float64s("w", d.w), Float64s("b", d.b))
	return d
}

// dpGrad is the rank-independent gradient of parameter i (w then b) at
// step s, pass j.
func dpGrad(p float64, i int, s int64, j int) float64 {
	return -0.5*p + float64(s) + 0.25*float64(j) + float64(i)
}

// dpReference trains from init without failures, in one process.
func dpReference(init float64, k int, steps int64) []float64 {
	p := []float64{init, init + 1, init + 2, init + 3}
	for s := int64(1); s <= steps; s++ {
		g := make([]float64, len(p))
		for i := range p {
			for j := 1; j <= k; j++ {
				g[i] += dpGrad(p[i], i, s, j)
			}
			g[i] /= float64(k)
		}
		for i := range p {
			p[i] += dpRate * g[i]
		}
	}
	return p
}

func (d *dpTrainer) params() []float64 { return append(slices.Clone(d.w), d.b...) }

func (d *dpTrainer) dies(s int64, point string) error {
	if d.kill.step == s && d.kill.point == point {
		return fmt.Errorf("%w: %s at step %d", errKilled, point, s)
	}
	return nil
}

func (d *dpTrainer) fn(ctx context.Context, w *collective.World) error {
	d.log = append(d.log, fmt.Sprintf("s%d", d.st.Step()))
	skew := float64(w.Rank()) - float64(w.Size()-1)/2
	for d.st.Step() < d.steps {
		s := d.st.Step() + 1
		for j := 1; j <= d.k; j++ {
			if err := d.pass(ctx, w, s, j, skew); err != nil {
				return err
			}
		}
		if err := d.st.Commit(ctx); err != nil {
			return err
		}
		d.log = append(d.log, fmt.Sprintf("c%d", d.st.Step()))
	}
	return nil
}

// pass is one backward pass: b's gradient is done first, its allreduce
// (on the window's last pass) runs while w's is computed.
func (d *dpTrainer) pass(ctx context.Context, w *collective.World, s int64, j int, skew float64) error {
	d.gb[0] = dpGrad(d.b[0], 3, s, j) + skew
	if err := d.g.Ready(ctx, "b"); err != nil {
		return err
	}
	if j == d.k {
		if err := d.dies(s, "in-flight"); err != nil {
			return err
		}
	}
	for i := range d.gw {
		d.gw[i] = dpGrad(d.w[i], i, s, j) + skew
	}
	if err := d.g.Ready(ctx, "w"); err != nil {
		return err
	}
	synced, err := d.g.Synchronize(ctx)
	if err != nil {
		return err
	}
	if synced != (j == d.k) {
		return fmt.Errorf("step %d pass %d: Synchronize says %v: the window is out of step", s, j, synced)
	}
	if j == 1 {
		if err := d.dies(s, "between-passes"); err != nil {
			return err
		}
	}
	// a collective outside the helper, as a trainer's loss metric would be
	loss := []float64{d.gb[0]}
	if err := collective.Allreduce(ctx, "loss", loss, collective.Average, collective.InWorld(w)); err != nil {
		return err
	}
	if synced {
		for i := range d.w {
			d.w[i] += dpRate * d.gw[i]
		}
		d.b[0] += dpRate * d.gb[0]
	}
	return nil
}

// runDPJob runs the workers through Run on h until they return.
func runDPJob(ctx context.Context, h *hub, trs map[string]*dpTrainer, ids []string) map[string]error {
	errs := map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, id := range ids {
		h.add(id)
	}
	for _, id := range ids {
		d := trs[id]
		r := &runner{sess: hubSession{h, id}, resetLimit: 3, closeTimeout: time.Second, joinTimeout: 10 * time.Second,
			newWorld: func(ctx context.Context, a Assignment) (*collective.World, error) {
				h.mu.Lock()
				defer h.mu.Unlock()
				return h.worlds[a.Epoch][a.Rank], nil
			},
			fault: func(point string, step int64) error {
				if point == "vote" {
					return d.dies(step+1, "vote")
				}
				return nil
			}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := r.run(ctx, d.st, WithGradients(d.fn, d.g))
			h.dead(id)
			mu.Lock()
			errs[id] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	return errs
}

// A 3-rank job trains with the helper and a State; one rank is lost at
// step 4 (with an allreduce of the helper in flight, between two passes
// of an accumulation window, or in the commit vote). The survivors reset,
// the helper goes on in the 2-rank world, and both end with the same
// parameters as a run without failures: every committed step applied once.
func TestWithGradientsAcrossAReset(t *testing.T) {
	const steps = 7
	for _, tc := range []struct {
		point string
		k     int
	}{
		{"in-flight", 1},
		{"in-flight", 2},
		{"between-passes", 2},
		{"vote", 2},
	} {
		t.Run(fmt.Sprintf("%s/k=%d", tc.point, tc.k), func(t *testing.T) {
			defer noLeaks(t, runtime.NumGoroutine())
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			h := newHub(t)
			trs := map[string]*dpTrainer{
				"a": newDPTrainer(t, 1, tc.k, steps, dpKill{}),
				"b": newDPTrainer(t, 10, tc.k, steps, dpKill{}),
				"c": newDPTrainer(t, 100, tc.k, steps, dpKill{4, tc.point}),
			}
			errs := runDPJob(ctx, h, trs, []string{"a", "b", "c"})
			if !errors.Is(errs["c"], errKilled) {
				t.Fatalf("c: Run returned %v, want killed", errs["c"])
			}
			want := dpReference(1, tc.k, steps) // a is rank 0 of the first world: its start wins
			for _, id := range []string{"a", "b"} {
				d := trs[id]
				if errs[id] != nil {
					t.Fatalf("%s: Run returned %v (log %v)", id, errs[id], d.log)
				}
				(&trainer{log: d.log, steps: steps}).checkLog(t, id)
				for i, p := range d.params() {
					if math.Abs(p-want[i]) > 1e-9*math.Max(1, math.Abs(want[i])) {
						t.Fatalf("%s: parameters %v, want %v (run without failures)", id, d.params(), want)
					}
				}
				if d.st.LastReset().Size != 2 {
					t.Fatalf("%s: last reset %+v, want a world of 2", id, d.st.LastReset())
				}
			}
			if !slices.Equal(h.sizes, []int{3, 2}) {
				t.Fatalf("world sizes %v, want [3 2]", h.sizes)
			}
			if !slices.Equal(trs["a"].params(), trs["b"].params()) {
				t.Fatalf("survivors differ: a %v, b %v", trs["a"].params(), trs["b"].params())
			}
		})
	}
}
