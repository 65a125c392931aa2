package elastic

import (
	"context"

	"github.com/gorovod/gorovod/collective"
)

// Resetter is a training helper bound to one world that can be moved to
// another: *dataparallel.Gradients[T] is one, for every element type T.
type Resetter interface {
	Reset(opts ...collective.CallOption)
}

// WithGradients returns fn wrapped so that, at the start of every call
// (the first world and each one after a reset), every helper in gs is
// moved to the world fn runs in: gs[i].Reset(collective.InWorld(w)). That
// forgets the allreduces still pending in the old world (which Run has
// closed by then), drops accumulated passes and error-feedback residuals,
// and replaces the helper's call options (a process set of the old world
// goes too). The registered gradient buffers and groups stay:
//
//	g, _ := dataparallel.New[float32](dataparallel.WithAccumulation(2))
//	g.Register("w", gw) // once, before Run
//	st := elastic.NewState(elastic.Float32s("w", w), sampler.Item())
//	err := elastic.Run(ctx, st, elastic.WithGradients(func(ctx context.Context, cw *collective.World) error {
//		for ... { backward(); g.Ready(ctx, "w"); if ok, err := g.Synchronize(ctx); ... if ok { update(); st.Commit(ctx) } }
//	}, g))
//
// Keep the parameters (and the optimizer's moments) in the State, not in
// a BroadcastParameters call: Run's sync already gives every rank the
// committed parameters of the survivor with the highest step, at the start
// and after each reset. Commit after the update of a communicating pass
// (Synchronize returned true): the passes of a window cut short by a reset
// are then redone from the last commit, none counted twice.
func WithGradients(fn func(ctx context.Context, w *collective.World) error, gs ...Resetter) func(ctx context.Context, w *collective.World) error {
	return func(ctx context.Context, w *collective.World) error {
		for _, g := range gs {
			g.Reset(collective.InWorld(w))
		}
		return fn(ctx, w)
	}
}
