//go:build cgo && !purego

package ops

// #cgo CFLAGS: -O3 -march=x86-64-v2
// #include <stddef.h>
// int gv_reduce(int dt, int op, void *d, const void *s, size_t n);
// int gv_reduce_out(int dt, int op, void *d, const void *s, void *o, size_t n);
// int gv_scale(int dt, void *d, size_t n, double f);
// int gv_set_level(int max_level);
import "C"

import (
	"unsafe"

	"github.com/gorovod/gorovod/internal/tensor"
)

// SIMDLevel caps the instruction set of the C kernels (0 baseline
// x86-64-v2, 1 AVX2+F16C, 2 AVX-512) and returns the level in use, which
// is lower when the CPU lacks the features. For tests and benchmarks; call
// it only while no reduction runs.
func SIMDLevel(max int) int { return int(C.gv_set_level(C.int(max))) }

func reduceSIMD(dt tensor.DType, op tensor.ReduceOp, dst, src []byte) bool {
	n := len(dst) / dt.Size()
	return C.gv_reduce(C.int(dt), C.int(op), unsafe.Pointer(unsafe.SliceData(dst)), unsafe.Pointer(unsafe.SliceData(src)), C.size_t(n)) != 0
}

func reduceOutSIMD(dt tensor.DType, op tensor.ReduceOp, dst, src, out []byte) bool {
	n := len(dst) / dt.Size()
	return C.gv_reduce_out(C.int(dt), C.int(op), unsafe.Pointer(unsafe.SliceData(dst)), unsafe.Pointer(unsafe.SliceData(src)),
		unsafe.Pointer(unsafe.SliceData(out)), C.size_t(n)) != 0
}

func scaleSIMD(dt tensor.DType, buf []byte, factor float64) bool {
	n := len(buf) / dt.Size()
	return C.gv_scale(C.int(dt), unsafe.Pointer(unsafe.SliceData(buf)), C.size_t(n), C.double(factor)) != 0
}
