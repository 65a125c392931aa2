package collectivetest_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/collectivetest"
)

// noLeaks fails the test when goroutines started during it are still
// running once it ended (bounded wait for them to finish).
func noLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Errorf("goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
}

func TestEveryCollectiveOnInProcessRanks(t *testing.T) {
	for _, n := range []int{1, 2, 3, 5} {
		t.Run(fmt.Sprint("np=", n), func(t *testing.T) {
			noLeaks(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			quick := testing.Short() || n == 5
			counts := make([]int, n)
			err := collectivetest.Run(ctx, n, func(ctx context.Context, w *collective.World) error {
				checks, err := collectivetest.Check(ctx, w, quick)
				counts[w.Rank()] = checks
				if err != nil {
					return err
				}
				return theRest(ctx, w)
			})
			if err != nil {
				t.Fatal(err)
			}
			for r, c := range counts {
				if c == 0 {
					t.Errorf("rank %d checked nothing", r)
				}
			}
		})
	}
}

// theRest covers what Check does not: async forms, grouped allreduce,
// objects, process sets and Join, all in the World form.
func theRest(ctx context.Context, w *collective.World) error {
	in := collective.InWorld(w)
	r, n := w.Rank(), w.Size()
	a := []int64{int64(r), 1}
	b := []float64{float64(r)}
	ha := collective.AllreduceAsync(ctx, "async/a", a, collective.Sum, in)
	hb := collective.AllgatherAsync(ctx, "async/b", b, in)
	if err := ha.Wait(ctx); err != nil {
		return err
	}
	if want := []int64{int64(n * (n - 1) / 2), int64(n)}; !slices.Equal(a, want) {
		return fmt.Errorf("async allreduce: %v, want %v", a, want)
	}
	got, _, err := hb.Wait(ctx)
	if err != nil {
		return err
	}
	for i, v := range got {
		if v != float64(i) {
			return fmt.Errorf("async allgather: %v", got)
		}
	}
	g := [][]float32{{1, 2}, {float32(r)}}
	if err := collective.GroupedAllreduce(ctx, "grouped", g, collective.Max, in); err != nil {
		return err
	}
	if g[0][1] != 2 || g[1][0] != float32(n-1) {
		return fmt.Errorf("grouped allreduce: %v", g)
	}
	type state struct{ Step int }
	s := state{Step: 100 + r}
	if err := collective.BroadcastObject(ctx, "obj", &s, n-1, in); err != nil {
		return err
	}
	if s.Step != 100+n-1 {
		return fmt.Errorf("broadcast object: %+v", s)
	}
	all, err := collective.AllgatherObject(ctx, "objs", state{Step: r}, in)
	if err != nil {
		return err
	}
	for i, v := range all {
		if v.Step != i {
			return fmt.Errorf("allgather object: %+v", all)
		}
	}
	if err := processSets(ctx, w); err != nil {
		return err
	}
	// Uneven data: rank 0 runs one more allreduce than the others.
	if r == 0 {
		x := []float32{5}
		if err := collective.Allreduce(ctx, "extra", x, collective.Sum, in); err != nil {
			return err
		}
		if x[0] != 5 {
			return fmt.Errorf("allreduce with joined ranks: %v, want 5", x)
		}
	}
	last, err := w.Join(ctx)
	if err != nil {
		return err
	}
	if n > 1 && last != 0 {
		return fmt.Errorf("join: last rank %d, want 0", last)
	}
	return nil
}

func processSets(ctx context.Context, w *collective.World) error {
	r, n := w.Rank(), w.Size()
	var evens []int
	for i := 0; i < n; i += 2 {
		evens = append(evens, i)
	}
	ps, err := w.NewProcessSet(ctx, evens)
	if err != nil {
		return err
	}
	if r%2 != 0 {
		return nil
	}
	x := []int32{int32(r)}
	if err := collective.Allreduce(ctx, "set/sum", x, collective.Sum, collective.InProcessSet(ps)); err != nil {
		return err
	}
	want := int32(0)
	for _, e := range evens {
		want += int32(e)
	}
	if x[0] != want {
		return fmt.Errorf("process set allreduce: %d, want %d", x[0], want)
	}
	// Roots are global ranks, also inside a set.
	root := evens[len(evens)-1]
	y := []int64{int64(r)}
	if err := collective.Broadcast(ctx, "set/bcast", y, root, collective.InProcessSet(ps)); err != nil {
		return err
	}
	if y[0] != int64(root) {
		return fmt.Errorf("process set broadcast from %d: %d", root, y[0])
	}
	return w.Barrier(ctx, collective.InProcessSet(ps))
}

func TestAFailingRankEndsTheOthersCollectives(t *testing.T) {
	noLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	boom := errors.New("boom")
	err := collectivetest.Run(ctx, 3, func(ctx context.Context, w *collective.World) error {
		if w.Rank() == 1 {
			return boom
		}
		return collective.Allreduce(ctx, "never", []float32{1}, collective.Sum, collective.InWorld(w))
	})
	if !errors.Is(err, boom) || !errors.Is(err, collective.ErrShutdown) {
		t.Fatalf("error %v: want rank 1's own and ErrShutdown for the others", err)
	}
}

func TestWorldsSideBySide(t *testing.T) {
	noLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, err := collectivetest.NewWorlds(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	b, err := collectivetest.NewWorlds(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 5)
	for _, ws := range [][]*collective.World{a, b} {
		for _, w := range ws {
			go func() {
				x := []int32{1}
				err := collective.Allreduce(ctx, "same/name", x, collective.Sum, collective.InWorld(w))
				if err == nil && int(x[0]) != w.Size() {
					err = fmt.Errorf("world of %d: sum %d", w.Size(), x[0])
				}
				errs <- err
			}()
		}
	}
	for range 5 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for _, w := range append(a, b...) {
		if err := w.Close(ctx); err != nil {
			t.Error(err)
		}
	}
}

func TestARankDoneEarlyDoesNotEndTheOthersWork(t *testing.T) {
	noLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := collectivetest.Run(ctx, 3, func(ctx context.Context, w *collective.World) error {
		ps, err := w.NewProcessSet(ctx, []int{0, 2})
		if err != nil || !ps.Included() {
			return err // rank 1 is done
		}
		for i := range 20 {
			x := []int32{1}
			if err := collective.Allreduce(ctx, fmt.Sprint("x", i), x, collective.Sum, collective.InProcessSet(ps)); err != nil {
				return err
			}
			if x[0] != 2 {
				return fmt.Errorf("sum %d, want 2", x[0])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
