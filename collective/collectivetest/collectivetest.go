// Package collectivetest runs N ranks of a job in one process, for testing
// training code against the real API without sockets: every rank is a
// collective.World with its own background loop, negotiation and
// algorithms, connected to the others by in-memory links.
//
//	err := collectivetest.Run(ctx, 3, func(ctx context.Context, w *collective.World) error {
//		buf := []float32{float32(w.Rank())}
//		return collective.Allreduce(ctx, "x", buf, collective.Sum, collective.InWorld(w))
//	})
//
// The worlds use the default configuration (the GOROVOD_* environment is
// not read) unless collective.WithConfig is passed, and log nothing unless
// collective.WithLogger is.
package collectivetest

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/internal/worldhook"
	"github.com/gorovod/gorovod/internal/transport/inmem"
)

// NewWorlds makes n worlds of one job (ranks 0..n-1, all on one host),
// connected in memory. The caller closes every one of them (World.Close);
// closing one ends the collectives of all.
func NewWorlds(ctx context.Context, n int, opts ...collective.Option) ([]*collective.World, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", collective.ErrTimeout, err)
	}
	if n < 1 {
		return nil, fmt.Errorf("%w: collectivetest: %d ranks", collective.ErrInvalid, n)
	}
	mem, err := inmem.NewWorld(n, inmem.WithPipeBytes(1<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: collectivetest: %w", collective.ErrInvalid, err)
	}
	oracle := worldhook.NewOracle(n)
	worlds := make([]*collective.World, n)
	for r := range n {
		o := append(append([]collective.Option(nil), opts...), worldhook.WithMesh(mem.Mesh(r), oracle).(collective.Option))
		w, err := collective.NewWorld(ctx, o...)
		if err != nil {
			closeAll(ctx, worlds[:r])
			_ = mem.Close()
			return nil, fmt.Errorf("collectivetest: rank %d: %w", r, err)
		}
		worlds[r] = w
	}
	return worlds, nil
}

// Run makes n worlds (NewWorlds), runs fn for every rank on a goroutine of
// its own and returns the ranks' errors joined, each prefixed with its
// rank. A rank whose fn fails has its world closed at once, so the others'
// pending collectives end (with ErrShutdown) rather than wait; the other
// worlds are closed once every fn has returned (a rank that finishes early,
// say outside a process set, does not end the others' work). ctx is passed
// to fn and bounds the closing.
func Run(ctx context.Context, n int, fn func(ctx context.Context, w *collective.World) error, opts ...collective.Option) error {
	worlds, err := NewWorlds(ctx, n, opts...)
	if err != nil {
		return err
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r, w := range worlds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx, w); err != nil {
				errs[r] = fmt.Errorf("rank %d: %w", r, err)
				_ = w.Close(ctx)
			}
		}()
	}
	wg.Wait()
	closeErrs := closeAll(ctx, worlds)
	for r, err := range closeErrs {
		if err != nil && errs[r] == nil {
			errs[r] = fmt.Errorf("rank %d: closing: %w", r, err)
		}
	}
	return errors.Join(errs...)
}

// closeAll closes the worlds concurrently (each Close waits for the others
// to agree) and returns their errors by rank.
func closeAll(ctx context.Context, worlds []*collective.World) []error {
	errs := make([]error, len(worlds))
	var wg sync.WaitGroup
	for r, w := range worlds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = w.Close(ctx)
		}()
	}
	wg.Wait()
	return errs
}
