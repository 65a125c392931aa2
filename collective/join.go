package collective

import (
	"bytes"
	"context"
	"encoding/gob"
	"fmt"

	"github.com/gorovod/gorovod/internal/tensor"

	"github.com/gorovod/gorovod/coordinator"
)

// JoinHandle is the handle of JoinAsync.
type JoinHandle struct{ h *Handle }

// Wait blocks until every rank has joined (or ctx is done) and returns the
// rank that joined last.
func (j JoinHandle) Wait(ctx context.Context) (lastRank int, err error) {
	if err := j.h.Wait(ctx); err != nil {
		return -1, err
	}
	return j.h.en.lastJoined, nil
}

// JoinAsync is the asynchronous form of Join.
func JoinAsync(ctx context.Context, opts ...CallOption) JoinHandle {
	co := callOpts(opts)
	co.set = nil // Join concerns the whole world
	return JoinHandle{h: submit(ctx, coordinator.Request{Name: coordinator.JoinName, Op: coordinator.OpJoin, DType: tensor.Uint8}, nil, co)}
}

// Join tells the other ranks this rank has no more data (uneven data sets):
// until every rank has joined, this rank takes part in the others'
// allreduces with the identity of their op (zeros for a sum), in allgathers
// with nothing, and in broadcasts as a receiver. It returns the rank that
// joined last, once every rank has joined.
func Join(ctx context.Context, opts ...CallOption) (lastRank int, err error) {
	return JoinAsync(ctx, opts...).Wait(ctx)
}

// GroupHandle is the handle of GroupedAllreduceAsync.
type GroupHandle[T Element] struct {
	h      *Handle
	packed []T
	bufs   [][]T
}

// Wait blocks until the grouped allreduce finished (or ctx is done) and
// copies the results into the caller's tensors.
func (g GroupHandle[T]) Wait(ctx context.Context) error {
	if err := g.h.Wait(ctx); err != nil {
		return err
	}
	off := 0
	for _, b := range g.bufs {
		off += copy(b, g.packed[off:off+len(b)])
	}
	return nil
}

// GroupedAllreduceAsync starts a grouped allreduce: several tensors reduced
// as one unit, one negotiation and one backend operation for the whole list
// (they are packed into one buffer; Wait unpacks). Every rank must pass the
// same number of tensors with the same lengths, in the same order.
func GroupedAllreduceAsync[T Element](ctx context.Context, name string, bufs [][]T, op ReduceOp, opts ...CallOption) GroupHandle[T] {
	total := 0
	for _, b := range bufs {
		total += len(b)
	}
	packed := make([]T, 0, total)
	for _, b := range bufs {
		packed = append(packed, b...)
	}
	// The tensor count is part of the name, so ranks passing different
	// lists negotiate different names and the mismatch is reported.
	h := AllreduceAsync(ctx, fmt.Sprintf("group/%s/%d", name, len(bufs)), packed, op, opts...)
	return GroupHandle[T]{h: h, packed: packed, bufs: bufs}
}

// GroupedAllreduce is GroupedAllreduceAsync then Wait.
func GroupedAllreduce[T Element](ctx context.Context, name string, bufs [][]T, op ReduceOp, opts ...CallOption) error {
	return GroupedAllreduceAsync(ctx, name, bufs, op, opts...).Wait(ctx)
}

// BroadcastObject sends root's *v to every rank (encoding/gob), replacing
// *v on the others.
func BroadcastObject[V any](ctx context.Context, name string, v *V, root int, opts ...CallOption) error {
	e, err := callOpts(opts).engine()
	if err != nil {
		return err
	}
	me := e.topo.Rank
	var payload []byte
	if me == root {
		var b bytes.Buffer
		if err := gob.NewEncoder(&b).Encode(v); err != nil {
			return fmt.Errorf("%w: broadcast object %q: encoding %T: %v", ErrInvalid, name, v, err)
		}
		payload = b.Bytes()
	}
	size := []int64{int64(len(payload))}
	if err := Broadcast(ctx, name+"/size", size, root, opts...); err != nil {
		return err
	}
	if me != root {
		payload = make([]byte, size[0])
	}
	if err := Broadcast(ctx, name+"/data", payload, root, opts...); err != nil {
		return err
	}
	if me == root {
		return nil
	}
	if err := gob.NewDecoder(bytes.NewReader(payload)).Decode(v); err != nil {
		return fmt.Errorf("%w: broadcast object %q: decoding into %T: %v", ErrInvalid, name, v, err)
	}
	return nil
}

// AllgatherObject gathers every rank's v (encoding/gob), in rank order.
func AllgatherObject[V any](ctx context.Context, name string, v V, opts ...CallOption) ([]V, error) {
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(&v); err != nil {
		return nil, fmt.Errorf("%w: allgather object %q: encoding %T: %v", ErrInvalid, name, v, err)
	}
	data, counts, err := AllgatherAsync(ctx, name, b.Bytes(), opts...).Wait(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]V, len(counts))
	off := 0
	for i, c := range counts {
		if err := gob.NewDecoder(bytes.NewReader(data[off : off+c])).Decode(&out[i]); err != nil {
			return nil, fmt.Errorf("%w: allgather object %q: decoding element %d: %v", ErrInvalid, name, i, err)
		}
		off += c
	}
	return out, nil
}
