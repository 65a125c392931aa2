package dataparallel

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/gorovod/gorovod/collective"
)

// BroadcastParameters overwrites every rank's bufs with root's, in the
// helper's world or process set (start-up, so that all ranks begin from the
// same weights). The buffers are named by position: every rank passes the
// same list.
func (g *Gradients[T]) BroadcastParameters(ctx context.Context, root int, bufs ...[]T) error {
	return broadcast(ctx, "param/", root, bufs, g.cfg.callOpts)
}

// BroadcastParameters overwrites every rank's bufs with root's in the
// default world (collective.Init's). The buffers are named by position
// ("param/0", "param/1", ...): every rank passes the same list.
func BroadcastParameters[T collective.Element](ctx context.Context, root int, bufs ...[]T) error {
	return broadcast(ctx, "param/", root, bufs, nil)
}

func broadcast[T collective.Element](ctx context.Context, prefix string, root int, bufs [][]T, opts []collective.CallOption) error {
	hs := make([]*collective.Handle, len(bufs))
	for i, b := range bufs {
		hs[i] = collective.BroadcastAsync(ctx, prefix+strconv.Itoa(i), b, root, opts...)
	}
	var err error
	for i, h := range hs {
		if werr := h.Wait(ctx); werr != nil {
			err = errors.Join(err, fmt.Errorf("broadcasting parameter %d: %w", i, werr))
		}
	}
	return err
}
