package main

import (
	"context"
	"fmt"
	"unsafe"

	"github.com/gorovod/gorovod/internal/tensor"

	"github.com/gorovod/gorovod/collective"
)

// apiOnce runs one iteration through the public (negotiated) API.
func apiOnce(ctx context.Context, c *benchCase, name string, buf []byte, inplace bool) error {
	_, err := apiResult(ctx, c, name, buf, inplace)
	return err
}

// apiResult runs one iteration through the public API and returns the bytes
// of its result.
func apiResult(ctx context.Context, c *benchCase, name string, buf []byte, inplace bool) ([]byte, error) {
	switch c.b.o.dtype {
	case tensor.Float32:
		return typedCall[float32](ctx, c, name, buf, inplace)
	case tensor.Float64:
		return typedCall[float64](ctx, c, name, buf, inplace)
	case tensor.Int32:
		return typedCall[int32](ctx, c, name, buf, inplace)
	case tensor.Int64:
		return typedCall[int64](ctx, c, name, buf, inplace)
	case tensor.Int8:
		return typedCall[int8](ctx, c, name, buf, inplace)
	case tensor.Uint8:
		return typedCall[uint8](ctx, c, name, buf, inplace)
	case tensor.Float16:
		return typedCall[tensor.F16](ctx, c, name, buf, inplace)
	case tensor.BFloat16:
		return typedCall[tensor.BF16](ctx, c, name, buf, inplace)
	}
	return nil, fmt.Errorf("dtype %v not supported by the public API", c.b.o.dtype)
}

func typedCall[T collective.Element](ctx context.Context, c *benchCase, name string, buf []byte, inplace bool) ([]byte, error) {
	o := c.b.o
	t := asT[T](buf)
	switch o.op {
	case "allreduce":
		return buf, collective.Allreduce(ctx, name, t, o.redop)
	case "broadcast":
		return buf, collective.Broadcast(ctx, name, t, o.root)
	case "allgather": // outputs reused, as a user's loop would
		out, err := collective.Allgather(ctx, name, asT[T](c.agSend(inplace)), collective.WithOutput(asT[T](c.dst)))
		return asBytes(out), err
	case "reducescatter":
		out, err := collective.ReduceScatter(ctx, name, t, o.redop, collective.WithOutput(asT[T](c.out)))
		return asBytes(out), err
	case "alltoall":
		out, _, err := collective.Alltoall(ctx, name, t, c.elemCounts, collective.WithOutput(asT[T](c.out)))
		return asBytes(out), err
	}
	return nil, fmt.Errorf("unknown op %q", o.op)
}

func asT[T collective.Element](b []byte) []T {
	var z T
	n := len(b) / int(unsafe.Sizeof(z))
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), n)
}

func asBytes[T collective.Element](t []T) []byte {
	if len(t) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&t[0])), len(t)*int(unsafe.Sizeof(t[0])))
}
