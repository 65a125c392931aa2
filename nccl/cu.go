//go:build cuda

package nccl

import (
	"unsafe"

	"gorgonia.org/cu"
)

// This file builds only with -tags cuda: gorgonia.org/cu links libcuda and
// needs cuda.h at build time, which the default build must not.

// FromCUDevicePtr adopts memory allocated through gorgonia.org/cu (driver
// API pointers and runtime pointers are the same addresses).
func FromCUDevicePtr(p cu.DevicePtr) DevicePtr { return DevicePtr(p) }

// FromCUStream adopts a gorgonia.org/cu stream (a CUstream is a
// cudaStream_t).
func FromCUStream(s *cu.Stream) Stream {
	if s == nil {
		return 0
	}
	return Stream(uintptr(unsafe.Pointer(s.C())))
}
