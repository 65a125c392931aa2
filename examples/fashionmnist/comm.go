//go:build !shim

package main

import (
	"context"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/dataparallel"
)

// collectiveComm runs the training collectives in a world of package
// collective (the one Init joins, or one of collectivetest's in tests).
type collectiveComm struct{ w *collective.World }

func (c collectiveComm) Rank() int { return c.w.Rank() }
func (c collectiveComm) Size() int { return c.w.Size() }

func (c collectiveComm) Broadcast(ctx context.Context, name string, buf []float32, root int) error {
	return collective.Broadcast(ctx, name, buf, root, collective.InWorld(c.w))
}

// NewGradSync averages gradients with the training helper: each one's
// allreduce starts as soon as backpropagation has finished it.
func (c collectiveComm) NewGradSync(cfg SyncConfig) (GradSync, error) {
	return dataparallel.New[float32](dataparallel.WithAccumulation(cfg.Accumulate),
		dataparallel.WithCompression(cfg.Compression), dataparallel.WithCallOptions(collective.InWorld(c.w)))
}

func (c collectiveComm) Sum64(ctx context.Context, name string, buf []float64) error {
	return collective.Allreduce(ctx, name, buf, collective.Sum, collective.InWorld(c.w))
}

// CollectiveBytes is the bytes of every collective this rank completed
// (the gorovod_bytes_total metric).
func (c collectiveComm) CollectiveBytes() int64 { return c.w.Stats().Bytes }

// Barrier waits for every rank (before shutting down, so that no rank
// leaves while another still prints its results).
func (c collectiveComm) Barrier(ctx context.Context) error { return c.w.Barrier(ctx) }

// startComm joins the job (a world of one when not started by a launcher).
func startComm(ctx context.Context) (Comm, func() error, error) {
	if err := collective.Init(ctx); err != nil {
		return nil, nil, err
	}
	return collectiveComm{w: collective.Default()}, func() error { return collective.Shutdown(ctx) }, nil
}
