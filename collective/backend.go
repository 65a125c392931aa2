package collective

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gorovod/gorovod/coordinator"
	"github.com/gorovod/gorovod/internal/timeline"
	"github.com/gorovod/gorovod/ops"
)

// Device says where a tensor's memory lives: CPU, or a GPU ordinal (>= 0).
type Device int

// CPU is host memory, the default device of every call.
const CPU Device = coordinator.CPU

// WithDevice submits a collective for a tensor on device d. Every rank
// must name the same kind of device for a tensor (a mismatch fails the
// call with ErrMismatch); fused responses never mix devices. Tensors on a
// GPU need a device backend (WithDeviceBackend).
func WithDevice(d Device) CallOption { return func(o *callOptions) { o.device = d } }

// Backend runs the data-plane operation of one response (a fused batch of
// tensors of one op, dtype and device) that negotiation produced. The
// background loop hands every response to the backend of its device: the
// CPU backend runs package ops over the host links; a device backend (the
// NCCL one) is given with WithDeviceBackend. Execute is called on the loop
// goroutine, in the same order on every rank, one response at a time.
type Backend interface {
	// Execute runs r over entries (one per r.Names, in order). An entry is
	// nil where this rank has joined (see Join) and takes part without a
	// tensor of its own: with the op's identity (allreduce, reduce-scatter),
	// nothing (allgather) or a scratch buffer (broadcast, alltoall). A
	// returned error fails these tensors and the world: the ranks' data
	// planes may be out of step.
	Execute(ctx context.Context, r *coordinator.Response, entries []*Entry, g Group) error
}

// AsyncBackend is an optional extension of a device backend whose work
// runs asynchronously on the device. When the device backend implements
// it, the loop calls Enqueue instead of Execute (same arguments, same
// order on every rank, on the loop goroutine): Enqueue returns once the
// operation is queued on the device, with a Completion that the loop's
// completion goroutine waits for, in enqueue order, while the loop
// negotiates the next cycles. The entries' handles finish only when their
// completion does (the caller gets its tensors back after the device is
// done with them), failing with its error; the progress deadline bounds
// each wait from the moment of Enqueue, and a failed completion stops the
// world as a failed Execute does. A nil Completion means the operation is
// already done. Barriers and joins wait for every completion first, so
// they keep their place in the op sequence. Backends without it (the CPU
// one) run synchronously through Execute.
type AsyncBackend interface {
	Backend
	Enqueue(ctx context.Context, r *coordinator.Response, entries []*Entry, g Group) (Completion, error)
}

// Completion is the end of an operation an AsyncBackend enqueued.
type Completion interface {
	// Wait returns once the operation has finished (nil) or failed; when
	// ctx ends first the backend gives up on the operation and returns an
	// error that wraps ctx's. It is called once, from the loop's
	// completion goroutine.
	Wait(ctx context.Context) error
}

// WorldCloser is an optional interface of a device backend. The backend
// itself belongs to whoever made it: World.Close does not close it, since
// one backend may serve several worlds (the ranks of an in-process test,
// the successive epochs of an elastic job). When a world closes, after its
// loop has stopped and before its host planes close, it calls CloseWorld
// with the host planes its groups used (Group.Host of every response it
// handed out), so that the backend releases what it made for that world
// (the NCCL backend destroys its communicators). An error is logged.
type WorldCloser interface {
	CloseWorld(hosts []*ops.Comm) error
}

// Group is the ranks a response runs among.
type Group struct {
	Rank    int       // this rank's index in Members
	Members []int     // global ranks, ascending (every rank of the world outside process sets)
	Joined  []int     // global ranks that have joined (they have nil entries)
	Host    *ops.Comm // the host data plane among Members (a device backend's control messages)
	Hosts   []string  // the host of each member (hierarchical device algorithms)
	// Report hands a device backend's failure that names a lost or stalled
	// peer (a global rank) to the job's first-failure oracle, as the host
	// links do for their own failures; it returns err.
	Report func(peer int, err error) error
}

// Entry is one tensor of a response, as a backend sees it.
type Entry struct {
	Name string
	// Buf is the tensor in host memory: the input, and the output of
	// in-place ops (allreduce, broadcast). Nil for a device tensor.
	Buf []byte
	// Tensor is what the caller submitted for a device tensor (the device
	// backend's own type); nil on CPU.
	Tensor any
	// Splits (alltoall) is how many bytes go to each member.
	Splits []int
	// Out and OutCounts are set by Execute for ops that return new data:
	// allgather and alltoall (bytes from each member), reduce-scatter.
	Out       []byte
	OutCounts []int
	// Dst is the caller's output buffer for those ops on host memory
	// (WithOutput), nil without one: when its capacity holds the n bytes
	// of the result, a backend writes them to Dst[:n] and sets Out to it.
	Dst []byte
}

// output is where the n-byte result of en goes: en.Dst when it has room,
// else a new slice.
func output(en *Entry, n int) []byte {
	if en != nil && cap(en.Dst) >= n {
		return en.Dst[:n]
	}
	return make([]byte, n)
}

// WithDeviceBackend runs the responses of GPU tensors (device >= 0) on b.
// The caller keeps ownership of b and closes it after the worlds that use
// it; a b that implements WorldCloser is told when each world closes.
func WithDeviceBackend(b Backend) Option { return func(o *initOptions) { o.deviceBackend = b } }

// backendFor returns the backend of a response's device.
func (e *engine) backendFor(d int) (Backend, error) {
	if Device(d) == CPU {
		return e.cpu, nil
	}
	if e.device == nil {
		return nil, fmt.Errorf("%w: tensors on device %d but no device backend (WithDeviceBackend)", ErrInvalid, d)
	}
	return e.device, nil
}

// group is who takes part in r.
func (e *engine) group(r *coordinator.Response) (Group, error) {
	comm, err := e.commFor(r.ProcessSet)
	if err != nil {
		return Group{}, err
	}
	members := e.allRanks
	if r.ProcessSet != 0 {
		members = e.sets[r.ProcessSet].members
	}
	hosts := make([]string, len(members))
	for i, m := range members {
		hosts[i] = e.mesh.Host(m)
	}
	return Group{Rank: slices.Index(members, e.topo.Rank), Members: members, Joined: r.JoinedRanks, Host: comm, Hosts: hosts, Report: e.mesh.Observe}, nil
}

// cpuBackend runs responses of host-memory tensors with package ops.
type cpuBackend struct{ e *engine }

func (b cpuBackend) Execute(ctx context.Context, r *coordinator.Response, entries []*Entry, g Group) error {
	e, comm := b.e, g.Host
	if r.Op != coordinator.OpAllreduce {
		e.tl.Activity(time.Now(), r.Names, "CPU_"+strings.ToUpper(r.Op.String()))
	}
	bufs, err := b.buffers(r, entries, g)
	if err != nil {
		return err
	}
	switch r.Op {
	case coordinator.OpAllreduce:
		return b.allreduce(ctx, r, bufs, comm)
	case coordinator.OpBroadcast:
		root := slices.Index(g.Members, r.Root) // a global rank; the communicator counts members
		for _, buf := range bufs {
			if err := comm.Broadcast(ctx, buf, root); err != nil {
				return err
			}
		}
		return nil
	case coordinator.OpAllgather:
		return b.allgather(ctx, r, entries, bufs, comm)
	case coordinator.OpAlltoall:
		return b.alltoall(ctx, entries, bufs, comm)
	case coordinator.OpReduceScatter:
		return b.reduceScatter(ctx, r, entries, bufs, comm)
	}
	return fmt.Errorf("%w: the CPU backend has no %v", ErrInvalid, r.Op)
}

// buffers are the host buffers of r's tensors; a joined rank gets the op's
// identity (allreduce, reduce-scatter), nothing (allgather) or scratch.
func (b cpuBackend) buffers(r *coordinator.Response, entries []*Entry, g Group) ([][]byte, error) {
	es := r.DType.Size()
	bufs := make([][]byte, len(entries))
	for i, en := range entries {
		if en != nil {
			bufs[i] = en.Buf
			continue
		}
		if !slices.Contains(g.Joined, b.e.topo.Rank) {
			return nil, fmt.Errorf("%w: response for %q has no local tensor", ErrInvalid, r.Names[i])
		}
		if r.Op != coordinator.OpAllgather && i < len(r.Counts) {
			bufs[i] = make([]byte, int(r.Counts[i])*es)
			if r.Op == coordinator.OpAllreduce || r.Op == coordinator.OpReduceScatter {
				identityFill(r.DType, r.ReduceOp, bufs[i])
			}
		}
	}
	return bufs, nil
}

func (b cpuBackend) allreduce(ctx context.Context, r *coordinator.Response, bufs [][]byte, comm *ops.Comm) error {
	e := b.e
	if len(bufs) == 1 {
		e.tl.Activity(time.Now(), r.Names, "CPU_ALLREDUCE")
		return comm.Allreduce(ctx, bufs[0], r.DType, r.ReduceOp, r.Prescale, r.Postscale)
	}
	e.tl.Activity(time.Now(), r.Names, timeline.MemcpyIn)
	fused := e.fbuf.Pack(bufs)
	e.tl.Activity(time.Now(), r.Names, "CPU_ALLREDUCE")
	if err := comm.Allreduce(ctx, fused, r.DType, r.ReduceOp, r.Prescale, r.Postscale); err != nil {
		return err
	}
	e.tl.Activity(time.Now(), r.Names, timeline.MemcpyOut)
	e.fbuf.Unpack(fused, bufs)
	e.met.fused(len(bufs))
	return nil
}

func (b cpuBackend) allgather(ctx context.Context, r *coordinator.Response, entries []*Entry, bufs [][]byte, comm *ops.Comm) error {
	for i, en := range entries {
		counts := r.AllgatherBytes(i)
		total := 0
		for _, c := range counts {
			total += c
		}
		out := output(en, total)
		if err := comm.Allgatherv(ctx, bufs[i], out, counts); err != nil {
			return err
		}
		if en != nil {
			en.Out, en.OutCounts = out, counts
		}
	}
	return nil
}

func (b cpuBackend) alltoall(ctx context.Context, entries []*Entry, bufs [][]byte, comm *ops.Comm) error {
	for i, en := range entries {
		splits := make([]int, comm.Size())
		var dst []byte
		if en != nil {
			splits, dst = en.Splits, en.Dst
		}
		out, counts, err := comm.AlltoallvInto(ctx, bufs[i], splits, dst)
		if err != nil {
			return err
		}
		if en != nil {
			en.Out, en.OutCounts = out, counts
		}
	}
	return nil
}

func (b cpuBackend) reduceScatter(ctx context.Context, r *coordinator.Response, entries []*Entry, bufs [][]byte, comm *ops.Comm) error {
	es := r.DType.Size()
	for i, en := range entries {
		counts := splitEven(len(bufs[i])/es, comm.Size())
		mine, err := comm.ReduceScatter(ctx, bufs[i], counts, r.DType, r.ReduceOp)
		if err != nil {
			return err
		}
		if en != nil {
			en.Out = output(en, len(mine))
			copy(en.Out, mine)
		}
	}
	return nil
}

// splitEven splits n elements over size ranks, the first n%size ranks
// getting one more.
func splitEven(n, size int) []int {
	out := make([]int, size)
	for i := range out {
		out[i] = n / size
		if i < n%size {
			out[i]++
		}
	}
	return out
}
