package collective

import (
	"context"

	"github.com/gorovod/gorovod/coordinator"
	"github.com/gorovod/gorovod/internal/transport/control"
)

// ReduceToRoot makes the loop's exchange a coordinator.TreeExchange: the
// slow path's requests go up control's binomial tree, merged on the way,
// instead of every rank's list to rank 0.
func (x *exchange) ReduceToRoot(ctx context.Context, payload []byte, combine func(acc, child []byte, from int) []byte) ([]byte, error) {
	return control.ReduceToRoot(ctx, x.e.mesh, payload, combine)
}

// BroadcastDown sends rank 0's response list down the same tree.
func (x *exchange) BroadcastDown(ctx context.Context, payload []byte) ([]byte, error) {
	return control.BroadcastDown(ctx, x.e.mesh, payload)
}

var _ coordinator.TreeExchange = (*exchange)(nil)
