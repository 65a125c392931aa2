package collective

import (
	"github.com/gorovod/gorovod/internal/errkind"
	"github.com/gorovod/gorovod/internal/tensor"
)

// Error kinds callers can branch on with errors.Is. Every error a call
// returns matches one of them.
var (
	ErrNotInitialized = errkind.NotInitialized
	ErrShutdown       = errkind.Shutdown
	ErrPeerLost       = errkind.PeerLost
	ErrMismatch       = errkind.Mismatch
	ErrTimeout        = errkind.Timeout
	ErrInvalid        = errkind.Invalid
	ErrHostsUpdated   = errkind.HostsUpdated
	ErrCanceled       = errkind.Canceled
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
