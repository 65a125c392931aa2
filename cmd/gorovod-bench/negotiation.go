package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/gorovod/gorovod/collective"
)

// negotiation submits o.tensors named tensors of o.tensorBytes every step,
// as a training step submits its gradients, and reports steps/s and the
// time the background loop spent negotiating per step.
func negotiation(ctx context.Context, o options, w io.Writer) error {
	n := int(o.tensorBytes / 4)
	grads := make([][]float32, o.tensors)
	names := make([]string, o.tensors)
	for i := range grads {
		grads[i] = make([]float32, n)
		names[i] = fmt.Sprintf("grad/%d", i)
	}
	handles := make([]*collective.Handle, o.tensors)
	step := func() error {
		for i, g := range grads {
			handles[i] = collective.AllreduceAsync(ctx, names[i], g, collective.Average)
		}
		for _, h := range handles {
			if err := h.Wait(ctx); err != nil {
				return err
			}
		}
		return nil
	}
	for i := 0; i < max(1, o.warmup); i++ {
		if err := step(); err != nil {
			return err
		}
	}
	before := collective.GetStats()
	start := time.Now()
	for i := 0; i < o.steps; i++ {
		if err := step(); err != nil {
			return err
		}
	}
	took := time.Since(start)
	after := collective.GetStats()
	cfg := collective.ActiveConfig()
	steps := float64(o.steps)
	fmt.Fprintf(w, "# gorovod-bench %s negotiation: np %d, %d tensors x %d B per step, fusion threshold %d B, cache capacity %d, cycle time %v\n",
		version, collective.Size(), o.tensors, o.tensorBytes, cfg.FusionThresholdBytes, cfg.CacheCapacity, cfg.CycleTime)
	fmt.Fprintf(w, "%10s %12s %14s %14s %12s %14s\n", "steps/s", "step (us)", "negot/step(us)", "backend ops/st", "cycles/step", "requests/step")
	fmt.Fprintf(w, "%10.1f %12.1f %14.1f %14.2f %12.2f %14.2f\n",
		steps/took.Seconds(),
		float64(took.Microseconds())/steps,
		float64((after.CycleTime-before.CycleTime).Microseconds())/steps,
		float64(after.BackendOps-before.BackendOps)/steps,
		float64(after.Cycles-before.Cycles)/steps,
		float64(after.RequestsToRoot-before.RequestsToRoot)/steps)
	return nil
}
