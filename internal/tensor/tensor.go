// Package tensor is the shared vocabulary of Gorovod: element types, reduce
// operations and the half-precision conversions. It imports nothing of the
// project, so the coordinator, the data plane, the GPU binding and the API
// can all speak it without depending on each other.
package tensor

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid marks a call whose arguments cannot be executed (unknown dtype,
// a buffer whose length is not a multiple of the element size, a bad root).
var ErrInvalid = errors.New("invalid argument")

// DType is the element type of a buffer handed to a collective.
type DType uint8

// The element types every collective supports. Values are part of the wire
// format of negotiation messages: append, never renumber.
const (
	Float32 DType = iota + 1
	Float64
	Int32
	Int64
	Int8
	Uint8
	Float16
	BFloat16
	Uint64 // internal: bit vectors of the response-cache exchange
)

var dtypeNames = map[DType]string{
	Float32: "float32", Float64: "float64", Int32: "int32", Int64: "int64",
	Int8: "int8", Uint8: "uint8", Float16: "float16", BFloat16: "bfloat16", Uint64: "uint64",
}

func (d DType) String() string {
	if s, ok := dtypeNames[d]; ok {
		return s
	}
	return fmt.Sprintf("dtype(%d)", uint8(d))
}

// Size is the size of one element in bytes; 0 for an unknown dtype.
func (d DType) Size() int {
	switch d {
	case Int8, Uint8:
		return 1
	case Float16, BFloat16:
		return 2
	case Float32, Int32:
		return 4
	case Float64, Int64, Uint64:
		return 8
	}
	return 0
}

// IsFloat reports whether d is a floating-point type.
func (d DType) IsFloat() bool {
	switch d {
	case Float32, Float64, Float16, BFloat16:
		return true
	}
	return false
}

// ParseDType turns a name such as "float32" or "f32" into a DType.
func ParseDType(s string) (DType, error) {
	switch strings.ToLower(s) {
	case "float32", "f32", "float":
		return Float32, nil
	case "float64", "f64", "double":
		return Float64, nil
	case "int32", "i32", "int":
		return Int32, nil
	case "int64", "i64":
		return Int64, nil
	case "int8", "i8":
		return Int8, nil
	case "uint8", "u8":
		return Uint8, nil
	case "float16", "f16", "half":
		return Float16, nil
	case "bfloat16", "bf16":
		return BFloat16, nil
	case "uint64", "u64":
		return Uint64, nil
	}
	return 0, fmt.Errorf("%w: unknown dtype %q (want float32, float64, int32, int64, int8, uint8, float16, bfloat16)", ErrInvalid, s)
}

// ReduceOp is the reduction an allreduce or reduce-scatter applies.
type ReduceOp uint8

// Values are part of the wire format: append, never renumber.
const (
	Sum ReduceOp = iota + 1
	Average
	Min
	Max
	Product
	BitAnd // internal: integer dtypes only (cache-bit exchange)
	BitOr  // internal: integer dtypes only
)

var reduceOpNames = map[ReduceOp]string{
	Sum: "sum", Average: "avg", Min: "min", Max: "max", Product: "prod", BitAnd: "band", BitOr: "bor",
}

func (o ReduceOp) String() string {
	if s, ok := reduceOpNames[o]; ok {
		return s
	}
	return fmt.Sprintf("reduceop(%d)", uint8(o))
}

// ParseReduceOp turns "sum", "avg", "min", "max" or "prod" into a ReduceOp.
func ParseReduceOp(s string) (ReduceOp, error) {
	switch strings.ToLower(s) {
	case "sum":
		return Sum, nil
	case "avg", "average", "mean":
		return Average, nil
	case "min":
		return Min, nil
	case "max":
		return Max, nil
	case "prod", "product":
		return Product, nil
	case "band":
		return BitAnd, nil
	case "bor":
		return BitOr, nil
	}
	return 0, fmt.Errorf("%w: unknown reduce op %q (want sum, avg, min, max, prod)", ErrInvalid, s)
}

// F16 is an IEEE 754 half-precision value stored as its bits (element type
// of Float16 buffers).
type F16 uint16

// BF16 is a bfloat16 value, the top half of a float32, stored as its bits
// (element type of BFloat16 buffers).
type BF16 uint16
