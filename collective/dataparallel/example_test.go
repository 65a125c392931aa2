package dataparallel_test

import (
	"context"
	"fmt"

	"github.com/gorovod/gorovod/collective/dataparallel"
)

// A training step with two gradients and accumulation over two backward
// passes. (The program has joined its job with collective.Init; here, as in
// the package's tests, a world of one.)
func ExampleGradients() {
	ctx := context.Background()
	gw, gb := make([]float32, 2), make([]float32, 1)
	grads, err := dataparallel.New[float32](dataparallel.WithAccumulation(2), dataparallel.WithPrefix("example/"))
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = grads.Register("w", gw)
	_ = grads.Register("b", gb)
	for pass, g := range []float32{1, 3} {
		// The backward pass: the last layer's gradient is done first.
		gb[0] = g
		_ = grads.Ready(ctx, "b") // on the window's last pass: b's allreduce starts now
		gw[0], gw[1] = g, -g
		_ = grads.Ready(ctx, "w")
		synced, err := grads.Synchronize(ctx)
		fmt.Printf("pass %d: update %v, err %v\n", pass+1, synced, err)
	}
	fmt.Println("mean gradient over the window and the ranks:", gw, gb)
	// Output:
	// pass 1: update false, err <nil>
	// pass 2: update true, err <nil>
	// mean gradient over the window and the ranks: [2 -2] [2]
}
