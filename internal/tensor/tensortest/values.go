// Package tensortest holds the test data the collective checks share: a
// value per (rank, element) whose sum, product, min, max and average over
// 2 or 4 ranks is exact in every dtype, the expected reduction, and the
// little-endian encoding of values in a dtype.
package tensortest

import (
	"encoding/binary"
	"math"

	"github.com/gorovod/gorovod/internal/tensor"
)

// Value is rank's element i.
func Value(dt tensor.DType, rank, i int) float64 {
	if dt == tensor.Uint8 || dt == tensor.Uint64 {
		return float64(1 + (rank+i)%3)
	}
	return []float64{-2, -1, 1, 2, 3}[(rank*3+i)%5]
}

// Values is n elements of rank's data from element off.
func Values(dt tensor.DType, rank, off, n int) []float64 {
	vs := make([]float64, n)
	for i := range vs {
		vs[i] = Value(dt, rank, off+i)
	}
	return vs
}

// Reduced is element i of the reduction over ranks 0..size-1.
func Reduced(dt tensor.DType, op tensor.ReduceOp, size, i int) float64 {
	acc := Value(dt, 0, i)
	for k := 1; k < size; k++ {
		x := Value(dt, k, i)
		switch op {
		case tensor.Product:
			acc *= x
		case tensor.Min:
			acc = math.Min(acc, x)
		case tensor.Max:
			acc = math.Max(acc, x)
		default:
			acc += x
		}
	}
	if op == tensor.Average {
		if dt.IsFloat() {
			return acc / float64(size)
		}
		return float64(int64(acc) / int64(size))
	}
	return acc
}

// Encode is vs in dt's little-endian layout.
func Encode(dt tensor.DType, vs []float64) []byte {
	es := dt.Size()
	b := make([]byte, len(vs)*es)
	le := binary.LittleEndian
	for i, v := range vs {
		p := b[i*es:]
		switch dt {
		case tensor.Int8:
			p[0] = byte(int8(v))
		case tensor.Uint8:
			p[0] = byte(v)
		case tensor.Int32:
			le.PutUint32(p, uint32(int32(v)))
		case tensor.Int64:
			le.PutUint64(p, uint64(int64(v)))
		case tensor.Uint64:
			le.PutUint64(p, uint64(v))
		case tensor.Float16:
			le.PutUint16(p, uint16(tensor.F16FromFloat32(float32(v))))
		case tensor.BFloat16:
			le.PutUint16(p, uint16(tensor.BF16FromFloat32(float32(v))))
		case tensor.Float32:
			le.PutUint32(p, math.Float32bits(float32(v)))
		case tensor.Float64:
			le.PutUint64(p, math.Float64bits(v))
		}
	}
	return b
}

// Decode is the value of one element of dt at the start of b.
func Decode(dt tensor.DType, b []byte) float64 {
	switch dt {
	case tensor.Int8:
		return float64(int8(b[0]))
	case tensor.Uint8:
		return float64(b[0])
	case tensor.Int32:
		return float64(int32(binary.LittleEndian.Uint32(b)))
	case tensor.Int64:
		return float64(int64(binary.LittleEndian.Uint64(b)))
	case tensor.Uint64:
		return float64(binary.LittleEndian.Uint64(b))
	case tensor.Float16:
		return float64(tensor.F16(binary.LittleEndian.Uint16(b)).Float32())
	case tensor.BFloat16:
		return float64(tensor.BF16(binary.LittleEndian.Uint16(b)).Float32())
	case tensor.Float32:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(b)))
	}
	return math.Float64frombits(binary.LittleEndian.Uint64(b))
}
