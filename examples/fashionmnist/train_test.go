package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/collective/dataparallel"
)

// world is an in-process job of size ranks: a collective completes when
// every rank has made its n-th call of that name, and the last rank to
// arrive computes the result for all (sums in rank order, so every rank
// gets the same bits, as a real allreduce delivers).
type world struct {
	size int
	mu   sync.Mutex
	ops  map[string]*worldOp
}

type worldOp struct {
	bufs    []any
	arrived int
	done    chan struct{}
}

func newWorld(size int) *world { return &world{size: size, ops: map[string]*worldOp{}} }

// rankComm is one rank's view of a world.
type rankComm struct {
	w     *world
	rank  int
	calls map[string]int
}

func (w *world) comm(rank int) *rankComm { return &rankComm{w: w, rank: rank, calls: map[string]int{}} }

func (c *rankComm) Rank() int { return c.rank }
func (c *rankComm) Size() int { return c.w.size }

// join adds this rank's buffer to the op and runs finish when it is the last.
func (c *rankComm) join(name string, buf any, finish func(bufs []any)) *worldOp {
	key := fmt.Sprintf("%s#%d", name, c.calls[name])
	c.calls[name]++
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	op := c.w.ops[key]
	if op == nil {
		op = &worldOp{bufs: make([]any, c.w.size), done: make(chan struct{})}
		c.w.ops[key] = op
	}
	op.bufs[c.rank] = buf
	op.arrived++
	if op.arrived == c.w.size {
		finish(op.bufs)
		delete(c.w.ops, key)
		close(op.done)
	}
	return op
}

func (op *worldOp) Wait(ctx context.Context) error {
	select {
	case <-op.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *rankComm) Broadcast(ctx context.Context, name string, buf []float32, root int) error {
	return c.join(name, buf, func(bufs []any) {
		for _, b := range bufs {
			copy(b.([]float32), bufs[root].([]float32))
		}
	}).Wait(ctx)
}

// worldSync averages gradients in a world: each Ready joins its op at once.
type worldSync struct {
	c       *rankComm
	bufs    map[string][]float32
	pending []*worldOp
}

func (c *rankComm) NewGradSync(cfg SyncConfig) (GradSync, error) {
	if cfg.Accumulate != 1 || cfg.Compression != dataparallel.None {
		return nil, errors.New("the test world only averages")
	}
	return &worldSync{c: c, bufs: map[string][]float32{}}, nil
}

func (s *worldSync) Register(name string, buf []float32) error { s.bufs[name] = buf; return nil }

func (s *worldSync) Ready(_ context.Context, name string) error {
	s.pending = append(s.pending, s.c.average("grad/"+name, s.bufs[name]))
	return nil
}

func (s *worldSync) Synchronize(ctx context.Context) (bool, error) {
	var err error
	for _, op := range s.pending {
		err = errors.Join(err, op.Wait(ctx))
	}
	s.pending = s.pending[:0]
	return err == nil, err
}

func (s *worldSync) Stats() dataparallel.Stats { return dataparallel.Stats{} }

func (c *rankComm) average(name string, buf []float32) *worldOp {
	return c.join(name, buf, func(bufs []any) {
		sum := make([]float32, len(buf))
		for _, b := range bufs {
			for i, v := range b.([]float32) {
				sum[i] += v
			}
		}
		for _, b := range bufs {
			for i := range sum {
				b.([]float32)[i] = sum[i] / float32(len(bufs))
			}
		}
	})
}

func (c *rankComm) Sum64(ctx context.Context, name string, buf []float64) error {
	return c.join(name, buf, func(bufs []any) {
		sum := make([]float64, len(buf))
		for _, b := range bufs {
			for i, v := range b.([]float64) {
				sum[i] += v
			}
		}
		for _, b := range bufs {
			copy(b.([]float64), sum)
		}
	}).Wait(ctx)
}

func (c *rankComm) Barrier(ctx context.Context) error {
	return c.join("barrier", nil, func([]any) {}).Wait(ctx)
}

// checkNoLeak fails the test if goroutines started during it are still
// running shortly after it ends.
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		for i := 0; i < 100; i++ {
			if runtime.NumGoroutine() <= before {
				return
			}
			runtime.Gosched()
			time.Sleep(10 * time.Millisecond) // polling for exit, not synchronising
		}
		t.Errorf("%d goroutines before the test, %d after", before, runtime.NumGoroutine())
	})
}

var smallRecipe = TrainConfig{Epochs: 3, Batch: 32, LR: 0.05, Momentum: 0.9, Hidden: 32, Seed: 1, SyncConfig: SyncConfig{Accumulate: 1}}

// TestTrainingOnSyntheticDataLearns is the stated bar for the generated
// data set: a small MLP reaches 90% test accuracy in three short epochs.
func TestTrainingOnSyntheticDataLearns(t *testing.T) {
	train, test := Synthetic(2000, 500, 1)
	tr, err := NewTrainer(smallRecipe, localComm{}, train, test)
	if err != nil {
		t.Fatal(err)
	}
	var reports []Progress
	last, err := tr.Run(context.Background(), func(p Progress) { reports = append(reports, p) })
	if err != nil {
		t.Fatal(err)
	}
	if last.TestAcc < 0.90 {
		t.Fatalf("test accuracy %.3f after %d epochs, want at least 0.90", last.TestAcc, smallRecipe.Epochs)
	}
	steps := tr.StepsPerEpoch()
	if steps != 2000/32 || len(reports) != smallRecipe.Epochs*steps {
		t.Fatalf("%d reports for %d steps per epoch, want one per step", len(reports), steps)
	}
	ends := 0
	for _, p := range reports {
		if p.EpochEnd {
			ends++
			if p.Step != steps || p.SamplesPerSec <= 0 {
				t.Errorf("epoch %d end report: step %d of %d, %.0f samples/s", p.Epoch, p.Step, steps, p.SamplesPerSec)
			}
		}
	}
	if ends != smallRecipe.Epochs {
		t.Errorf("%d epoch-end reports, want %d", ends, smallRecipe.Epochs)
	}
	if first := reports[steps-1]; first.Loss <= last.Loss {
		t.Errorf("training loss went from %.4f (epoch 1) to %.4f (last epoch), want a decrease", first.Loss, last.Loss)
	}
}

// TestRanksStayIdentical trains three ranks in one process; they must end
// with bit-identical parameters and agree on the reported figures.
func TestRanksStayIdentical(t *testing.T) {
	checkNoLeak(t)
	const size = 3
	train, test := Synthetic(1500, 301, 2)
	w := newWorld(size)
	type result struct {
		sum  string
		last Progress
		err  error
	}
	results := make([]result, size)
	var wg sync.WaitGroup
	for r := 0; r < size; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := smallRecipe
			cfg.Epochs = 2
			cfg.Seed = uint64(100 + r) // different local init: the broadcast must win
			tr, err := NewTrainer(cfg, w.comm(r), train, test)
			if err != nil {
				results[r].err = err
				return
			}
			cfg.Seed = 100 // the shuffle seed must agree
			tr.cfg.Seed = cfg.Seed
			results[r].last, results[r].err = tr.Run(context.Background(), nil)
			results[r].sum = tr.Model.Checksum()
		}()
	}
	wg.Wait()
	for r, res := range results {
		if res.err != nil {
			t.Fatalf("rank %d: %v", r, res.err)
		}
		if res.sum != results[0].sum {
			t.Errorf("rank %d checksum %s, rank 0 %s", r, res.sum, results[0].sum)
		}
		if res.last.TestAcc != results[0].last.TestAcc || res.last.Loss != results[0].last.Loss {
			t.Errorf("rank %d reports test acc %v loss %v, rank 0 %v %v", r, res.last.TestAcc, res.last.Loss, results[0].last.TestAcc, results[0].last.Loss)
		}
	}
	if acc := results[0].last.TestAcc; acc < 0.8 {
		t.Errorf("test accuracy %.3f with %d ranks, want at least 0.8", acc, size)
	}
}

func TestNewTrainerRejectsUnusableSettings(t *testing.T) {
	train, test := Synthetic(100, 10, 1)
	bad := map[string]func(*TrainConfig){
		"zero epochs":    func(c *TrainConfig) { c.Epochs = 0 },
		"zero batch":     func(c *TrainConfig) { c.Batch = 0 },
		"negative lr":    func(c *TrainConfig) { c.LR = -1 },
		"momentum 1":     func(c *TrainConfig) { c.Momentum = 1 },
		"zero hidden":    func(c *TrainConfig) { c.Hidden = 0 },
		"batch too big":  func(c *TrainConfig) { c.Batch = 101 },
		"NaN lr":         func(c *TrainConfig) { c.LR = nan() },
		"infinite lr":    func(c *TrainConfig) { c.LR = 1 / zero() },
		"negative batch": func(c *TrainConfig) { c.Batch = -3 },
		"accumulate 0":   func(c *TrainConfig) { c.Accumulate = 0 },
		"window too big": func(c *TrainConfig) { c.Accumulate = 4 },
	}
	for name, mutate := range bad {
		cfg := smallRecipe
		mutate(&cfg)
		if _, err := NewTrainer(cfg, localComm{}, train, test); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func zero() float64 { return 0 }
func nan() float64  { z := zero(); return z / z }

func TestRunStopsWhenCancelled(t *testing.T) {
	train, test := Synthetic(640, 64, 1)
	tr, err := NewTrainer(smallRecipe, localComm{}, train, test)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	steps := 0
	_, err = tr.Run(ctx, func(p Progress) {
		steps++
		if p.Step == 3 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || steps != 3 {
		t.Fatalf("after cancelling at step 3: %d steps reported, error %v", steps, err)
	}
}

func BenchmarkTrainStep(b *testing.B) {
	train, _ := Synthetic(64, 1, 1)
	m := NewMLP(imageSize, 256, numClasses)
	m.InitRandom(1)
	g := NewMLP(imageSize, 256, numClasses)
	ws := m.NewWorkspace(64)
	ws.Load(train, seq(64))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m.LossAndGrad(ws, g, nil)
	}
	b.ReportMetric(float64(64*b.N)/b.Elapsed().Seconds(), "samples/s")
}
