// Package nccl is Gorovod's GPU backend: a thin binding to NVIDIA's NCCL
// that needs no CUDA at build time.
//
// # Loading
//
// The package dlopens libnccl.so.2 and the CUDA runtime (libcudart.so, or a
// versioned name such as libcudart.so.12) when Load is called, resolves the
// entry points it uses with dlsym, and declares the few C types it needs
// itself (ncclUniqueId is 128 bytes, ncclComm_t and cudaStream_t are
// pointers, results and enums are ints with NCCL's public values). So the
// package builds everywhere, with or without cgo, and a machine without
// GPUs gets an error wrapping ErrUnavailable that names the library that
// failed to load and the loader's reason:
//
//	lib, err := nccl.Load()
//	if errors.Is(err, nccl.ErrUnavailable) { /* use the CPU path */ }
//
// LoadFrom loads from explicit paths. Optional entry points are used when
// present: ncclCommInitRankConfig (2.14, nonblocking init), ncclGetLastError
// (2.13), ncclSend/ncclRecv (2.7, alltoall), cudaStreamQuery.
//
// # Communicators
//
// Rank 0 calls GetUniqueID and sends the 128 bytes to the other ranks over
// the CPU control plane; every rank then calls NewComm with the same id and
// size. NewComm honours its context: on NCCL 2.14+ the communicator is made
// nonblocking and its progress polled; on older NCCL the blocking
// ncclCommInitRank runs on its own thread while NewComm aborts the
// communicator NCCL publishes if the context ends first.
//
// Collectives (Allreduce, AllGather, Broadcast, ReduceScatter, Alltoall and
// AlltoallV as grouped ncclSend/ncclRecv) enqueue work on a CUDA stream and
// return; Synchronize waits for the stream under a context. A context that
// ends while a call waits (a nonblocking communicator's ncclInProgress, a
// blocking one stuck inside NCCL, a stream that never drains) aborts the
// communicator: NCCL offers no way to cancel a single collective. Every call that
// touches the GPU makes the communicator's device current on its OS thread
// first, because CUDA's current device is per thread and goroutines move.
// Calls on one Comm are serialised (NCCL communicators are not thread safe).
//
// # Failure handling
//
// Each Comm owns a watchdog goroutine that polls ncclCommGetAsyncError and
// aborts the communicator on the first error, so that a collective stuck on
// a lost peer returns; Close stops it. After an abort every call returns an
// error wrapping ErrAborted and the cause; Done is closed. NCCL failures are
// *CallError values carrying the result code, ncclGetErrorString's text and
// ncclGetLastError's detail; CUDA failures are *CUDAError.
//
// # Executor
//
// An Executor runs the work of Gorovod's device backend on one
// communicator: fused allreduce through a device fusion buffer (async
// device-to-device copies, one NCCL call), scaling and Average without
// ncclAvg as a host step, a joined rank's identity contribution, and
// allgather/alltoall with uneven counts as grouped ncclSend/ncclRecv. Calls
// counts the NCCL collectives it enqueued. Package collective/ncclbackend
// plugs it into the background loop.
//
// # Reductions
//
// MapReduction maps ops.DType/ops.ReduceOp to NCCL's enums. Average uses
// ncclAvg on NCCL 2.10+ and otherwise runs as Sum with Postscale set: the
// caller divides by the communicator size. bfloat16 needs 2.10+. Bitwise
// reductions have no NCCL equivalent and are refused with ErrUnsupported.
//
// The nested module nccl/cuadapter adopts memory and streams from
// gorgonia.org/cu (it builds with -tags cuda against cuda.h); nccl/fakenccl
// builds the multi-process test double of NCCL and the CUDA runtime the
// tests run on (docs/gpu.md).
package nccl
