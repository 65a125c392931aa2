package collective_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/collectivetest"
)

// sameStart reports whether a and b start at the same element.
func sameStart[T any](a, b []T) bool { return len(a) > 0 && len(b) > 0 && &a[0] == &b[0] }

func TestWithOutputWritesIntoTheCallersBuffer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := collectivetest.Run(ctx, 3, func(ctx context.Context, w *collective.World) error {
		for _, check := range []func(context.Context, *collective.World) error{outAllgather, outAllgatherInPlace, outReduceScatter, outAlltoall} {
			if err := check(ctx, w); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// agWant is the allgather of rank r contributing r+1 copies of 10r+k.
func agWant(n int) []int32 {
	var want []int32
	for r := range n {
		for k := range r + 1 {
			want = append(want, int32(10*r+k))
		}
	}
	return want
}

func agIn(r int) []int32 {
	in := make([]int32, r+1)
	for k := range in {
		in[k] = int32(10*r + k)
	}
	return in
}

func outAllgather(ctx context.Context, w *collective.World) error {
	in, r, want := collective.InWorld(w), w.Rank(), agWant(w.Size())
	out := make([]int32, len(want)+2)
	for round := range 2 { // the buffer is reused
		got, err := collective.Allgather(ctx, "out/ag", agIn(r), in, collective.WithOutput(out))
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) || !sameStart(got, out) {
			return fmt.Errorf("rank %d round %d: allgather into out: %v (in out: %v), want %v", r, round, got, sameStart(got, out), want)
		}
	}
	small := make([]int32, len(want)-1)
	got, err := collective.Allgather(ctx, "out/ag-small", agIn(r), in, collective.WithOutput(small))
	if err != nil {
		return err
	}
	if !slices.Equal(got, want) || sameStart(got, small) {
		return fmt.Errorf("rank %d: allgather with too small an out: %v (in out: %v), want %v in a new slice", r, got, sameStart(got, small), want)
	}
	other := make([]float32, 2*len(want))
	got, err = collective.Allgather(ctx, "out/ag-type", agIn(r), in, collective.WithOutput(other))
	if err != nil || !slices.Equal(got, want) {
		return fmt.Errorf("rank %d: allgather with an out of another type: %v, %v; want %v", r, got, err, want)
	}
	return nil
}

func outAllgatherInPlace(ctx context.Context, w *collective.World) error {
	in, r, want := collective.InWorld(w), w.Rank(), agWant(w.Size())
	out := make([]int32, len(want))
	off := r * (r + 1) / 2 // ranks before r contribute 1+2+...+r elements
	mine := out[off : off+r+1]
	copy(mine, agIn(r))
	got, err := collective.Allgather(ctx, "out/ag-inplace", mine, in, collective.WithOutput(out))
	if err != nil {
		return err
	}
	if !slices.Equal(got, want) || !sameStart(got, out) {
		return fmt.Errorf("rank %d: allgather in place: %v, want %v", r, got, want)
	}
	return nil
}

func outReduceScatter(ctx context.Context, w *collective.World) error {
	in, r, n := collective.InWorld(w), w.Rank(), w.Size()
	x := make([]float64, 2*n+1) // rank 0 gets 3 elements, the others 2
	out := make([]float64, 3)
	for round := range 2 {
		for i := range x {
			x[i] = float64(i + r + round)
		}
		got, err := collective.ReduceScatter(ctx, "out/rs", x, collective.Sum, in, collective.WithOutput(out))
		if err != nil {
			return err
		}
		start := 2*r + min(r, 1)
		var want []float64
		for i := start; i < start+2+1-min(r, 1); i++ {
			want = append(want, float64(n*(i+round)+n*(n-1)/2))
		}
		if !slices.Equal(got, want) || !sameStart(got, out) {
			return fmt.Errorf("rank %d round %d: reduce-scatter into out: %v (in out: %v), want %v", r, round, got, sameStart(got, out), want)
		}
	}
	return nil
}

func outAlltoall(ctx context.Context, w *collective.World) error {
	in, r, n := collective.InWorld(w), w.Rank(), w.Size()
	send := make([]uint8, 2*n)
	for i := range send {
		send[i] = uint8(10*r + i/2) // two elements for each rank
	}
	out := make([]uint8, 2*n)
	got, counts, err := collective.Alltoall(ctx, "out/a2a", send, nil, in, collective.WithOutput(out))
	if err != nil {
		return err
	}
	var want []uint8
	for q := range n {
		want = append(want, uint8(10*q+r), uint8(10*q+r))
	}
	if !slices.Equal(got, want) || !sameStart(got, out) || len(counts) != n || counts[0] != 2 {
		return fmt.Errorf("rank %d: alltoall into out: %v %v (in out: %v), want %v", r, got, counts, sameStart(got, out), want)
	}
	return nil
}
