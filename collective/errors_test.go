package collective_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/collectivetest"
)

var kinds = []error{collective.ErrNotInitialized, collective.ErrShutdown, collective.ErrPeerLost, collective.ErrMismatch,
	collective.ErrTimeout, collective.ErrInvalid, collective.ErrHostsUpdated, collective.ErrCanceled}

// wantKind fails t unless err matches want (and so one of the kinds).
func wantKind(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: error %v, want %v", what, err, want)
	}
}

func TestEveryErrorHasAKind(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wantKind(t, "before Init", collective.Allreduce(ctx, "x", []float32{1}, collective.Sum), collective.ErrNotInitialized)

	_, err := collective.NewWorld(ctx, collective.WithMembership(collective.Membership{Rank: 3, Size: 2}))
	wantKind(t, "membership out of range", err, collective.ErrInvalid)
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = collective.NewWorld(short, collective.WithMembership(collective.Membership{Rank: 0, Size: 2,
		RendezvousAddr: "127.0.0.1:1", Secret: []byte("s"), Host: "h"}))
	cancelShort()
	wantKind(t, "rendezvous nobody serves", err, collective.ErrTimeout)

	ws, err := collectivetest.NewWorlds(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for _, w := range ws {
		go func() { errs <- argumentErrors(ctx, w) }()
	}
	for range ws {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for _, w := range ws {
		if err := w.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	in := collective.InWorld(ws[0])
	wantKind(t, "after Close", collective.Allreduce(ctx, "x", []float32{1}, collective.Sum, in), collective.ErrShutdown)
	wantKind(t, "barrier after Close", ws[0].Barrier(ctx), collective.ErrShutdown)
}

// argumentErrors runs calls that must fail, each with its kind, on every rank.
func argumentErrors(ctx context.Context, w *collective.World) error {
	in := collective.InWorld(w)
	check := func(what string, err, want error) error {
		if !errors.Is(err, want) {
			return fmt.Errorf("rank %d: %s: error %v, want %v", w.Rank(), what, err, want)
		}
		for _, k := range kinds {
			if errors.Is(err, k) {
				return nil
			}
		}
		return fmt.Errorf("rank %d: %s: %v matches no kind", w.Rank(), what, err)
	}
	n := 4 + w.Rank() // a different length on every rank
	for _, c := range []struct {
		what      string
		err, want error
	}{
		{"empty name", collective.Allreduce(ctx, "", []float32{1}, collective.Sum, in), collective.ErrInvalid},
		{"bad op", collective.Allreduce(ctx, "x", []float32{1}, collective.ReduceOp(99), in), collective.ErrInvalid},
		{"bad root", collective.Broadcast(ctx, "x", []float32{1}, 7, in), collective.ErrInvalid},
		{"bad splits", func() error { _, _, err := collective.Alltoall(ctx, "x", []int32{1, 2, 3}, []int{1}, in); return err }(), collective.ErrInvalid},
		{"mismatch", collective.Allreduce(ctx, "m", make([]float32, n), collective.Sum, in), collective.ErrMismatch},
		{"wait past its context", func() error {
			// Rank 1 never submits "late": rank 0's wait ends on its context.
			if w.Rank() != 0 {
				return collective.ErrTimeout
			}
			c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			return collective.AllreduceAsync(c, "late", []float32{1}, collective.Sum, in).Wait(c)
		}(), collective.ErrTimeout},
	} {
		if err := check(c.what, c.err, c.want); err != nil {
			return err
		}
	}
	return nil
}
