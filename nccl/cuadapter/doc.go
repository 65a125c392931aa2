// Package cuadapter adopts device memory and streams from gorgonia.org/cu
// for the nccl package (and so for Gorovod's device tensors).
//
// It is a module of its own (nccl/cuadapter/go.mod, with a replace
// directive to the main module) so that the main module's dependency graph
// does not carry cu and the modules cu brings. Its functions build only
// with -tags cuda, because gorgonia.org/cu needs CUDA's cuda.h and libcuda
// at build time: `make cuadapter` fetches the two files once (see
// scripts/cuda-stub.sh) and builds and vets this module against them.
package cuadapter
