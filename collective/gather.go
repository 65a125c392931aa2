package collective

import (
	"context"
	"fmt"

	"github.com/gorovod/gorovod/coordinator"
)

// Result is the handle of an asynchronous collective that produces a new
// slice (allgather, alltoall, reduce-scatter).
type Result[T Element] struct {
	h *Handle
}

// Wait blocks until the collective finished or ctx is done and returns its
// output. For Alltoall, the second value holds how many elements came from
// each rank; for Allgather, how many each rank contributed.
func (r Result[T]) Wait(ctx context.Context) ([]T, []int, error) {
	if err := r.h.Wait(ctx); err != nil {
		return nil, nil, err
	}
	var z T
	size := elemSize(z)
	counts := make([]int, len(r.h.en.OutCounts))
	for i, c := range r.h.en.OutCounts {
		counts[i] = c / size
	}
	return fromBytes[T](r.h.en.Out), counts, nil
}

// Done is closed when the collective finished.
func (r Result[T]) Done() <-chan struct{} { return r.h.Done() }

func elemSize[T Element](z T) int { return dtypeOf[T]().Size() }

// WithOutput has Allgather, Alltoall and ReduceScatter (and their Async
// forms) of host tensors write their result into out instead of a new
// slice when cap(out) holds it: the result is then out[:n], so a loop can
// reuse one buffer. out must hold the call's element type (else it is
// ignored) and must not be touched until the call finished; it must not
// overlap the input, except that an allgather's input may be exactly this
// rank's part of the result (in place). Other collectives ignore it.
func WithOutput[T Element](out []T) CallOption {
	return func(o *callOptions) { o.out = out }
}

// dst is the bytes of WithOutput's buffer (its whole capacity) for a call
// on T, nil without a usable one.
func dst[T Element](co callOptions) []byte {
	out, ok := co.out.([]T)
	if !ok || cap(out) == 0 || co.device != CPU {
		return nil
	}
	return asBytes(out[:cap(out)])
}

// AllgatherAsync starts an allgather: every rank contributes in (any length,
// may differ per rank) and receives the concatenation in rank order.
func AllgatherAsync[T Element](ctx context.Context, name string, in []T, opts ...CallOption) Result[T] {
	co := callOpts(opts)
	return Result[T]{h: submitWith(ctx, coordinator.Request{
		Name: name, Op: coordinator.OpAllgather, DType: dtypeOf[T](), Shape: []int64{int64(len(in))},
	}, asBytes(in), co, func(en *entry) { en.Dst = dst[T](co) })}
}

// Allgather concatenates every rank's in, in rank order.
func Allgather[T Element](ctx context.Context, name string, in []T, opts ...CallOption) ([]T, error) {
	out, _, err := AllgatherAsync(ctx, name, in, opts...).Wait(ctx)
	return out, err
}

// AlltoallAsync starts an alltoall: rank r sends in[sum(splits[:j]) : +splits[j]]
// to rank j; it receives from every rank what that rank addressed to it.
func AlltoallAsync[T Element](ctx context.Context, name string, in []T, splits []int, opts ...CallOption) Result[T] {
	co := callOpts(opts)
	size := co.groupSize()
	if splits == nil && size > 0 {
		if len(in)%size != 0 {
			return Result[T]{h: failed(fmt.Errorf("%w: alltoall %q: %d elements do not split evenly over %d ranks; pass splits", ErrInvalid, name, len(in), size))}
		}
		splits = make([]int, size)
		for i := range splits {
			splits[i] = len(in) / size
		}
	}
	if len(splits) != size {
		return Result[T]{h: failed(fmt.Errorf("%w: alltoall %q: %d splits for %d ranks", ErrInvalid, name, len(splits), size))}
	}
	total := 0
	es := dtypeOf[T]().Size()
	byteSplits := make([]int, len(splits))
	for i, s := range splits {
		if s < 0 {
			return Result[T]{h: failed(fmt.Errorf("%w: alltoall %q: negative split %d for rank %d", ErrInvalid, name, s, i))}
		}
		total += s
		byteSplits[i] = s * es
	}
	if total != len(in) {
		return Result[T]{h: failed(fmt.Errorf("%w: alltoall %q: splits sum to %d but the input has %d elements", ErrInvalid, name, total, len(in)))}
	}
	h := submitWith(ctx, coordinator.Request{
		Name: name, Op: coordinator.OpAlltoall, DType: dtypeOf[T](), Shape: []int64{int64(len(in))},
	}, asBytes(in), co, func(en *entry) { en.Splits, en.Dst = byteSplits, dst[T](co) })
	return Result[T]{h: h}
}

// Alltoall exchanges slices between all ranks (see AlltoallAsync); it
// returns the received elements and how many came from each rank.
func Alltoall[T Element](ctx context.Context, name string, in []T, splits []int, opts ...CallOption) ([]T, []int, error) {
	return AlltoallAsync(ctx, name, in, splits, opts...).Wait(ctx)
}

// ReduceScatterAsync starts a reduce-scatter: the elementwise reduction of
// every rank's in (same length everywhere) is split into Size() nearly equal
// parts (the first len%Size ranks get one more element) and rank r gets part r.
func ReduceScatterAsync[T Element](ctx context.Context, name string, in []T, op ReduceOp, opts ...CallOption) Result[T] {
	switch op {
	case Sum, Average, Min, Max, Product:
	default:
		return Result[T]{h: failed(fmt.Errorf("%w: reducescatter %q: unsupported reduce op %v", ErrInvalid, name, op))}
	}
	co := callOpts(opts)
	return Result[T]{h: submitWith(ctx, coordinator.Request{
		Name: name, Op: coordinator.OpReduceScatter, DType: dtypeOf[T](), Shape: []int64{int64(len(in))}, ReduceOp: op,
	}, asBytes(in), co, func(en *entry) { en.Dst = dst[T](co) })}
}

// ReduceScatter returns this rank's part of the reduction of every rank's in.
func ReduceScatter[T Element](ctx context.Context, name string, in []T, op ReduceOp, opts ...CallOption) ([]T, error) {
	out, _, err := ReduceScatterAsync(ctx, name, in, op, opts...).Wait(ctx)
	return out, err
}
