package collective_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/collectivetest"
)

const short = 100 * time.Millisecond

// withdrawn checks that err says the call was withdrawn because its
// deadline passed.
func withdrawn(rank int, what string, err error) error {
	if !errors.Is(err, collective.ErrCanceled) || !errors.Is(err, collective.ErrTimeout) || !strings.Contains(err.Error(), "withdrawn") {
		return fmt.Errorf("rank %d: %s: %v, want ErrCanceled (and ErrTimeout) saying it was withdrawn", rank, what, err)
	}
	return nil
}

func TestAWithdrawnCallIsForgottenEverywhereAndItsNameReused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := collectivetest.Run(ctx, 3, func(ctx context.Context, w *collective.World) error {
		in, r := collective.InWorld(w), w.Rank()
		// Ranks 0 and 1 submit x; rank 2 does not: their deadlines pass.
		if r != 2 {
			c, cancel := context.WithTimeout(ctx, short)
			err := collective.Allreduce(c, "x", []float32{1}, collective.Sum, in)
			cancel()
			if err := withdrawn(r, "x on ranks 0 and 1", err); err != nil {
				return err
			}
		}
		if err := w.Barrier(ctx); err != nil {
			return err
		}
		// Rank 2 submits x alone: were rank 0 still counting the withdrawn
		// requests, x would run without them and the world would fail.
		if r == 2 {
			c, cancel := context.WithTimeout(ctx, short)
			err := collective.Allreduce(c, "x", []float32{1}, collective.Sum, in)
			cancel()
			if err := withdrawn(r, "x on rank 2", err); err != nil {
				return err
			}
		}
		if err := w.Barrier(ctx); err != nil {
			return err
		}
		// Everyone: x runs, with only this round's values.
		x := []float32{float32(r + 1)}
		if err := collective.Allreduce(ctx, "x", x, collective.Sum, in); err != nil {
			return fmt.Errorf("rank %d: x again: %w", r, err)
		}
		if x[0] != 6 {
			return fmt.Errorf("rank %d: x = %v, want 6", r, x[0])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAsyncCallsHonourTheirContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := collectivetest.Run(ctx, 3, func(ctx context.Context, w *collective.World) error {
		in, r := collective.InWorld(w), w.Rank()
		if r == 0 {
			// Nobody else submits it: the handle finishes on its own once
			// the call's context ends, without anyone waiting on it.
			c, cancel := context.WithTimeout(ctx, short)
			defer cancel()
			h := collective.AllgatherAsync(c, "lonely", []int32{1}, in)
			select {
			case <-h.Done():
			case <-ctx.Done():
				return errors.New("an async call outlived its context")
			}
			if _, _, err := h.Wait(ctx); withdrawn(r, "async allgather", err) != nil {
				return withdrawn(r, "async allgather", err)
			}
		}
		// A withdrawn barrier gives its number back: the next one matches
		// the other ranks' first.
		if r == 1 {
			c, cancel := context.WithTimeout(ctx, short)
			err := w.Barrier(c)
			cancel()
			if err := withdrawn(r, "barrier", err); err != nil {
				return err
			}
		}
		return w.Barrier(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestJoinCannotBeWithdrawnSoItsContextFailsTheWorld(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rank0Done := make(chan struct{})
	err := collectivetest.Run(ctx, 3, func(ctx context.Context, w *collective.World) error {
		if w.Rank() != 0 {
			// The others do not join (and would take part in anything
			// else with rank 0 joined): once rank 0's Join gave up, the
			// world is over for them too.
			select {
			case <-rank0Done:
			case <-ctx.Done():
				return ctx.Err()
			}
			err := collective.Allreduce(ctx, "after", []float32{1}, collective.Sum, collective.InWorld(w))
			if !errors.Is(err, collective.ErrPeerLost) && !errors.Is(err, collective.ErrShutdown) {
				return fmt.Errorf("rank %d: allreduce after rank 0 gave up: %v, want the world failed", w.Rank(), err)
			}
			return nil
		}
		defer close(rank0Done)
		c, cancel := context.WithTimeout(ctx, short)
		defer cancel()
		_, err := w.Join(c)
		if !errors.Is(err, collective.ErrCanceled) || !strings.Contains(err.Error(), "cannot be withdrawn") {
			return fmt.Errorf("rank 0: join: %v, want ErrCanceled saying it cannot be withdrawn", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
