// Command quickstart is the program of docs/getting-started.md: linear
// regression trained data-parallel with Gorovod's training helper.
//
//	go run ./examples/quickstart                              # a world of one
//	go build ./examples/quickstart && gorun -np 2 ./quickstart # two ranks
package main

import (
	"context"
	"fmt"
	"log"
	"math/rand/v2"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/dataparallel"
)

const (
	dim       = 4   // inputs of the model
	batchSize = 32  // samples per batch on each rank
	steps     = 300 // training steps
	lr        = 0.1 // learning rate
)

// truth is the line the data comes from: y = 2*x0 - x1 + 0.5*x2 + 3*x3 + 1.
var truth = []float32{2, -1, 0.5, 3}

func main() {
	ctx := context.Background()
	// Join the job: gorun (or mpirun, srun, torchrun-style variables) tells
	// each process its rank; without a launcher it is a world of one.
	if err := collective.Init(ctx); err != nil {
		log.Fatal(err)
	}
	defer collective.Shutdown(ctx)
	rank, size := collective.Rank(), collective.Size()

	// The model: y = w.x + b. Each rank starts from its own random weights;
	// the broadcast below makes them all start from rank 0's.
	rng := rand.New(rand.NewPCG(uint64(rank), 1))
	w, b := make([]float32, dim), make([]float32, 1)
	for i := range w {
		w[i] = rng.Float32()
	}
	gw, gb := make([]float32, dim), make([]float32, 1) // gradients

	// The helper averages the gradients across ranks; each allreduce starts
	// as soon as Ready says its gradient is done.
	grads, err := dataparallel.New[float32]()
	if err != nil {
		log.Fatal(err)
	}
	if err := grads.Register("w", gw); err != nil {
		log.Fatal(err)
	}
	if err := grads.Register("b", gb); err != nil {
		log.Fatal(err)
	}
	if err := dataparallel.BroadcastParameters(ctx, 0, w, b); err != nil {
		log.Fatal(err)
	}

	var data batch
	for step := 0; step < steps; step++ {
		data.draw(rng)
		// Backward pass of the mean squared error. b's gradient is done
		// first here, so its allreduce starts while w's is computed.
		computeBiasGradient(gb, &data, w, b)
		if err := grads.Ready(ctx, "b"); err != nil {
			log.Fatal(err)
		}
		computeWeightGradient(gw, &data)
		if err := grads.Ready(ctx, "w"); err != nil {
			log.Fatal(err)
		}
		// Wait for both averages; then every rank applies the same update.
		if _, err := grads.Synchronize(ctx); err != nil {
			log.Fatal(err)
		}
		for i := range w {
			w[i] -= lr * gw[i]
		}
		b[0] -= lr * gb[0]
	}
	fmt.Printf("rank %d of %d: w = %.2f, b = %.2f\n", rank, size, w, b[0])
}

// batch is one rank's samples of a step and, after the bias gradient, the
// derivative of the loss by each sample's prediction.
type batch struct {
	xs    [batchSize][dim]float32
	ys    [batchSize]float32
	dpred [batchSize]float32
}

// draw fills the batch with new samples of the line (each rank draws its
// own share: a different seed per rank).
func (d *batch) draw(rng *rand.Rand) {
	for s := range d.xs {
		d.ys[s] = 1
		for i := range d.xs[s] {
			d.xs[s][i] = rng.Float32()*2 - 1
			d.ys[s] += truth[i] * d.xs[s][i]
		}
	}
}

// computeBiasGradient sets gb to the gradient of the mean squared error by
// b, keeping each sample's share in d.dpred for computeWeightGradient.
func computeBiasGradient(gb []float32, d *batch, w, b []float32) {
	gb[0] = 0
	for s := range d.xs {
		pred := b[0]
		for i := range w {
			pred += w[i] * d.xs[s][i]
		}
		d.dpred[s] = 2 * (pred - d.ys[s]) / batchSize
		gb[0] += d.dpred[s]
	}
}

// computeWeightGradient sets gw to the gradient of the mean squared error
// by w (after computeBiasGradient on the same batch).
func computeWeightGradient(gw []float32, d *batch) {
	clear(gw)
	for s := range d.xs {
		for i := range gw {
			gw[i] += d.dpred[s] * d.xs[s][i]
		}
	}
}
