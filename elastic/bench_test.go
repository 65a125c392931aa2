package elastic

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/collectivetest"
)

type quietSession struct{}

func (quietSession) join(context.Context, uint64, string) (joinReply, error) { return joinReply{}, nil }
func (quietSession) told() uint64                                            { return 0 }
func (quietSession) broken(uint64) <-chan struct{}                           { return nil }
func (quietSession) progress(uint64, int64)                                  {}

// BenchmarkCommit is one Commit on each of 2 in-memory ranks with a state
// the size of the example's model (25 450 float32) against one gradient
// allreduce of the same size: Commit's cost relative to a step's
// communication. Run: go test ./elastic -run - -bench Commit
func BenchmarkCommit(b *testing.B) {
	const n = 784*32 + 32 + 32*10 + 10
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ws, err := collectivetest.NewWorlds(ctx, 2)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		var wg sync.WaitGroup
		for _, w := range ws {
			wg.Add(1)
			go func() { defer wg.Done(); _ = w.Close(ctx) }()
		}
		wg.Wait()
	}()
	sts := make([]*State, 2)
	grads := make([][]float32, 2)
	for i, w := range ws {
		sts[i] = NewState(Float32s("params", make([]float32, n)))
		sts[i].attach(w, &runner{sess: quietSession{}}, 0)
		grads[i] = make([]float32, n)
	}
	each := func(f func(i int, w *collective.World) error) {
		var wg sync.WaitGroup
		for i, w := range ws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := f(i, w); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	b.Run("Commit", func(b *testing.B) {
		for range b.N {
			each(func(i int, w *collective.World) error { return sts[i].Commit(ctx) })
		}
	})
	b.Run("GradientAllreduce", func(b *testing.B) {
		for range b.N {
			each(func(i int, w *collective.World) error {
				return collective.Allreduce(ctx, "grad", grads[i], collective.Average, collective.InWorld(w))
			})
		}
	})
}
