package ops

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/gorovod/gorovod/internal/tensor"
)

// cgoMinBytes is the slice size from which the vectorised C kernels are
// used: a cgo call costs 50-100 ns, about what the Go loop needs for 1 KiB.
const cgoMinBytes = 1024

// Reduce computes dst = dst op src elementwise. Average reduces like Sum
// (the division happens once, after the whole reduction). BitAnd and BitOr
// are for integer dtypes only. dst and src must have the same length, a
// multiple of the element size.
func Reduce(dt tensor.DType, op tensor.ReduceOp, dst, src []byte) error {
	if err := checkReduce(dt, op); err != nil {
		return err
	}
	if len(dst) != len(src) {
		return fmt.Errorf("%w: reduce %s %s: dst has %d bytes, src %d", tensor.ErrInvalid, dt, op, len(dst), len(src))
	}
	if len(dst)%dt.Size() != 0 {
		return fmt.Errorf("%w: reduce %s: %d bytes is not a whole number of %d-byte elements", tensor.ErrInvalid, dt, len(dst), dt.Size())
	}
	reduce(dt, op, dst, src)
	return nil
}

// Scale multiplies every element of buf by factor. Floating-point types
// compute in their own precision (float16/bfloat16 via float32, rounding to
// nearest even); integer types compute in float64 and truncate toward zero.
// A factor of 1 leaves buf untouched.
func Scale(dt tensor.DType, buf []byte, factor float64) error {
	if dt.Size() == 0 || dt > tensor.Uint64 {
		return fmt.Errorf("%w: scale: unknown dtype %d", tensor.ErrInvalid, uint8(dt))
	}
	if len(buf)%dt.Size() != 0 {
		return fmt.Errorf("%w: scale %s: %d bytes is not a whole number of %d-byte elements", tensor.ErrInvalid, dt, len(buf), dt.Size())
	}
	if factor != 1 {
		scale(dt, buf, factor)
	}
	return nil
}

func checkReduce(dt tensor.DType, op tensor.ReduceOp) error {
	if dt.Size() == 0 {
		return fmt.Errorf("%w: unknown dtype %d", tensor.ErrInvalid, uint8(dt))
	}
	switch op {
	case tensor.Sum, tensor.Average, tensor.Min, tensor.Max, tensor.Product:
	case tensor.BitAnd, tensor.BitOr:
		if dt.IsFloat() {
			return fmt.Errorf("%w: reduce op %s needs an integer dtype, got %s", tensor.ErrInvalid, op, dt)
		}
	default:
		return fmt.Errorf("%w: unknown reduce op %d", tensor.ErrInvalid, uint8(op))
	}
	return nil
}

// reduce assumes validated arguments.
func reduce(dt tensor.DType, op tensor.ReduceOp, dst, src []byte) {
	if len(dst) >= cgoMinBytes && reduceSIMD(dt, op, dst, src) {
		return
	}
	reduceGo(dt, op, dst, src)
}

// reduceOut is reduce that also writes the result to out (a ring step's
// forwarded copy), in one pass where a C kernel does it. out must not
// overlap dst or src.
func reduceOut(dt tensor.DType, op tensor.ReduceOp, dst, src, out []byte) {
	if len(dst) >= cgoMinBytes && reduceOutSIMD(dt, op, dst, src, out) {
		return
	}
	reduceGo(dt, op, dst, src)
	copy(out, dst)
}

func scale(dt tensor.DType, buf []byte, factor float64) {
	if len(buf) >= cgoMinBytes && scaleSIMD(dt, buf, factor) {
		return
	}
	scaleGo(dt, buf, factor)
}

// reduceGo is the portable kernel; the SIMD kernels must match it bit for
// bit (NaN payloads aside).
func reduceGo(dt tensor.DType, op tensor.ReduceOp, dst, src []byte) {
	switch dt {
	case tensor.Float32:
		reduceNum(op, as[float32](dst), as[float32](src))
	case tensor.Float64:
		reduceNum(op, as[float64](dst), as[float64](src))
	case tensor.Int32:
		reduceInt(op, as[int32](dst), as[int32](src))
	case tensor.Int64:
		reduceInt(op, as[int64](dst), as[int64](src))
	case tensor.Int8:
		reduceInt(op, as[int8](dst), as[int8](src))
	case tensor.Uint8:
		reduceInt(op, as[uint8](dst), as[uint8](src))
	case tensor.Uint64:
		reduceInt(op, as[uint64](dst), as[uint64](src))
	case tensor.Float16:
		if op == tensor.Sum || op == tensor.Average {
			sumF16(as[uint16](dst), as[uint16](src))
		} else {
			reduceHalf(op, as[uint16](dst), as[uint16](src), tensor.F16ToF32Bits, tensor.F32ToF16Bits)
		}
	case tensor.BFloat16:
		if op == tensor.Sum || op == tensor.Average {
			sumBF16(as[uint16](dst), as[uint16](src))
		} else {
			reduceHalf(op, as[uint16](dst), as[uint16](src), bf16ToF32Bits, tensor.F32ToBF16Bits)
		}
	}
}

func f32frombits(u uint32) float32 { return math.Float32frombits(u) }
func f32bits(f float32) uint32     { return math.Float32bits(f) }

func bf16ToF32Bits(h uint16) uint32 { return uint32(h) << 16 }

// as views b as a slice of T (b's length is a multiple of T's size).
func as[T any](b []byte) []T {
	var z T
	n := len(b) / int(unsafe.Sizeof(z))
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), n)
}

type number interface {
	~int8 | ~uint8 | ~int32 | ~int64 | ~uint64 | ~float32 | ~float64
}

type integer interface {
	~int8 | ~uint8 | ~int32 | ~int64 | ~uint64
}

// reduceNum: Min and Max are written as "s < d ? s : d" (and its mirror)
// so that NaN handling matches the C kernels (MINPS/MAXPS semantics).
func reduceNum[T number](op tensor.ReduceOp, d, s []T) {
	s = s[:len(d)]
	switch op {
	case tensor.Sum, tensor.Average:
		for i := range d {
			d[i] += s[i]
		}
	case tensor.Min:
		for i := range d {
			if s[i] < d[i] {
				d[i] = s[i]
			}
		}
	case tensor.Max:
		for i := range d {
			if s[i] > d[i] {
				d[i] = s[i]
			}
		}
	case tensor.Product:
		for i := range d {
			d[i] *= s[i]
		}
	}
}

func reduceInt[T integer](op tensor.ReduceOp, d, s []T) {
	s = s[:len(d)]
	switch op {
	case tensor.BitAnd:
		for i := range d {
			d[i] &= s[i]
		}
	case tensor.BitOr:
		for i := range d {
			d[i] |= s[i]
		}
	default:
		reduceNum(op, d, s)
	}
}

// sumF16 and sumBF16 are the hot cases of the portable build, written out
// so the conversions inline.
func sumF16(d, s []uint16) {
	s = s[:len(d)]
	for i := range d {
		d[i] = tensor.F32ToF16Bits(f32bits(f32frombits(tensor.F16ToF32Bits(d[i])) + f32frombits(tensor.F16ToF32Bits(s[i]))))
	}
}

func sumBF16(d, s []uint16) {
	s = s[:len(d)]
	for i := range d {
		d[i] = tensor.F32ToBF16Bits(f32bits(f32frombits(uint32(d[i])<<16) + f32frombits(uint32(s[i])<<16)))
	}
}

func reduceHalf(op tensor.ReduceOp, d, s []uint16, widen func(uint16) uint32, narrow func(uint32) uint16) {
	s = s[:len(d)]
	for i := range d {
		a := f32frombits(widen(d[i]))
		b := f32frombits(widen(s[i]))
		var r float32
		switch op {
		case tensor.Sum, tensor.Average:
			r = a + b
		case tensor.Min:
			r = a
			if b < a {
				r = b
			}
		case tensor.Max:
			r = a
			if b > a {
				r = b
			}
		case tensor.Product:
			r = a * b
		}
		d[i] = narrow(f32bits(r))
	}
}

func scaleGo(dt tensor.DType, buf []byte, factor float64) {
	switch dt {
	case tensor.Float32:
		f := float32(factor)
		d := as[float32](buf)
		for i := range d {
			d[i] *= f
		}
	case tensor.Float64:
		d := as[float64](buf)
		for i := range d {
			d[i] *= factor
		}
	case tensor.Float16:
		scaleHalf(as[uint16](buf), float32(factor), tensor.F16ToF32Bits, tensor.F32ToF16Bits)
	case tensor.BFloat16:
		scaleHalf(as[uint16](buf), float32(factor), bf16ToF32Bits, tensor.F32ToBF16Bits)
	case tensor.Int32:
		scaleInt(as[int32](buf), factor)
	case tensor.Int64:
		scaleInt(as[int64](buf), factor)
	case tensor.Int8:
		scaleInt(as[int8](buf), factor)
	case tensor.Uint8:
		scaleInt(as[uint8](buf), factor)
	case tensor.Uint64:
		scaleInt(as[uint64](buf), factor)
	}
}

func scaleHalf(d []uint16, f float32, widen func(uint16) uint32, narrow func(uint32) uint16) {
	for i := range d {
		d[i] = narrow(f32bits(f32frombits(widen(d[i])) * f))
	}
}

func scaleInt[T integer](d []T, f float64) {
	for i := range d {
		d[i] = T(float64(d[i]) * f)
	}
}

// divideInt divides every element of an integer buffer by n, truncating
// (Average of integer dtypes).
func divideInt(dt tensor.DType, buf []byte, n int) {
	switch dt {
	case tensor.Int32:
		divInt(as[int32](buf), int32(n))
	case tensor.Int64:
		divInt(as[int64](buf), int64(n))
	case tensor.Int8:
		// Sizes past 127 make every quotient 0 (or -1 for -128/-128): use int.
		d := as[int8](buf)
		for i := range d {
			d[i] = int8(int(d[i]) / n)
		}
	case tensor.Uint8:
		d := as[uint8](buf)
		for i := range d {
			d[i] = uint8(int(d[i]) / n)
		}
	case tensor.Uint64:
		divInt(as[uint64](buf), uint64(n))
	}
}

func divInt[T integer](d []T, n T) {
	for i := range d {
		d[i] /= n
	}
}
