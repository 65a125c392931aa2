package collective

import (
	"math"
	"unsafe"

	"github.com/gorovod/gorovod/internal/tensor"
)

// identityFill sets every element of buf to the identity of op for dt: what
// a joined rank contributes so that it does not change the result.
func identityFill(dt tensor.DType, op tensor.ReduceOp, buf []byte) {
	var one, low, high float64
	switch op {
	case tensor.Sum, tensor.Average:
		clear(buf)
		return
	case tensor.Product:
		one = 1
	case tensor.Min:
		one = math.Inf(1)
		high = 1
	case tensor.Max:
		one = math.Inf(-1)
		low = 1
	}
	n := len(buf) / dt.Size()
	if n == 0 {
		return
	}
	p := unsafe.Pointer(&buf[0])
	switch dt {
	case tensor.Float32:
		fill(unsafe.Slice((*float32)(p), n), float32(one))
	case tensor.Float64:
		fill(unsafe.Slice((*float64)(p), n), one)
	case tensor.Float16:
		fill(unsafe.Slice((*tensor.F16)(p), n), tensor.F16FromFloat32(float32(one)))
	case tensor.BFloat16:
		fill(unsafe.Slice((*tensor.BF16)(p), n), tensor.BF16FromFloat32(float32(one)))
	case tensor.Int32:
		fill(unsafe.Slice((*int32)(p), n), pick[int32](one, low, high, math.MinInt32, math.MaxInt32))
	case tensor.Int64:
		fill(unsafe.Slice((*int64)(p), n), pick[int64](one, low, high, math.MinInt64, math.MaxInt64))
	case tensor.Int8:
		fill(unsafe.Slice((*int8)(p), n), pick[int8](one, low, high, math.MinInt8, math.MaxInt8))
	case tensor.Uint8:
		fill(unsafe.Slice((*uint8)(p), n), pick[uint8](one, low, high, 0, math.MaxUint8))
	}
}

// pick returns the integer identity: the type's extreme for min/max, else one.
func pick[T int8 | uint8 | int32 | int64](one, low, high float64, minV, maxV T) T {
	switch {
	case high == 1:
		return maxV
	case low == 1:
		return minV
	}
	return T(one)
}

func fill[T any](s []T, v T) {
	for i := range s {
		s[i] = v
	}
}
