package nccl

import (
	"context"
	"encoding/binary"
	"math"

	"github.com/gorovod/gorovod/internal/tensor"
)

// hostScale is a scaling step done on the host: no device kernels are
// loaded (the binding dlopens NCCL and the CUDA runtime only), so scaling
// copies the data to the host and back. It follows the CPU path's
// semantics: integer Average divides (truncating), floats multiply in their
// own precision (float16/bfloat16 through float32), integers multiply in
// float64 and truncate.
type hostScale struct {
	factor float64
	divide int
}

func (s hostScale) identity() bool { return s.factor == 1 && s.divide == 0 }

// postFactor is what follows the reduction: postscale, and the division of
// Average when NCCL has no ncclAvg.
func (x *Executor) postFactor(dt tensor.DType, red Reduction, postscale float64) hostScale {
	s := hostScale{factor: postscale}
	if red.Postscale && x.comm.Size() > 1 {
		if dt.IsFloat() {
			s.factor /= float64(x.comm.Size())
		} else {
			s.divide = x.comm.Size()
		}
	}
	return s
}

func (x *Executor) scaleOnHost(ctx context.Context, buf DevicePtr, count int, dt tensor.DType, s hostScale) error {
	if err := x.comm.Synchronize(ctx, x.stream); err != nil {
		return err
	}
	b := make([]byte, count*dt.Size())
	if err := x.dev.CopyFromDevice(b, buf); err != nil {
		return err
	}
	s.apply(dt, b)
	return x.dev.CopyToDevice(buf, b)
}

func (s hostScale) apply(dt tensor.DType, b []byte) {
	le := binary.LittleEndian
	n := len(b) / dt.Size()
	for i := 0; i < n; i++ {
		switch dt {
		case tensor.Float32:
			v := math.Float32frombits(le.Uint32(b[4*i:]))
			le.PutUint32(b[4*i:], math.Float32bits(v*float32(s.factor)))
		case tensor.Float64:
			le.PutUint64(b[8*i:], math.Float64bits(math.Float64frombits(le.Uint64(b[8*i:]))*s.factor))
		case tensor.Float16:
			v := tensor.F16(le.Uint16(b[2*i:])).Float32()
			le.PutUint16(b[2*i:], uint16(tensor.F16FromFloat32(v*float32(s.factor))))
		case tensor.BFloat16:
			v := tensor.BF16(le.Uint16(b[2*i:])).Float32()
			le.PutUint16(b[2*i:], uint16(tensor.BF16FromFloat32(v*float32(s.factor))))
		case tensor.Int8:
			b[i] = byte(int8(s.int(int64(int8(b[i])))))
		case tensor.Uint8:
			b[i] = byte(s.uint(uint64(b[i])))
		case tensor.Int32:
			le.PutUint32(b[4*i:], uint32(int32(s.int(int64(int32(le.Uint32(b[4*i:])))))))
		case tensor.Int64:
			le.PutUint64(b[8*i:], uint64(s.int(int64(le.Uint64(b[8*i:])))))
		case tensor.Uint64:
			le.PutUint64(b[8*i:], s.uint(le.Uint64(b[8*i:])))
		}
	}
}

func (s hostScale) int(v int64) int64 {
	if s.divide > 0 {
		v /= int64(s.divide)
	}
	if s.factor != 1 {
		v = int64(float64(v) * s.factor)
	}
	return v
}

func (s hostScale) uint(v uint64) uint64 {
	if s.divide > 0 {
		v /= uint64(s.divide)
	}
	if s.factor != 1 {
		v = uint64(float64(v) * s.factor)
	}
	return v
}

// Identity is count elements of op's identity for dt (what a joined rank
// contributes): 0 for Sum and Average, 1 for Product, the largest value for
// Min, the smallest for Max (infinities for floating-point types).
func Identity(dt tensor.DType, op tensor.ReduceOp, count int) []byte {
	es := dt.Size()
	one := make([]byte, es)
	le := binary.LittleEndian
	switch op {
	case tensor.Product:
		switch dt {
		case tensor.Float32:
			le.PutUint32(one, math.Float32bits(1))
		case tensor.Float64:
			le.PutUint64(one, math.Float64bits(1))
		case tensor.Float16:
			le.PutUint16(one, 0x3c00)
		case tensor.BFloat16:
			le.PutUint16(one, 0x3f80)
		default:
			one[0] = 1
		}
	case tensor.Min, tensor.Max:
		hi := op == tensor.Min
		switch dt {
		case tensor.Float32:
			le.PutUint32(one, math.Float32bits(float32(math.Inf(sign(hi)))))
		case tensor.Float64:
			le.PutUint64(one, math.Float64bits(math.Inf(sign(hi))))
		case tensor.Float16:
			le.PutUint16(one, pick[uint16](hi, 0x7c00, 0xfc00))
		case tensor.BFloat16:
			le.PutUint16(one, pick[uint16](hi, 0x7f80, 0xff80))
		case tensor.Int8:
			one[0] = pick[byte](hi, 0x7f, 0x80)
		case tensor.Uint8:
			one[0] = pick[byte](hi, 0xff, 0)
		case tensor.Int32:
			le.PutUint32(one, pick[uint32](hi, math.MaxInt32, 1<<31))
		case tensor.Int64:
			le.PutUint64(one, pick[uint64](hi, math.MaxInt64, 1<<63))
		case tensor.Uint64:
			le.PutUint64(one, pick[uint64](hi, math.MaxUint64, 0))
		}
	}
	out := make([]byte, 0, count*es)
	for i := 0; i < count; i++ {
		out = append(out, one...)
	}
	return out
}

func sign(positive bool) int {
	if positive {
		return 1
	}
	return -1
}

func pick[T any](cond bool, a, b T) T {
	if cond {
		return a
	}
	return b
}
