package collective

import (
	"errors"

	"github.com/gorovod/gorovod/internal/tensor"

	"github.com/gorovod/gorovod/internal/transport"
)

// Error kinds callers can branch on with errors.Is.
var (
	ErrNotInitialized = errors.New("gorovod: not initialized (call collective.Init first)")
	ErrShutdown       = errors.New("gorovod: shut down")
	ErrPeerLost       = transport.ErrPeerLost
	ErrMismatch       = errors.New("gorovod: mismatched collective")
	ErrTimeout        = errors.New("gorovod: timed out")
	ErrInvalid        = errors.New("gorovod: invalid argument")
	ErrHostsUpdated   = errors.New("gorovod: hosts updated")
)

// ReduceOp is the reduction applied by Allreduce and ReduceScatter.
type ReduceOp = tensor.ReduceOp

// Reduction operators.
const (
	Sum     = tensor.Sum
	Average = tensor.Average
	Min     = tensor.Min
	Max     = tensor.Max
	Product = tensor.Product
)

// Float16 and BFloat16 are 16-bit floats stored as their bits.
type (
	Float16  = tensor.F16
	BFloat16 = tensor.BF16
)

// Element is the set of element types the collectives accept.
type Element interface {
	float32 | float64 | int32 | int64 | int8 | uint8 | Float16 | BFloat16
}
