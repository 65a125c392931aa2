package elastic_test

import (
	"context"
	"log"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/dataparallel"
	"github.com/gorovod/gorovod/elastic"
)

// The training helper inside an elastic job: the gradients are registered
// once, the parameters live in the State, and WithGradients moves the
// helper to each world Run joins.
func ExampleWithGradients() {
	w, gw := make([]float32, 4), make([]float32, 4) // parameters, gradient
	grads, err := dataparallel.New[float32]()
	if err != nil {
		log.Fatal(err)
	}
	if err := grads.Register("w", gw); err != nil {
		log.Fatal(err)
	}
	st := elastic.NewState(elastic.Float32s("w", w))
	ctx := context.Background()
	err = elastic.Run(ctx, st, elastic.WithGradients(func(ctx context.Context, _ *collective.World) error {
		for st.Step() < 10 { // committed steps: after a reset, the survivors' highest
			for i := range gw {
				gw[i] = w[i] - 1 // this rank's gradient
			}
			if err := grads.Ready(ctx, "w"); err != nil {
				return err
			}
			if _, err := grads.Synchronize(ctx); err != nil {
				return err // a lost peer: Run resets and calls this function again
			}
			for i := range w {
				w[i] -= 0.1 * gw[i]
			}
			if err := st.Commit(ctx); err != nil { // the step is done once committed
				return err
			}
		}
		return nil
	}, grads))
	if err != nil {
		log.Fatal(err)
	}
}
