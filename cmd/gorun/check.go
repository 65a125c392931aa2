package main

import (
	"github.com/gorovod/gorovod/cmd/gorun/internal/sysinfo"
	"github.com/gorovod/gorovod/nccl"
)

// probeNCCL reports the NCCL library and CUDA runtime for `gorun --check`:
// what was loaded from where, or why nothing was.
func probeNCCL() sysinfo.NCCL {
	lib, err := nccl.Load()
	if err != nil {
		return sysinfo.NCCL{Reason: err.Error()}
	}
	n := sysinfo.NCCL{Available: true, Version: lib.NCCLVersion().String()}
	n.Path, n.CUDARTPath = lib.Paths()
	if v, err := lib.RuntimeVersion(); err == nil {
		n.RuntimeVersion = v
	}
	if d, err := lib.DeviceCount(); err == nil {
		n.CUDADevices = d
	} else {
		n.Reason = "cudaGetDeviceCount: " + err.Error()
	}
	return n
}
