package collective

import (
	"math"
	"unsafe"

	"github.com/gorovod/gorovod/ops"
)

// identityFill sets every element of buf to the identity of op for dt: what
// a joined rank contributes so that it does not change the result.
func identityFill(dt ops.DType, op ops.ReduceOp, buf []byte) {
	var one, low, high float64
	switch op {
	case ops.Sum, ops.Average:
		clear(buf)
		return
	case ops.Product:
		one = 1
	case ops.Min:
		one = math.Inf(1)
		high = 1
	case ops.Max:
		one = math.Inf(-1)
		low = 1
	}
	n := len(buf) / dt.Size()
	if n == 0 {
		return
	}
	p := unsafe.Pointer(&buf[0])
	switch dt {
	case ops.Float32:
		fill(unsafe.Slice((*float32)(p), n), float32(one))
	case ops.Float64:
		fill(unsafe.Slice((*float64)(p), n), one)
	case ops.Float16:
		fill(unsafe.Slice((*ops.F16)(p), n), ops.F16FromFloat32(float32(one)))
	case ops.BFloat16:
		fill(unsafe.Slice((*ops.BF16)(p), n), ops.BF16FromFloat32(float32(one)))
	case ops.Int32:
		fill(unsafe.Slice((*int32)(p), n), pick[int32](one, low, high, math.MinInt32, math.MaxInt32))
	case ops.Int64:
		fill(unsafe.Slice((*int64)(p), n), pick[int64](one, low, high, math.MinInt64, math.MaxInt64))
	case ops.Int8:
		fill(unsafe.Slice((*int8)(p), n), pick[int8](one, low, high, math.MinInt8, math.MaxInt8))
	case ops.Uint8:
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
