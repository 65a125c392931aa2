package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/dataparallel"
	"github.com/gorovod/gorovod/examples/internal/fashion"
)

// trainer is one rank's state.
type trainer struct {
	o           options
	train, test *fashion.Dataset
	model, grad *CNN
	vel         *CNN
	ws          *Workspace
	grads       *dataparallel.Gradients[float32]
	xs          [][]float32
	ys          []uint8
	perm        []int
	epoch       int
}

func newTrainer(o options, train, test *fashion.Dataset) (*trainer, error) {
	if train.Dim != side*side || test.Dim != side*side {
		return nil, fmt.Errorf("images have %d and %d pixels, want %d", train.Dim, test.Dim, side*side)
	}
	if train.Len() < o.batch*collective.Size() {
		return nil, fmt.Errorf("%d training samples are fewer than one global batch (%d ranks x %d)", train.Len(), collective.Size(), o.batch)
	}
	t := &trainer{o: o, train: train, test: test, model: NewCNN(), grad: NewCNN(), vel: NewCNN(),
		ws: NewWorkspace(o.batch), xs: make([][]float32, o.batch), ys: make([]uint8, o.batch)}
	t.model.InitRandom(o.seed + uint64(collective.Rank())) // differs per rank: the broadcast must win
	var err error
	opts := []dataparallel.Option{dataparallel.WithCompression(o.comp), dataparallel.WithAccumulation(o.accumulate)}
	if o.observer != nil {
		opts = append(opts, dataparallel.WithObserver(o.observer))
	}
	t.grads, err = dataparallel.New[float32](opts...)
	if err != nil {
		return nil, err
	}
	for _, g := range t.grad.Tensors() {
		if err := t.grads.Register(g.Name, g.Data); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// train runs the job's training and prints (rank 0) progress and the
// result, (every rank) its parameter checksum.
func train(ctx context.Context, o options, stdout, stderr io.Writer) error {
	began := time.Now()
	trainSet, testSet, name, err := loadData(ctx, o, stderr)
	if err != nil {
		return err
	}
	t, err := newTrainer(o, trainSet, testSet)
	if err != nil {
		return err
	}
	rank, size := collective.Rank(), collective.Size()
	if rank == 0 {
		fmt.Fprintf(stdout, "fashioncnn: 3-conv CNN on %s (%d training, %d test samples), %d rank(s) x batch %d x %d passes per update, %d steps, compression %s\n",
			name, trainSet.Len(), testSet.Len(), size, o.batch, o.accumulate, o.steps, o.comp)
	}
	params := make([][]float32, 0, 8)
	for _, p := range t.model.Tensors() {
		params = append(params, p.Data)
	}
	if err := dataparallel.BroadcastParameters(ctx, 0, params...); err != nil {
		return fmt.Errorf("broadcasting initial parameters: %w", err)
	}
	var lossSum float64
	var correct, seen int
	for s := 0; s < o.steps; s++ {
		l, c, err := t.step(ctx, s)
		if err != nil {
			return fmt.Errorf("step %d: %w", s+1, err)
		}
		lossSum, correct, seen = lossSum+l, correct+c, seen+o.batch
		if o.evalEvery > 0 && (s+1)%o.evalEvery == 0 && s+1 < o.steps {
			acc, _, err := t.evaluate(ctx)
			if err != nil {
				return err
			}
			if rank == 0 {
				fmt.Fprintf(stdout, "step %d/%d  loss %.4f  acc %.4f (rank 0's batches)  test acc %.4f\n",
					s+1, o.steps, lossSum/float64(seen), float64(correct)/float64(seen), acc)
			}
			lossSum, correct, seen = 0, 0, 0
		}
	}
	acc, loss, err := t.evaluate(ctx)
	if err != nil {
		return err
	}
	if rank == 0 {
		fmt.Fprintf(stdout, "test accuracy %.4f (loss %.4f) after %d steps in %s\n", acc, loss, o.steps, time.Since(began).Round(100*time.Millisecond))
	}
	fmt.Fprintf(stdout, "rank %d: parameter checksum %s\n", rank, t.model.Checksum())
	return collective.Barrier(ctx)
}

// step runs backward pass s on this rank's batch, handing each gradient to
// the helper as it is final, and applies the update when the helper says
// the averaged gradient is there.
func (t *trainer) step(ctx context.Context, s int) (loss float64, correct int, err error) {
	rank, size, b := collective.Rank(), collective.Size(), t.o.batch
	perEpoch := t.train.Len() / (b * size)
	if e := s / perEpoch; t.perm == nil || e != t.epoch {
		// Every rank draws the same permutation and takes its own batches of it.
		t.epoch = e
		t.perm = rand.New(rand.NewPCG(t.o.seed, uint64(e))).Perm(t.train.Len())
	}
	off := ((s%perEpoch)*size + rank) * b
	for i, idx := range t.perm[off : off+b] {
		t.xs[i], t.ys[i] = t.train.Sample(idx), t.train.Y[idx]
	}
	var readyErr error
	loss, correct = t.model.LossAndGrad(t.ws, t.xs, t.ys, t.grad, func(g Tensor) {
		if readyErr == nil {
			readyErr = t.grads.Ready(ctx, g.Name)
		}
	})
	updated, err := t.grads.Synchronize(ctx)
	if err = errors.Join(readyErr, err); err != nil {
		return 0, 0, fmt.Errorf("averaging gradients: %w", err)
	}
	if updated {
		// Linear scaling with the samples per update, half-cosine decay.
		k := t.o.accumulate
		lr := float32(t.o.lr * float64(size*k) * 0.5 * (1 + math.Cos(math.Pi*float64(s/k)/float64(t.o.steps/k))))
		mu := float32(t.o.momentum)
		ps, gs, vs := t.model.Tensors(), t.grad.Tensors(), t.vel.Tensors()
		for k := range ps {
			w, g, v := ps[k].Data, gs[k].Data, vs[k].Data
			for i := range w {
				v[i] = mu*v[i] + g[i]
				w[i] -= lr * v[i]
			}
		}
	}
	return loss, correct, nil
}

// evaluate runs the model on this rank's share of the test set (every
// size-th sample) and sums the figures of all ranks.
func (t *trainer) evaluate(ctx context.Context) (acc, loss float64, err error) {
	rank, size := collective.Rank(), collective.Size()
	stats := []float64{0, 0, 0}
	for i := rank; i < t.test.Len(); i += size {
		l, c := t.model.Evaluate(t.ws, [][]float32{t.test.Sample(i)}, t.test.Y[i:i+1])
		stats[0] += l
		stats[1] += float64(c)
		stats[2]++
	}
	if err := collective.Allreduce(ctx, "stats/test", stats, collective.Sum); err != nil {
		return 0, 0, fmt.Errorf("summing test statistics: %w", err)
	}
	return stats[1] / stats[2], stats[0] / stats[2], nil
}
