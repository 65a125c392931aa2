package collective_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/collectivetest"
)

// Each example runs as a world of one (no launcher in its environment);
// under gorun, mpirun or srun the same code runs on every rank.

func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := collective.Init(ctx); err != nil {
		log.Fatal(err)
	}
	defer collective.Shutdown(ctx)

	// Average each gradient over the ranks, as a training step does.
	grad := []float32{0.5, -1, 2}
	if err := collective.Allreduce(ctx, "grad/w1", grad, collective.Average); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("rank %d of %d: %v\n", collective.Rank(), collective.Size(), grad)
	// Output: rank 0 of 1: [0.5 -1 2]
}

func ExampleAllreduce() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := collective.Init(ctx); err != nil {
		log.Fatal(err)
	}
	defer collective.Shutdown(ctx)

	counts := []int64{3, 4}
	if err := collective.Allreduce(ctx, "counts", counts, collective.Sum); err != nil {
		log.Fatal(err)
	}
	// Scale while reducing: the sum of x/2 over the ranks.
	halves := []float64{1, 3}
	if err := collective.Allreduce(ctx, "halves", halves, collective.Sum, collective.WithPrescale(0.5)); err != nil {
		log.Fatal(err)
	}
	fmt.Println(counts, halves)
	// Output: [3 4] [0.5 1.5]
}

func ExampleAllreduceAsync() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := collective.Init(ctx); err != nil {
		log.Fatal(err)
	}
	defer collective.Shutdown(ctx)

	// Start the reduction, compute something else, then wait for it.
	g2 := []float32{1, 2, 3}
	h := collective.AllreduceAsync(ctx, "grad/w2", g2, collective.Sum)
	sum := 0
	for i := range 10 {
		sum += i
	}
	if err := h.Wait(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(g2, sum)
	// Output: [1 2 3] 45
}

func ExampleBroadcast() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := collective.Init(ctx); err != nil {
		log.Fatal(err)
	}
	defer collective.Shutdown(ctx)

	// Every rank starts from rank 0's parameters.
	params := make([]float32, 3)
	if collective.Rank() == 0 {
		copy(params, []float32{0.1, 0.2, 0.3})
	}
	if err := collective.Broadcast(ctx, "params/w1", params, 0); err != nil {
		log.Fatal(err)
	}
	fmt.Println(params)
	// Output: [0.1 0.2 0.3]
}

func ExampleAllgather() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := collective.Init(ctx); err != nil {
		log.Fatal(err)
	}
	defer collective.Shutdown(ctx)

	// Each rank contributes its loss; every rank gets all of them, in rank order.
	losses, err := collective.Allgather(ctx, "loss", []float32{0.25})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(losses)
	// Output: [0.25]
}

func ExampleReduceScatter() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := collective.Init(ctx); err != nil {
		log.Fatal(err)
	}
	defer collective.Shutdown(ctx)

	// Each rank gets its share of the element-wise sum.
	mine, err := collective.ReduceScatter(ctx, "rs", []int32{1, 2, 3, 4}, collective.Sum)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(mine)
	// Output: [1 2 3 4]
}

func ExampleAlltoall() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := collective.Init(ctx); err != nil {
		log.Fatal(err)
	}
	defer collective.Shutdown(ctx)

	// splits[r] elements go to rank r; received says how many came from each.
	out, received, err := collective.Alltoall(ctx, "a2a", []int64{7, 8, 9}, []int{3})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(out, received)
	// Output: [7 8 9] [3]
}

func ExampleGroupedAllreduce() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := collective.Init(ctx); err != nil {
		log.Fatal(err)
	}
	defer collective.Shutdown(ctx)

	// Several tensors reduced as one negotiation.
	w1, b1 := []float32{1, 2}, []float32{3}
	if err := collective.GroupedAllreduce(ctx, "layer1", [][]float32{w1, b1}, collective.Max); err != nil {
		log.Fatal(err)
	}
	fmt.Println(w1, b1)
	// Output: [1 2] [3]
}

func ExampleBroadcastObject() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := collective.Init(ctx); err != nil {
		log.Fatal(err)
	}
	defer collective.Shutdown(ctx)

	type state struct {
		Epoch int
		LR    float64
	}
	var s state
	if collective.Rank() == 0 {
		s = state{Epoch: 3, LR: 0.01}
	}
	if err := collective.BroadcastObject(ctx, "state", &s, 0); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%+v\n", s)
	// Output: {Epoch:3 LR:0.01}
}

func ExampleAllgatherObject() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := collective.Init(ctx); err != nil {
		log.Fatal(err)
	}
	defer collective.Shutdown(ctx)

	names, err := collective.AllgatherObject(ctx, "hosts", fmt.Sprintf("rank-%d", collective.Rank()))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(names)
	// Output: [rank-0]
}

func ExampleBarrier() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := collective.Init(ctx); err != nil {
		log.Fatal(err)
	}
	defer collective.Shutdown(ctx)

	if err := collective.Barrier(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("every rank got here")
	// Output: every rank got here
}

func ExampleJoin() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := collective.Init(ctx); err != nil {
		log.Fatal(err)
	}
	defer collective.Shutdown(ctx)

	// A rank out of data joins; the others' collectives go on without it.
	last, err := collective.Join(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("last rank to join:", last)
	// Output: last rank to join: 0
}

func ExampleNewProcessSet() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := collective.Init(ctx); err != nil {
		log.Fatal(err)
	}
	defer collective.Shutdown(ctx)

	// A collective among some of the ranks (here the only one).
	even, err := collective.NewProcessSet(ctx, []int{0})
	if err != nil {
		log.Fatal(err)
	}
	x := []float64{2.5}
	if err := collective.Allreduce(ctx, "even/x", x, collective.Sum, collective.InProcessSet(even)); err != nil {
		log.Fatal(err)
	}
	fmt.Println(x)
	// Output: [2.5]
}

func ExampleShutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := collective.Init(ctx); err != nil {
		log.Fatal(err)
	}
	if err := collective.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	// Collectives after Shutdown fail with a kind callers can test.
	err := collective.Allreduce(ctx, "late", []float32{1}, collective.Sum)
	fmt.Println(errors.Is(err, collective.ErrNotInitialized), collective.Initialized())
	// Output: true false
}

func ExampleNewWorld() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A world as a value: several can exist in turn (or, with
	// WithMembership, side by side), each with its own ranks.
	w, err := collective.NewWorld(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close(ctx)

	x := []int32{1, 2}
	if err := collective.Allreduce(ctx, "x", x, collective.Sum, collective.InWorld(w)); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("rank %d of %d: %v\n", w.Rank(), w.Size(), x)
	// Output: rank 0 of 1: [1 2]
}

// collectivetest runs N ranks in one process, for tests of code that uses
// collectives.
func Example_collectivetest() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sums := make([][]float64, 3)
	err := collectivetest.Run(ctx, 3, func(ctx context.Context, w *collective.World) error {
		x := []float64{float64(w.Rank()), 1}
		if err := collective.Allreduce(ctx, "x", x, collective.Sum, collective.InWorld(w)); err != nil {
			return err
		}
		sums[w.Rank()] = x
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(sums)
	// Output: [[3 3] [3 3] [3 3]]
}

func ExampleWithOutput() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := collective.Init(ctx); err != nil {
		log.Fatal(err)
	}
	defer collective.Shutdown(ctx)

	// One output buffer for every step: no allocation per call.
	out := make([]float32, 0, 64)
	for step := range 2 {
		all, err := collective.Allgather(ctx, "acts", []float32{float32(step), 1}, collective.WithOutput(out))
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(all, &all[0] == &out[:1][0])
	}
	// Output:
	// [0 1] true
	// [1 1] true
}
