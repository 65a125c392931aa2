package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/gorovod/gorovod/collective/dataparallel"
)

// Comm is what training needs from the collective layer; main wires it to
// package collective, tests to an in-process world.
type Comm interface {
	Rank() int
	Size() int
	// Broadcast overwrites buf on every rank with root's buf.
	Broadcast(ctx context.Context, name string, buf []float32, root int) error
	// NewGradSync returns what averages the gradients across ranks.
	NewGradSync(cfg SyncConfig) (GradSync, error)
	// Sum64 sums buf over ranks in place.
	Sum64(ctx context.Context, name string, buf []float64) error
	// Barrier returns once every rank has called it.
	Barrier(ctx context.Context) error
}

// GradSync averages registered gradient buffers across ranks: the methods
// of dataparallel.Gradients[float32], which package collective's Comm
// returns.
type GradSync interface {
	Register(name string, buf []float32) error
	// Ready starts the allreduce of name's gradient (on the last pass of an
	// accumulation window) without waiting for it.
	Ready(ctx context.Context, name string) error
	// Synchronize waits for the pass's allreduces; true means the buffers
	// hold the averaged gradient of the window (apply the update).
	Synchronize(ctx context.Context) (bool, error)
	Stats() dataparallel.Stats
}

// SyncConfig is how gradients are synchronized.
type SyncConfig struct {
	Accumulate  int                      // backward passes per update
	Compression dataparallel.Compression // wire format of the gradients
}

// TrainConfig is the training recipe; every rank must use the same one.
type TrainConfig struct {
	Epochs   int     // passes over the training set
	Batch    int     // samples per rank per step
	LR       float64 // learning rate for one rank's batch; scaled by the number of ranks
	Momentum float64 // SGD momentum
	Hidden   int     // hidden units
	Seed     uint64  // initial weights and shuffling
	SyncConfig
}

// Validate says which field is unusable.
func (c TrainConfig) Validate() error {
	switch {
	case c.Epochs < 1:
		return fmt.Errorf("epochs is %d, want at least 1", c.Epochs)
	case c.Batch < 1:
		return fmt.Errorf("batch is %d, want at least 1", c.Batch)
	case !(c.LR > 0) || math.IsInf(c.LR, 0):
		return fmt.Errorf("learning rate is %v, want a positive number", c.LR)
	case !(c.Momentum >= 0 && c.Momentum < 1):
		return fmt.Errorf("momentum is %v, want 0 <= momentum < 1", c.Momentum)
	case c.Hidden < 1:
		return fmt.Errorf("hidden is %d, want at least 1", c.Hidden)
	case c.Accumulate < 1:
		return fmt.Errorf("accumulate is %d, want at least 1 backward pass per update", c.Accumulate)
	}
	return nil
}

// Progress is reported during training: after every step (Step < Steps,
// this rank's running figures) and at the end of each epoch (EpochEnd, the
// figures of all ranks together).
type Progress struct {
	Epoch, Epochs int // 1-based
	Step, Steps   int // steps done in this epoch
	EpochEnd      bool
	Loss, Acc     float64 // mean training loss and accuracy so far in the epoch
	TestLoss      float64 // at EpochEnd
	TestAcc       float64 // at EpochEnd
	SamplesPerSec float64 // training samples of all ranks per second of wall time
	CommShare     float64 // share of step time spent waiting for gradients (mean over ranks)
	LR            float64 // learning rate of the last step
}

// Trainer runs data-parallel SGD with momentum on an MLP.
type Trainer struct {
	cfg         TrainConfig
	comm        Comm
	train, test *Dataset
	Model       *MLP
	grad, vel   *MLP
	ws          *Workspace
	sync        GradSync
}

// NewTrainer checks the recipe and the data and builds the model on this
// rank (weights drawn from the seed; Run broadcasts rank 0's anyway).
func NewTrainer(cfg TrainConfig, comm Comm, train, test *Dataset) (*Trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if steps := train.Len() / (cfg.Batch * comm.Size()); steps < cfg.Accumulate {
		return nil, fmt.Errorf("%d training samples are fewer than one global batch (%d ranks x %d x %d passes)", train.Len(), comm.Size(), cfg.Batch, cfg.Accumulate)
	}
	if test.Len() < comm.Size() {
		return nil, fmt.Errorf("%d test samples are fewer than the %d ranks", test.Len(), comm.Size())
	}
	if test.Dim != train.Dim {
		return nil, fmt.Errorf("test samples have %d values, training samples %d", test.Dim, train.Dim)
	}
	m := NewMLP(train.Dim, cfg.Hidden, numClasses)
	m.InitRandom(cfg.Seed)
	t := &Trainer{
		cfg: cfg, comm: comm, train: train, test: test, Model: m,
		grad: NewMLP(m.In, m.Hidden, m.Classes), vel: NewMLP(m.In, m.Hidden, m.Classes),
		ws: m.NewWorkspace(cfg.Batch),
	}
	sync, err := comm.NewGradSync(cfg.SyncConfig)
	if err != nil {
		return nil, err
	}
	for _, g := range t.grad.Tensors() {
		if err := sync.Register(g.Name, g.Data); err != nil {
			return nil, err
		}
	}
	t.sync = sync
	return t, nil
}

// GradStats returns the gradient synchronizer's counters.
func (t *Trainer) GradStats() dataparallel.Stats { return t.sync.Stats() }

// StepsPerEpoch is the number of steps (backward passes) every rank takes
// per epoch: the remainder that does not fill a global batch, or an
// accumulation window, is dropped so that all ranks make the same
// collective calls.
func (t *Trainer) StepsPerEpoch() int {
	steps := t.train.Len() / (t.cfg.Batch * t.comm.Size())
	return steps - steps%t.cfg.Accumulate
}

// lrAt is the learning rate of global update s of total: the per-rank rate
// scaled linearly by the number of ranks and the passes per update (the
// samples per update), decayed along a half cosine.
func (t *Trainer) lrAt(s, total int) float64 {
	base := t.cfg.LR * float64(t.comm.Size()*t.cfg.Accumulate)
	return base * 0.5 * (1 + math.Cos(math.Pi*float64(s)/float64(total)))
}

// Run trains for the configured epochs, calling report (if not nil) with
// progress, and returns the figures of the last epoch.
func (t *Trainer) Run(ctx context.Context, report func(Progress)) (Progress, error) {
	if report == nil {
		report = func(Progress) {}
	}
	for _, p := range t.Model.Tensors() {
		if err := t.comm.Broadcast(ctx, "param/"+p.Name, p.Data, 0); err != nil {
			return Progress{}, fmt.Errorf("broadcasting initial %s: %w", p.Name, err)
		}
	}
	rank, size, batch := t.comm.Rank(), t.comm.Size(), t.cfg.Batch
	steps := t.StepsPerEpoch()
	perm := make([]int, t.train.Len())
	var last Progress
	for epoch := 1; epoch <= t.cfg.Epochs; epoch++ {
		// Every rank draws the same permutation and takes its own batches of it.
		for i := range perm {
			perm[i] = i
		}
		rng := rand.New(rand.NewPCG(t.cfg.Seed, uint64(epoch)))
		rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })

		var lossSum float64
		var correct, seen int
		var commTime time.Duration
		start := time.Now()
		p := Progress{Epoch: epoch, Epochs: t.cfg.Epochs, Steps: steps}
		for s := 0; s < steps; s++ {
			// The collectives notice cancellation too, but a world of one has none.
			if err := ctx.Err(); err != nil {
				return last, fmt.Errorf("epoch %d step %d: %w", epoch, s+1, err)
			}
			off := (s*size + rank) * batch
			l, c, updated, waited, err := t.step(ctx, perm[off:off+batch])
			commTime += waited
			if err != nil {
				return last, fmt.Errorf("epoch %d step %d: %w", epoch, s+1, err)
			}
			if updated {
				k := t.cfg.Accumulate
				p.LR = t.lrAt(((epoch-1)*steps+s)/k, t.cfg.Epochs*steps/k)
				t.update(float32(p.LR), float32(t.cfg.Momentum))
			}
			lossSum += l
			correct += c
			seen += batch
			p.Step = s + 1
			p.Loss, p.Acc = lossSum/float64(seen), float64(correct)/float64(seen)
			el := time.Since(start)
			p.SamplesPerSec = float64(seen*size) / el.Seconds()
			p.CommShare = commTime.Seconds() / el.Seconds()
			if p.Step < steps {
				report(p)
			}
		}
		trainTime := time.Since(start)
		testLoss, testCorrect, testSeen := t.evaluateShard()
		stats := []float64{lossSum, float64(correct), float64(seen), commTime.Seconds(), trainTime.Seconds(),
			testLoss, float64(testCorrect), float64(testSeen)}
		if err := t.comm.Sum64(ctx, "stats/epoch", stats); err != nil {
			return last, fmt.Errorf("epoch %d: summing statistics: %w", epoch, err)
		}
		p.EpochEnd = true
		p.Loss, p.Acc = stats[0]/stats[2], stats[1]/stats[2]
		p.CommShare = stats[3] / stats[4]
		// Ranks run in parallel: the global rate is all samples over the mean wall time.
		p.SamplesPerSec = stats[2] / (stats[4] / float64(size))
		p.TestLoss, p.TestAcc = stats[5]/stats[7], stats[6]/stats[7]
		report(p)
		last = p
	}
	return last, nil
}

// step runs one backward pass on the samples idx, handing each gradient to
// the synchronizer as soon as backpropagation has finished it, and waits for
// the pass's allreduces. updated says the gradients are averaged and the
// update is due; waited is the time spent waiting for communication.
func (t *Trainer) step(ctx context.Context, idx []int) (loss float64, correct int, updated bool, waited time.Duration, err error) {
	t.ws.Load(t.train, idx)
	var readyErr error
	loss, correct = t.Model.LossAndGrad(t.ws, t.grad, func(g Tensor) {
		if readyErr == nil {
			readyErr = t.sync.Ready(ctx, g.Name)
		}
	})
	waitStart := time.Now()
	updated, err = t.sync.Synchronize(ctx)
	waited = time.Since(waitStart)
	if err = errors.Join(readyErr, err); err != nil {
		return loss, correct, false, waited, fmt.Errorf("averaging gradients: %w", err)
	}
	return loss, correct, updated, waited, nil
}

// update applies SGD with momentum: v = mu*v + g; w -= lr*v. Every rank
// runs exactly this arithmetic on the same averaged gradient, so the
// parameters stay bit-identical.
func (t *Trainer) update(lr, mu float32) {
	ps, gs, vs := t.Model.Tensors(), t.grad.Tensors(), t.vel.Tensors()
	for k := range ps {
		w, g, v := ps[k].Data, gs[k].Data[:len(ps[k].Data)], vs[k].Data[:len(ps[k].Data)]
		for i := range w {
			v[i] = mu*v[i] + g[i]
			w[i] -= lr * v[i]
		}
	}
}

// evaluateShard runs the model on this rank's share of the test set
// (every size-th sample) and returns summed loss, correct count and count.
func (t *Trainer) evaluateShard() (loss float64, correct, seen int) {
	rank, size := t.comm.Rank(), t.comm.Size()
	idx := make([]int, 0, t.cfg.Batch)
	flush := func() {
		if len(idx) == 0 {
			return
		}
		t.ws.Load(t.test, idx)
		l, c := t.Model.Evaluate(t.ws)
		loss += l
		correct += c
		seen += len(idx)
		idx = idx[:0]
	}
	for i := rank; i < t.test.Len(); i += size {
		idx = append(idx, i)
		if len(idx) == cap(idx) {
			flush()
		}
	}
	flush()
	return loss, correct, seen
}
