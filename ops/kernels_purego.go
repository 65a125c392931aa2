//go:build !cgo || purego || !amd64

package ops

// SIMDLevel reports -1: this build has only the portable Go kernels.
func SIMDLevel(max int) int { return -1 }

func reduceSIMD(DType, ReduceOp, []byte, []byte) bool { return false }

func scaleSIMD(DType, []byte, float64) bool { return false }
