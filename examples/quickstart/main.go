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
	const dim = 4
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

	// Data: y = 2*x0 - x1 + 0.5*x2 + 3*x3 + 1, and each rank draws its own
	// share (a different seed per rank).
	truth := []float32{2, -1, 0.5, 3}
	const batch = 32
	xs, ys := make([][dim]float32, batch), make([]float32, batch)
	for step := 0; step < 300; step++ {
		for s := range xs {
			ys[s] = 1
			for i := range xs[s] {
				xs[s][i] = rng.Float32()*2 - 1
				ys[s] += truth[i] * xs[s][i]
			}
		}
		// Backward pass of the mean squared error. b's gradient is done
		// first here, so its allreduce starts while w's is computed.
		clear(gw)
		gb[0] = 0
		errs := make([]float32, batch)
		for s := range xs {
			pred := b[0]
			for i := range w {
				pred += w[i] * xs[s][i]
			}
			errs[s] = 2 * (pred - ys[s]) / batch
			gb[0] += errs[s]
		}
		if err := grads.Ready(ctx, "b"); err != nil {
			log.Fatal(err)
		}
		for s := range xs {
			for i := range gw {
				gw[i] += errs[s] * xs[s][i]
			}
		}
		if err := grads.Ready(ctx, "w"); err != nil {
			log.Fatal(err)
		}
		// Wait for both averages; then every rank applies the same update.
		if _, err := grads.Synchronize(ctx); err != nil {
			log.Fatal(err)
		}
		for i := range w {
			w[i] -= 0.1 * gw[i]
		}
		b[0] -= 0.1 * gb[0]
	}
	fmt.Printf("rank %d of %d: w = %.2f, b = %.2f\n", rank, size, w, b[0])
}
