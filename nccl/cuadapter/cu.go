//go:build cuda

package cuadapter

import (
	"unsafe"

	"gorgonia.org/cu"

	"github.com/gorovod/gorovod/nccl"
)

// DevicePtr adopts memory allocated through gorgonia.org/cu (driver API
// pointers and runtime pointers are the same addresses).
func DevicePtr(p cu.DevicePtr) nccl.DevicePtr { return nccl.DevicePtr(p) }

// Stream adopts a gorgonia.org/cu stream (a CUstream is a cudaStream_t).
// A nil stream is the legacy default stream.
func Stream(s *cu.Stream) nccl.Stream {
	if s == nil {
		return 0
	}
	return nccl.Stream(uintptr(unsafe.Pointer(s.C())))
}
