package collective

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"unsafe"

	"github.com/gorovod/gorovod/internal/tensor"

	"github.com/gorovod/gorovod/coordinator"
	"github.com/gorovod/gorovod/internal/config"
	"github.com/gorovod/gorovod/internal/timeline"
	"github.com/gorovod/gorovod/ops"
)

// Config is every tuning knob of a worker (see internal/config for fields).
type Config = config.Config

// DefaultConfig returns the defaults; Init applies GOROVOD_* env on top.
func DefaultConfig() Config { return config.Default() }

func topo() topology {
	e, err := current()
	if err != nil {
		return topology{Rank: -1, Size: -1, LocalRank: -1, LocalSize: -1, CrossRank: -1, CrossSize: -1}
	}
	return e.topo
}

// Rank is this process's global rank, or -1 before Init.
func Rank() int { return topo().Rank }

// Size is the number of processes in the job, or -1 before Init.
func Size() int { return topo().Size }

// LocalRank is the rank among processes on this host, or -1 before Init.
func LocalRank() int { return topo().LocalRank }

// LocalSize is the number of processes on this host, or -1 before Init.
func LocalSize() int { return topo().LocalSize }

// CrossRank is the index of this host among the job's hosts, or -1 before Init.
func CrossRank() int { return topo().CrossRank }

// CrossSize is the number of hosts, or -1 before Init.
func CrossSize() int { return topo().CrossSize }

// Handle is the result of an asynchronous collective.
type Handle struct{ en *entry }

// Wait blocks until the collective finished and returns its error. When
// ctx (or the context the call was made with) ends first, the call is
// withdrawn if its collective has not started: on this rank it fails with
// ErrCanceled (also ErrTimeout when a deadline passed), rank 0 forgets this
// rank's request, the other ranks' calls of that name stay pending, and the
// name may be used again. A collective that has started runs to its end;
// Wait then returns its result. Either way, once Wait returns the buffers
// are no longer used. Wait returns within the loop's current data-plane op
// and one negotiation cycle after ctx ends.
func (h *Handle) Wait(ctx context.Context) error {
	select {
	case <-h.en.done:
		return h.en.err
	case <-ctx.Done():
		h.en.withdraw(ctx.Err())
		<-h.en.done
		return h.en.err
	}
}

// Done is closed when the collective finished.
func (h *Handle) Done() <-chan struct{} { return h.en.done }

func failed(err error) *Handle {
	en := &entry{done: make(chan struct{})}
	en.finish(err)
	return &Handle{en: en}
}

func dtypeOf[T Element]() tensor.DType {
	var z T
	switch any(z).(type) {
	case float32:
		return tensor.Float32
	case float64:
		return tensor.Float64
	case int32:
		return tensor.Int32
	case int64:
		return tensor.Int64
	case int8:
		return tensor.Int8
	case uint8:
		return tensor.Uint8
	case Float16:
		return tensor.Float16
	case BFloat16:
		return tensor.BFloat16
	}
	return 0
}

func asBytes[T Element](buf []T) []byte {
	if len(buf) == 0 {
		return []byte{}
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), len(buf)*int(unsafe.Sizeof(buf[0])))
}

func fromBytes[T Element](b []byte) []T {
	var z T
	n := len(b) / int(unsafe.Sizeof(z))
	if n == 0 {
		return []T{}
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), n)
}

func validName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty tensor name", ErrInvalid)
	}
	return nil
}

func submit(ctx context.Context, req coordinator.Request, buf []byte, co callOptions) *Handle {
	return submitWith(ctx, req, buf, co, nil)
}

// submitWith validates what every call shares (initialized, a name, the
// process set) and queues the request; prep fills op-specific entry fields.
func submitWith(ctx context.Context, req coordinator.Request, buf []byte, co callOptions, prep func(*entry)) *Handle {
	e, err := co.engine()
	if err != nil {
		return failed(err)
	}
	if err := validName(req.Name); err != nil {
		return failed(err)
	}
	req.Device = int(co.device)
	if co.device != CPU && e.device == nil {
		return failed(fmt.Errorf("%w: %s %q on device %d, but the world has no device backend (WithDeviceBackend)", ErrInvalid, req.Op, req.Name, co.device))
	}
	if req.Prescale == 0 {
		req.Prescale, req.Postscale = co.prescale, co.postscale
	}
	if ps := co.set; ps != nil {
		if !ps.Included() {
			return failed(fmt.Errorf("%w: %s %q in process set %d, which rank %d is not a member of", ErrInvalid, req.Op, req.Name, ps.id, e.topo.Rank))
		}
		req.ProcessSet = ps.id
	}
	return &Handle{en: e.submit(ctx, req, buf, prep)}
}

// engine is the world a call with these options runs in: InWorld's, else
// the process set's, else the default world.
func (co callOptions) engine() (*engine, error) {
	switch {
	case co.eng != nil:
		return co.eng, nil
	case co.world != nil && co.set != nil && co.set.e != co.world.e:
		return nil, fmt.Errorf("%w: process set %d belongs to another world than InWorld's", ErrInvalid, co.set.id)
	case co.world != nil:
		return co.world.e, nil
	case co.set != nil:
		return co.set.e, nil
	}
	return current()
}

// groupSize is the number of ranks a call with these options runs among
// (-1 when there is no world).
func (co callOptions) groupSize() int {
	if co.set != nil {
		return co.set.Size()
	}
	e, err := co.engine()
	if err != nil {
		return -1
	}
	return e.topo.Size
}

// AllreduceAsync starts an in-place allreduce of buf across all ranks.
func AllreduceAsync[T Element](ctx context.Context, name string, buf []T, op ReduceOp, opts ...CallOption) *Handle {
	co := callOpts(opts)
	switch op {
	case Sum, Average, Min, Max, Product:
	default:
		return failed(fmt.Errorf("%w: allreduce %q: unsupported reduce op %v", ErrInvalid, name, op))
	}
	return submit(ctx, coordinator.Request{
		Name: name, Op: coordinator.OpAllreduce, DType: dtypeOf[T](), Shape: []int64{int64(len(buf))}, ReduceOp: op,
	}, asBytes(buf), co)
}

// Allreduce reduces buf elementwise across all ranks, in place: afterwards
// every rank holds the same result. name identifies the tensor across ranks.
func Allreduce[T Element](ctx context.Context, name string, buf []T, op ReduceOp, opts ...CallOption) error {
	return AllreduceAsync(ctx, name, buf, op, opts...).Wait(ctx)
}

// BroadcastAsync starts a broadcast of root's buf to every rank's buf.
func BroadcastAsync[T Element](ctx context.Context, name string, buf []T, root int, opts ...CallOption) *Handle {
	co := callOpts(opts)
	e, err := co.engine()
	if err != nil {
		return failed(err)
	}
	if s := e.topo.Size; root < 0 || root >= s { // a global rank, also in a process set
		return failed(fmt.Errorf("%w: broadcast %q: root %d out of range [0,%d)", ErrInvalid, name, root, s))
	}
	if co.set != nil && !slices.Contains(co.set.ranks, root) {
		return failed(fmt.Errorf("%w: broadcast %q: root %d is not a member of process set %d %v", ErrInvalid, name, root, co.set.id, co.set.ranks))
	}
	return submit(ctx, coordinator.Request{
		Name: name, Op: coordinator.OpBroadcast, DType: dtypeOf[T](), Shape: []int64{int64(len(buf))}, Root: root,
	}, asBytes(buf), co)
}

// Broadcast copies root's buf into every rank's buf (same length everywhere).
func Broadcast[T Element](ctx context.Context, name string, buf []T, root int, opts ...CallOption) error {
	return BroadcastAsync(ctx, name, buf, root, opts...).Wait(ctx)
}

// BarrierAsync starts a barrier; its handle is done once every rank (of
// the process set, with InProcessSet) has called Barrier or BarrierAsync.
func BarrierAsync(ctx context.Context, opts ...CallOption) *Handle {
	co := callOpts(opts)
	e, err := co.engine()
	if err != nil {
		return failed(err)
	}
	e.mu.Lock()
	name := barrierPrefix + strconv.FormatUint(e.nextBarrierLocked(), 10)
	e.mu.Unlock()
	return submit(ctx, coordinator.Request{Name: name, Op: coordinator.OpBarrier, DType: tensor.Uint8}, nil, co)
}

// Barrier returns once every rank (of the process set, with InProcessSet)
// has called it.
func Barrier(ctx context.Context, opts ...CallOption) error {
	return BarrierAsync(ctx, opts...).Wait(ctx)
}

// CallOption adjusts one collective call.
type CallOption func(*callOptions)

type callOptions struct {
	prescale, postscale float64
	set                 *ProcessSet
	world               *World
	device              Device
	eng                 *engine // set inside the package; wins over world and set
	out                 any     // WithOutput's slice ([]T)
}

// inEngine runs a call in e's world (calls the package makes itself).
func inEngine(e *engine) CallOption { return func(o *callOptions) { o.eng = e } }

// WithPrescale multiplies the local input by f before reducing.
func WithPrescale(f float64) CallOption { return func(o *callOptions) { o.prescale = f } }

// WithPostscale multiplies the reduced result by f.
func WithPostscale(f float64) CallOption { return func(o *callOptions) { o.postscale = f } }

func callOpts(opts []CallOption) callOptions {
	co := callOptions{prescale: 1, postscale: 1, device: CPU}
	for _, o := range opts {
		o(&co)
	}
	return co
}

// RunExclusive runs fn on every rank with direct access to the data plane,
// bypassing negotiation: it is negotiated once (like a barrier named name),
// then fn runs on the background loop at the same point on every rank, so
// fn must issue the same sequence of ops on every rank. For benchmarks and
// tools; an error fn returns fails this call on this rank.
func RunExclusive(ctx context.Context, name string, fn func(ctx context.Context, c *ops.Comm) error, opts ...CallOption) error {
	co := callOpts(opts)
	co.set = nil // the whole world's communicator
	return submitWith(ctx, coordinator.Request{Name: "exclusive/" + name, Op: coordinator.OpBarrier, DType: tensor.Uint8}, nil,
		co, func(en *entry) { en.exclusive = fn }).Wait(ctx)
}

// ActiveConfig returns the configuration the running worker uses (the
// defaults before Init).
func ActiveConfig() Config {
	e, err := current()
	if err != nil {
		return DefaultConfig()
	}
	return e.cfg
}

// StartTimeline starts recording a Chrome-trace timeline of negotiation and
// execution to path (open it in Perfetto or chrome://tracing). Only rank 0
// records, as Horovod does; on other ranks it does nothing. A timeline
// already recording is closed first.
func StartTimeline(path string) error {
	e, err := current()
	if err != nil {
		return err
	}
	if e.topo.Rank != 0 {
		return nil
	}
	if err := e.tl.Start(path, timeline.Options{}); err != nil {
		return fmt.Errorf("%w: timeline: %w", ErrInvalid, err)
	}
	return nil
}

// StopTimeline closes the timeline being recorded, leaving a valid JSON file.
func StopTimeline() error {
	e, err := current()
	if err != nil {
		return err
	}
	return typed(e.tl.Stop(), false)
}
