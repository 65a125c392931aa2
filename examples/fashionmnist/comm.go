//go:build !shim

package main

import (
	"context"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/dataparallel"
)

// collectiveComm runs the training collectives through package collective.
type collectiveComm struct{}

func (collectiveComm) Rank() int { return collective.Rank() }
func (collectiveComm) Size() int { return collective.Size() }

func (collectiveComm) Broadcast(ctx context.Context, name string, buf []float32, root int) error {
	return collective.Broadcast(ctx, name, buf, root)
}

// NewGradSync averages gradients with the training helper: each one's
// allreduce starts as soon as backpropagation has finished it.
func (collectiveComm) NewGradSync(cfg SyncConfig) (GradSync, error) {
	return dataparallel.New[float32](dataparallel.WithAccumulation(cfg.Accumulate), dataparallel.WithCompression(cfg.Compression))
}

func (collectiveComm) Sum64(ctx context.Context, name string, buf []float64) error {
	return collective.Allreduce(ctx, name, buf, collective.Sum)
}

// CollectiveBytes is the bytes of every collective this rank completed
// (the gorovod_bytes_total metric).
func (collectiveComm) CollectiveBytes() int64 { return collective.GetStats().Bytes }

// Barrier waits for every rank (before shutting down, so that no rank
// leaves while another still prints its results).
func (collectiveComm) Barrier(ctx context.Context) error { return collective.Barrier(ctx) }

// startComm joins the job (a world of one when not started by a launcher).
func startComm(ctx context.Context) (Comm, func() error, error) {
	if err := collective.Init(ctx); err != nil {
		return nil, nil, err
	}
	return collectiveComm{}, func() error { return collective.Shutdown(ctx) }, nil
}
