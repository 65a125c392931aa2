package nccl

import (
	"fmt"

	"github.com/gorovod/gorovod/internal/tensor"
)

// UniqueID is an ncclUniqueId: 128 opaque bytes made by one rank with
// GetUniqueID and handed to every rank of the communicator out of band.
type UniqueID [128]byte

// DevicePtr is an address in GPU memory (a CUdeviceptr / void* from
// cudaMalloc). It is never dereferenced on the Go side.
type DevicePtr uintptr

// Stream is a cudaStream_t; 0 is the default (legacy) stream.
type Stream uintptr

// Version is an NCCL release number.
type Version struct{ Major, Minor, Patch int }

// decodeVersion turns ncclGetVersion's integer into a Version. NCCL 2.9
// changed the encoding from major*1000+minor*100+patch to
// major*10000+minor*100+patch, which is why 2.9.x codes are >= 10000.
func decodeVersion(code int) Version {
	if code >= 10000 {
		return Version{code / 10000, code % 10000 / 100, code % 100}
	}
	return Version{code / 1000, code % 1000 / 100, code % 100}
}

// AtLeast reports whether v >= major.minor.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || v.Major == major && v.Minor >= minor
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// DataType is an ncclDataType_t.
type DataType int32

// Public values of ncclDataType_t.
const (
	Int8     DataType = 0
	Uint8    DataType = 1
	Int32    DataType = 2
	Uint32   DataType = 3
	Int64    DataType = 4
	Uint64   DataType = 5
	Float16  DataType = 6
	Float32  DataType = 7
	Float64  DataType = 8
	BFloat16 DataType = 9 // since 2.10 in this binding
)

var dataTypeNames = [...]string{
	"ncclInt8", "ncclUint8", "ncclInt32", "ncclUint32", "ncclInt64",
	"ncclUint64", "ncclFloat16", "ncclFloat32", "ncclFloat64", "ncclBfloat16",
}

func (d DataType) String() string {
	if d >= 0 && int(d) < len(dataTypeNames) {
		return dataTypeNames[d]
	}
	return fmt.Sprintf("ncclDataType(%d)", int32(d))
}

// RedOp is an ncclRedOp_t.
type RedOp int32

// Public values of ncclRedOp_t.
const (
	OpSum  RedOp = 0
	OpProd RedOp = 1
	OpMax  RedOp = 2
	OpMin  RedOp = 3
	OpAvg  RedOp = 4 // since 2.10
)

var redOpNames = [...]string{"ncclSum", "ncclProd", "ncclMax", "ncclMin", "ncclAvg"}

func (o RedOp) String() string {
	if o >= 0 && int(o) < len(redOpNames) {
		return redOpNames[o]
	}
	return fmt.Sprintf("ncclRedOp(%d)", int32(o))
}

// MapDType returns the NCCL data type for dt on NCCL version v.
func MapDType(dt tensor.DType, v Version) (DataType, error) {
	switch dt {
	case tensor.Int8:
		return Int8, nil
	case tensor.Uint8:
		return Uint8, nil
	case tensor.Int32:
		return Int32, nil
	case tensor.Int64:
		return Int64, nil
	case tensor.Uint64:
		return Uint64, nil
	case tensor.Float16:
		return Float16, nil
	case tensor.Float32:
		return Float32, nil
	case tensor.Float64:
		return Float64, nil
	case tensor.BFloat16:
		if !v.AtLeast(2, 10) {
			return 0, fmt.Errorf("%w: dtype %v needs NCCL >= 2.10, loaded %v", ErrUnsupported, dt, v)
		}
		return BFloat16, nil
	}
	return 0, fmt.Errorf("%w: dtype %v has no NCCL equivalent", ErrUnsupported, dt)
}

// Reduction is how a ReduceOp runs on NCCL: the NCCL operator and, when
// Postscale is set, a division by the communicator size that the caller
// applies to the result (Average before NCCL 2.10 runs as Sum).
type Reduction struct {
	DType     DataType
	Op        RedOp
	Postscale bool
}

// MapReduction returns how (dt, op) runs on NCCL version v, or an error
// naming the combination NCCL cannot do.
func MapReduction(dt tensor.DType, op tensor.ReduceOp, v Version) (Reduction, error) {
	ndt, err := MapDType(dt, v)
	if err != nil {
		return Reduction{}, err
	}
	r := Reduction{DType: ndt}
	switch op {
	case tensor.Sum:
		r.Op = OpSum
	case tensor.Product:
		r.Op = OpProd
	case tensor.Min:
		r.Op = OpMin
	case tensor.Max:
		r.Op = OpMax
	case tensor.Average:
		if v.AtLeast(2, 10) {
			r.Op = OpAvg
		} else {
			r.Op, r.Postscale = OpSum, true
		}
	default:
		return Reduction{}, fmt.Errorf("%w: reduce op %v on %v has no NCCL equivalent", ErrUnsupported, op, dt)
	}
	return r, nil
}
