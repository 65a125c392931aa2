package nccl

// handle is an ncclComm_t held as an integer: it points into C memory the Go
// side never dereferences.
type handle uintptr

// initSlot is C memory NCCL writes the new ncclComm_t into. It is separate
// from the call so that another goroutine can read it while a blocking
// ncclCommInitRank is still running and abort the half-built communicator.
type initSlot interface {
	comm() handle
	release()
}

// p2p is one ncclSend or ncclRecv inside a group.
type p2p struct {
	send  bool
	peer  int
	ptr   DevicePtr
	count int
}

// shim is the raw call layer over the dlopened libraries. The cgo build
// provides it; without cgo there is none and Load reports ErrUnavailable.
//
// NCCL calls return an ncclResult_t, CUDA calls a cudaError_t. Calls that
// take a device first make it current on the calling OS thread (CUDA's
// current device is per thread and goroutines migrate); when that fails
// they return the negated cudaError_t of cudaSetDevice.
type shim interface {
	paths() (ncclPath, cudartPath string)

	version() (int, Result)
	errorString(r Result) string
	lastError(c handle) string // "" when NCCL has no ncclGetLastError
	uniqueID(id *UniqueID) Result
	hasInitConfig() bool
	hasSendRecv() bool
	newSlot() initSlot
	commInit(s initSlot, nranks, rank int, id *UniqueID, device int, nonblocking bool) Result
	commDestroy(c handle) Result
	commAbort(c handle) Result
	asyncError(c handle) (state, call Result)
	allReduce(dev int, c handle, send, recv DevicePtr, count int, dt DataType, op RedOp, s Stream) Result
	allGather(dev int, c handle, send, recv DevicePtr, sendCount int, dt DataType, s Stream) Result
	broadcast(dev int, c handle, send, recv DevicePtr, count int, dt DataType, root int, s Stream) Result
	reduceScatter(dev int, c handle, send, recv DevicePtr, recvCount int, dt DataType, op RedOp, s Stream) Result
	group(dev int, c handle, ps []p2p, dt DataType, s Stream) Result

	cudaErrorString(code int) string
	deviceCount() (int, int)
	runtimeVersion() (int, int) // code -1: no cudaRuntimeGetVersion
	malloc(dev, n int) (DevicePtr, int)
	free(dev int, p DevicePtr) int
	copyToDevice(dev int, dst DevicePtr, src []byte) int
	copyFromDevice(dev int, dst []byte, src DevicePtr) int
	copyAsync(dev int, dst, src DevicePtr, n int, s Stream) int // device to device; -1: no cudaMemcpyAsync
	streamCreate(dev int) (Stream, int)
	streamDestroy(dev int, s Stream) int
	streamQuery(dev int, s Stream) int // -1: no cudaStreamQuery
	streamSynchronize(dev int, s Stream) int
	// Events (cudaEventCreateWithFlags with cudaEventDisableTiming,
	// cudaEventRecord, cudaEventQuery, cudaEventDestroy); eventCreate
	// returns code -1 when the runtime lacks any of them.
	eventCreate(dev int) (event, int)
	eventRecord(dev int, e event, s Stream) int
	eventQuery(dev int, e event) int
	eventDestroy(dev int, e event) int
}

// event is a cudaEvent_t held as an integer.
type event uintptr

// cudaErrorNotReady is cudaStreamQuery's "work still pending".
const cudaErrorNotReady = 600
