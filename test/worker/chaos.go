package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/gorovod/gorovod/collective"
)

// chaosJob is what test/chaos runs while it injects faults: a mix of
// collectives (small and large allreduces, allgather, broadcast, alltoall,
// reduce-scatter, barrier) for a number of steps, each result checked. It
// prints, for the driver:
//
//	chaos: rank R pid P     at start, before Init
//	chaos: rank R ready     after Init
//	chaos: rank R done      after Shutdown
//	chaos: rank R failed: ERR
//
// SIGTERM is ignored so a rank that fails because of a peer can say why
// before gorun's kill grace period ends.
func chaosJob(ctx context.Context, steps, large int) error {
	signal.Ignore(syscall.SIGTERM)
	r := envRank()
	fmt.Printf("chaos: rank %d pid %d\n", r, os.Getpid())
	err := chaosSteps(ctx, steps, large)
	if err != nil {
		fmt.Printf("chaos: rank %d failed: %v\n", r, err)
		return err
	}
	fmt.Printf("chaos: rank %d done\n", r)
	return nil
}

func chaosSteps(ctx context.Context, steps, large int) error {
	if err := collective.Init(ctx); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	rank, size := collective.Rank(), collective.Size()
	fmt.Printf("chaos: rank %d ready\n", rank)
	big := make([]float32, large)
	for s := 0; s < steps; s++ {
		small := []int32{int32(rank), 1}
		if err := collective.Allreduce(ctx, fmt.Sprintf("small/%d", s), small, collective.Sum); err != nil {
			return err
		}
		if want := int32(size * (size - 1) / 2); small[0] != want || small[1] != int32(size) {
			return fmt.Errorf("step %d: allreduce sum %v, want [%d %d]", s, small, want, size)
		}
		for i := range big {
			big[i] = 1
		}
		if err := collective.Allreduce(ctx, fmt.Sprintf("big/%d", s), big, collective.Sum); err != nil {
			return err
		}
		if big[0] != float32(size) || big[len(big)-1] != float32(size) {
			return fmt.Errorf("step %d: large allreduce got %v, want %d", s, big[0], size)
		}
		all, err := collective.Allgather(ctx, fmt.Sprintf("gather/%d", s), []int64{int64(rank)})
		if err != nil {
			return err
		}
		for i, v := range all {
			if v != int64(i) {
				return fmt.Errorf("step %d: allgather %v", s, all)
			}
		}
		root := s % size
		b := []int32{int32(rank)}
		if err := collective.Broadcast(ctx, fmt.Sprintf("bcast/%d", s), b, root); err != nil {
			return err
		}
		if b[0] != int32(root) {
			return fmt.Errorf("step %d: broadcast from %d got %d", s, root, b[0])
		}
		in := make([]int32, size)
		for j := range in {
			in[j] = int32(rank*100 + j)
		}
		out, _, err := collective.Alltoall(ctx, fmt.Sprintf("a2a/%d", s), in, nil)
		if err != nil {
			return err
		}
		for j, v := range out {
			if v != int32(j*100+rank) {
				return fmt.Errorf("step %d: alltoall %v", s, out)
			}
		}
		rs, err := collective.ReduceScatter(ctx, fmt.Sprintf("rs/%d", s), in, collective.Sum)
		if err != nil {
			return err
		}
		if len(rs) != 1 || rs[0] != int32(100*size*(size-1)/2+size*rank) {
			return fmt.Errorf("step %d: reduce-scatter %v", s, rs)
		}
		if err := collective.Barrier(ctx); err != nil {
			return err
		}
	}
	return collective.Shutdown(ctx)
}
