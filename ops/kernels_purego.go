//go:build !cgo || purego || !amd64

package ops

import "github.com/gorovod/gorovod/internal/tensor"

// SIMDLevel reports -1: this build has only the portable Go kernels.
func SIMDLevel(max int) int { return -1 }

func reduceSIMD(tensor.DType, tensor.ReduceOp, []byte, []byte) bool { return false }

func reduceOutSIMD(tensor.DType, tensor.ReduceOp, []byte, []byte, []byte) bool { return false }

func scaleSIMD(tensor.DType, []byte, float64) bool { return false }
