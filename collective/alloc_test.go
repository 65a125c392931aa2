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

// TestAllocTensors: tensors from collective.Alloc go through the API like
// any others (one large tensor in place, several small ones fused, a
// broadcast), with the right results.
func TestAllocTensors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := collectivetest.Run(ctx, 3, func(ctx context.Context, w *collective.World) error {
		in, r, n := collective.InWorld(w), w.Rank(), w.Size()
		big, err := collective.Alloc[float32](100_000)
		if err != nil {
			return err
		}
		defer collective.Free(big)
		small := make([][]float32, 5)
		for i := range small {
			if small[i], err = collective.Alloc[float32](3000 + i); err != nil {
				return err
			}
			defer collective.Free(small[i])
		}
		for step := range 3 {
			for i := range big {
				big[i] = float32(r + i%5)
			}
			hs := []*collective.Handle{collective.AllreduceAsync(ctx, "alloc/big", big, collective.Sum, in)}
			for i, s := range small {
				for k := range s {
					s[k] = float32(r * (i + 1))
				}
				hs = append(hs, collective.AllreduceAsync(ctx, fmt.Sprintf("alloc/small%d", i), s, collective.Sum, in))
			}
			for _, h := range hs {
				if err := h.Wait(ctx); err != nil {
					return err
				}
			}
			for i, v := range big {
				if want := float32(n*(n-1)/2 + n*(i%5)); v != want {
					return fmt.Errorf("step %d: big[%d] = %v, want %v", step, i, v, want)
				}
			}
			for i, s := range small {
				if want := float32(n * (n - 1) / 2 * (i + 1)); s[0] != want || s[len(s)-1] != want {
					return fmt.Errorf("step %d: small%d = %v..%v, want %v", step, i, s[0], s[len(s)-1], want)
				}
			}
		}
		if r == 2 {
			for i := range big {
				big[i] = 7
			}
		}
		if err := collective.Broadcast(ctx, "alloc/bcast", big, 2, in); err != nil {
			return err
		}
		if big[0] != 7 || big[len(big)-1] != 7 {
			return fmt.Errorf("broadcast: got %v..%v, want 7", big[0], big[len(big)-1])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAllocErrors(t *testing.T) {
	if _, err := collective.Alloc[int32](0); !errors.Is(err, collective.ErrInvalid) {
		t.Fatalf("Alloc(0): %v, want ErrInvalid", err)
	}
	if err := collective.Free(make([]int32, 4)); !errors.Is(err, collective.ErrInvalid) {
		t.Fatalf("Free of heap memory: %v, want ErrInvalid", err)
	}
	if err := collective.Free([]int32(nil)); !errors.Is(err, collective.ErrInvalid) {
		t.Fatalf("Free(nil): %v, want ErrInvalid", err)
	}
}
