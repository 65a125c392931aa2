// Package dataparallel is Gorovod's training helper, the counterpart of
// Horovod's DistributedOptimizer: it averages a model's gradients across
// ranks every step, starting each gradient's allreduce as soon as the
// backward pass has produced it so that communication overlaps the rest of
// the backward pass.
//
// # Use
//
//	g, err := dataparallel.New[float32](dataparallel.WithCompression(dataparallel.FP16))
//	g.Register("w1", grad.W1) // once per gradient buffer, the same on every rank
//	...
//	dataparallel.BroadcastParameters(ctx, 0, model.W1, model.B1, ...) // start-up
//	for each step {
//		backward(func(layer) { g.Ready(ctx, layer.Name) }) // as each gradient is done
//		if synced, err := g.Synchronize(ctx); err != nil { ... } else if synced { update() }
//	}
//
// Ready starts the gradient's allreduce at once (asynchronously) and
// returns; Synchronize waits for every started allreduce, starts those of
// registered gradients that were never marked ready (every rank must send
// the same set, so they go as their buffers are), and leaves the reduced
// gradient in each registered buffer.
//
// # Options
//
//   - WithOp: Average (default) or Sum across ranks.
//   - WithPrescale / WithPostscale: factors applied before and after the
//     reduction.
//   - WithAccumulation(K): K backward passes per communication. Passes 1..K-1
//     only add the gradients into a local accumulator (Synchronize returns
//     false: do not update); pass K sends the mean over the K passes, which
//     equals the gradient of one pass over K times the batch.
//   - WithCompression(FP16 or BF16): float32/float64 gradients travel as
//     16-bit floats (half the bytes of float32) and are widened back after
//     the reduction; WithErrorFeedback keeps each rank's rounding error and
//     adds it to the next step's gradient.
//   - WithCallOptions: the world or process set to run in
//     (collective.InWorld, collective.InProcessSet).
//   - Group: a grouping hint; the members go as one allreduce (one
//     negotiation, one backend op) once the last of them is ready.
//
// # Caller's obligations
//
// Every rank registers the same names with the same lengths in the same
// order, marks them ready in the same order, and calls Synchronize every
// backward pass. A Gradients is used by one goroutine (the training loop).
// Between Ready and the end of Synchronize the buffer belongs to the
// helper: do not write it.
package dataparallel
