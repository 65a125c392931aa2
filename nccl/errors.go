package nccl

import (
	"errors"
	"fmt"
)

// Error kinds callers can branch on with errors.Is.
var (
	// ErrUnavailable: the NCCL or CUDA runtime library could not be loaded
	// (or the binary was built without cgo). The wrapping error names the
	// library and carries the dlopen/dlsym text.
	ErrUnavailable = errors.New("nccl: unavailable")
	// ErrUnsupported: the loaded NCCL cannot do what was asked (a dtype, a
	// reduction, point-to-point before 2.7).
	ErrUnsupported = errors.New("nccl: unsupported")
	// ErrAborted: the communicator was aborted (by Abort, a context that ended
	// during a blocking NCCL call, or the async-error watchdog).
	ErrAborted = errors.New("nccl: communicator aborted")
	// ErrClosed: the communicator was closed.
	ErrClosed = errors.New("nccl: communicator closed")
	// ErrInvalid: an argument is out of range (rank, count, root, device).
	ErrInvalid = errors.New("nccl: invalid argument")
)

// Result is an ncclResult_t.
type Result int32

// Public values of ncclResult_t.
const (
	Success            Result = 0
	UnhandledCudaError Result = 1
	SystemError        Result = 2
	InternalError      Result = 3
	InvalidArgument    Result = 4
	InvalidUsage       Result = 5
	RemoteError        Result = 6 // since 2.12
	InProgress         Result = 7 // since 2.14 (nonblocking communicators)
)

var resultNames = [...]string{
	"ncclSuccess", "ncclUnhandledCudaError", "ncclSystemError", "ncclInternalError",
	"ncclInvalidArgument", "ncclInvalidUsage", "ncclRemoteError", "ncclInProgress",
}

func (r Result) String() string {
	if r >= 0 && int(r) < len(resultNames) {
		return resultNames[r]
	}
	return fmt.Sprintf("ncclResult(%d)", int32(r))
}

// CallError is a failed NCCL call: which call, its result code, NCCL's text
// for the code and, where NCCL provides it (2.13+), the communicator's last
// error message.
type CallError struct {
	Call   string // e.g. "ncclAllReduce"
	Result Result
	Text   string // ncclGetErrorString
	Detail string // ncclGetLastError, may be empty
}

func (e *CallError) Error() string {
	s := fmt.Sprintf("nccl: %s: %s (%s)", e.Call, e.Text, e.Result)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// CUDAError is a failed CUDA runtime call.
type CUDAError struct {
	Call string // e.g. "cudaMalloc"
	Code int    // cudaError_t
	Text string // cudaGetErrorString
}

func (e *CUDAError) Error() string {
	return fmt.Sprintf("nccl: %s: %s (cudaError %d)", e.Call, e.Text, e.Code)
}
