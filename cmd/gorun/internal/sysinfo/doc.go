// Package sysinfo probes what a machine offers Gorovod, for `gorun --check`:
// which data-plane transports work (tcp always; shm when /dev/shm takes a
// file that can be mmapped shared), whether NCCL and the CUDA runtime load
// (version and paths), the GPUs NVML sees (or why NVML is unavailable), the
// network interfaces with their addresses, and the CPU's core count and the
// SIMD extensions the reduction kernels care about.
//
//	r := sysinfo.Probe(ctx)
//	r.Write(os.Stdout)
//
// Probe never fails: each part carries its own reason when something is
// missing, and a context that ends stops probing between parts (the report
// says so in Incomplete). NVML is reached through github.com/NVIDIA/go-nvml,
// which dlopens libnvidia-ml.so.1 at run time and needs cgo; built without
// cgo the GPU part reports that.
package sysinfo
