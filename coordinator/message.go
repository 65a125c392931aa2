package coordinator

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
)

// Sentinel kinds of the errors Cycle and the decoders return.
var (
	// ErrMalformed: a negotiation message received from a peer does not decode.
	ErrMalformed = errors.New("coordinator: malformed negotiation message")
	// ErrInvalid: the caller broke the controller's contract (bad config,
	// two requests with one name in flight, an unknown process set).
	ErrInvalid = errors.New("coordinator: invalid argument")
)

// OpType is the kind of collective a Request asks for.
type OpType uint8

// Values are part of the wire format: append, never renumber.
const (
	OpAllreduce OpType = iota + 1
	OpAllgather
	OpBroadcast
	OpAlltoall
	OpReduceScatter
	OpBarrier
	OpJoin
)

var opNames = [...]string{
	OpAllreduce: "allreduce", OpAllgather: "allgather", OpBroadcast: "broadcast",
	OpAlltoall: "alltoall", OpReduceScatter: "reducescatter", OpBarrier: "barrier", OpJoin: "join",
}

func (o OpType) String() string {
	if int(o) < len(opNames) && opNames[o] != "" {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

func (o OpType) valid() bool { return o >= OpAllreduce && o <= OpJoin }

// ParseOpType turns "allreduce", "allgather", ... into an OpType.
func ParseOpType(s string) (OpType, error) {
	for i, n := range opNames {
		if n != "" && strings.EqualFold(n, s) {
			return OpType(i), nil
		}
	}
	return 0, fmt.Errorf("%w: unknown op %q", ErrInvalid, s)
}

// JoinName is the name under which Join requests are negotiated and the
// Join response is delivered; Cycle renames every OpJoin request to it.
const JoinName = "gorovod/join"

// CPU is the Device value of a host-memory tensor.
const CPU = -1

// Request is one rank's announcement that a named tensor is ready for a
// collective. Every rank must submit the same Name with compatible
// parameters; rank 0 checks that they are.
type Request struct {
	Rank     int // filled in by the controller
	Name     string
	Op       OpType
	DType    tensor.DType
	Shape    []int64 // element count is the product; [] is a scalar
	ReduceOp tensor.ReduceOp
	Root     int // broadcast: the rank whose data is sent
	Device   int // CPU (-1) or a GPU ordinal
	// Prescale multiplies the input before reduction, Postscale the result.
	Prescale, Postscale float64
	ProcessSet          int // 0 is the global set
	// Age is filled in by the controller when it sends the request to rank
	// 0: how long it has been queued on its rank (a cached request may wait
	// a while before it takes the slow path). Rank 0 dates the tensor's
	// stall clock from the oldest submission, without comparing clocks.
	Age time.Duration
}

// sameParams reports whether r and o describe the same tensor and call
// (everything but the rank), the response cache's HIT test.
func (r *Request) sameParams(o *Request) bool {
	if r.Name != o.Name || r.Op != o.Op || r.DType != o.DType || r.ReduceOp != o.ReduceOp ||
		r.Root != o.Root || r.Device != o.Device || r.Prescale != o.Prescale ||
		r.Postscale != o.Postscale || r.ProcessSet != o.ProcessSet || len(r.Shape) != len(o.Shape) {
		return false
	}
	for i := range r.Shape {
		if r.Shape[i] != o.Shape[i] {
			return false
		}
	}
	return true
}

// ErrorKind says why a Response failed.
type ErrorKind uint8

// Values are part of the wire format.
const (
	ErrorNone     ErrorKind = iota
	ErrorMismatch           // ranks submitted incompatible parameters for one name
	ErrorTimeout            // the stall inspector gave up waiting for some ranks
	ErrorShutdown           // the job is shutting down
	ErrorInvalid            // the request itself is unusable (bad root, unknown process set)
)

func (k ErrorKind) String() string {
	switch k {
	case ErrorNone:
		return "none"
	case ErrorMismatch:
		return "mismatch"
	case ErrorTimeout:
		return "timeout"
	case ErrorShutdown:
		return "shutdown"
	case ErrorInvalid:
		return "invalid"
	}
	return fmt.Sprintf("errorkind(%d)", uint8(k))
}

// Response tells every rank to execute one collective over Names, in that
// order (several names: a fused operation). All ranks of the process set
// receive the same responses in the same order.
type Response struct {
	Op         OpType
	Names      []string
	DType      tensor.DType
	ReduceOp   tensor.ReduceOp
	Root       int
	Device     int // CPU, or the lowest rank's GPU ordinal (each rank runs on its own GPU)
	Prescale   float64
	Postscale  float64
	ProcessSet int
	// Counts holds, per name, the element count: the common count for
	// allreduce, broadcast and reducescatter, the total gathered count for
	// allgather, 0 for the other ops.
	Counts []int64
	// FirstDims (allgather only) holds, per name, the first-dimension size
	// each member of the process set contributes, in member order; a
	// joined rank contributes 0.
	FirstDims [][]int64
	// RowElems (allgather only) holds, per name, the element count of one
	// first-dimension slice (the product of the other dimensions).
	RowElems []int64
	// JoinedRanks are the ranks that have joined and did not submit these
	// names: they take part with zeros (allreduce) or nothing (allgather).
	JoinedRanks []int
	// LastJoined (Join responses only) is the last rank to join.
	LastJoined int
	// Error is non-empty when negotiation failed for these names; it names
	// the ranks and values involved. Kind says why.
	Error     string
	ErrorKind ErrorKind
}

// ResponseList is the outcome of one negotiation cycle.
type ResponseList struct {
	Responses []Response
	// Shutdown is set on every rank once any rank asked to shut down.
	Shutdown bool
}

// Bytes is the size of the data this response moves per rank (the sum of
// Counts times the element size), used for fusion.
func (r *Response) Bytes() int64 {
	var n int64
	for _, c := range r.Counts {
		n += c
	}
	return n * int64(r.DType.Size())
}

// AllgatherBytes returns, for the i-th name of an allgather response, the
// number of bytes each member of the process set contributes.
func (r *Response) AllgatherBytes(i int) []int {
	if i < 0 || i >= len(r.FirstDims) || i >= len(r.RowElems) {
		return nil
	}
	out := make([]int, len(r.FirstDims[i]))
	for k, d := range r.FirstDims[i] {
		out[k] = int(d * r.RowElems[i] * int64(r.DType.Size()))
	}
	return out
}

// single returns a copy of the i-th name of r as a one-name response
// (splitting a fused response for the cache).
func (r *Response) single(i int) Response {
	s := *r
	s.Names = []string{r.Names[i]}
	s.Counts = nil
	if i < len(r.Counts) {
		s.Counts = []int64{r.Counts[i]}
	}
	s.FirstDims, s.RowElems = nil, nil
	if i < len(r.FirstDims) && i < len(r.RowElems) {
		s.FirstDims = [][]int64{append([]int64(nil), r.FirstDims[i]...)}
		s.RowElems = []int64{r.RowElems[i]}
	}
	s.JoinedRanks = append([]int(nil), r.JoinedRanks...)
	return s
}

// String renders r on one line, as the scripted tests print it.
func (r *Response) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s", r.Op)
	if r.ProcessSet != 0 {
		fmt.Fprintf(&b, " set=%d", r.ProcessSet)
	}
	if r.Error != "" {
		fmt.Fprintf(&b, " %s error: %s", r.ErrorKind, r.Error)
		return b.String()
	}
	switch r.Op {
	case OpJoin:
		fmt.Fprintf(&b, " last_joined=%d", r.LastJoined)
		return b.String()
	case OpBarrier:
	default:
		fmt.Fprintf(&b, " %s", r.DType)
	}
	switch r.Op {
	case OpAllreduce, OpReduceScatter:
		fmt.Fprintf(&b, " %s", r.ReduceOp)
		if r.Prescale != 1 || r.Postscale != 1 {
			fmt.Fprintf(&b, " scale=%g/%g", r.Prescale, r.Postscale)
		}
	case OpBroadcast:
		fmt.Fprintf(&b, " root=%d", r.Root)
	}
	if r.Device != CPU {
		fmt.Fprintf(&b, " device=%d", r.Device)
	}
	if len(r.JoinedRanks) > 0 {
		fmt.Fprintf(&b, " joined=%v", r.JoinedRanks)
	}
	for i, n := range r.Names {
		b.WriteString(" ")
		b.WriteString(n)
		switch {
		case r.Op == OpAllgather && i < len(r.FirstDims) && i < len(r.RowElems):
			fmt.Fprintf(&b, "%vx%d", r.FirstDims[i], r.RowElems[i])
		case r.Op != OpBarrier && r.Op != OpAlltoall && i < len(r.Counts):
			fmt.Fprintf(&b, "(%d)", r.Counts[i])
		}
	}
	return b.String()
}

func deviceString(d int) string {
	if d == CPU {
		return "cpu"
	}
	return fmt.Sprintf("gpu %d", d)
}

func shapeString(s []int64) string {
	return fmt.Sprint(s)
}

// elementCount is the product of shape, or an error for a negative or
// overflowing dimension.
func elementCount(shape []int64) (int64, error) {
	n := int64(1)
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("dimension %d of shape %v is negative", i, shape)
		}
		if d != 0 && n > (1<<62)/d {
			return 0, fmt.Errorf("shape %v has too many elements", shape)
		}
		n *= d
	}
	return n, nil
}
