// Package ncclbackend is Gorovod's NCCL device backend: the background
// loop hands it every negotiated response of GPU tensors
// (collective.WithDeviceBackend), and it runs them with NCCL.
//
// Per process set (per group of member ranks) it makes one communicator,
// lazily, at the first response: the group's rank 0 creates the unique id
// and the host data plane of the group (the CPU control plane) broadcasts
// it. Each communicator has an nccl.Executor: fused responses are packed
// into a device fusion buffer with device-to-device copies on the
// executor's stream and reduced with one NCCL call; pre/postscale and
// Average on NCCL without ncclAvg take a host step; allgather and alltoall
// with uneven counts run as grouped ncclSend/ncclRecv; a joined rank
// contributes the op's identity. Allreduces are enqueued
// (collective.AsyncBackend): the loop goes on while a CUDA event recorded
// behind the NCCL call is pending, and the tensors' handles finish when it
// fires. Errors end in collective.ErrTimeout (the
// context, the loop's progress deadline, ended) or collective.ErrPeerLost
// (NCCL or its watchdog aborted the communicator; the text carries NCCL's
// last error, which names the rank where NCCL knows it); the communicator is
// then dropped and a later response makes a new one. A new world (another
// membership, or the same ranks in a new epoch after Init again) gets new
// communicators: a group is keyed by its members and the world's host
// plane, and the old communicator of the same rank and members is
// destroyed. When a world closes, World.Close has the backend destroy that
// world's communicators (CloseWorld); the backend itself is its maker's,
// and Close destroys whatever is left.
package ncclbackend

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/coordinator"
	"github.com/gorovod/gorovod/nccl"
	"github.com/gorovod/gorovod/ops"
)

// Backend runs device-tensor responses on NCCL. It is safe for concurrent
// use by several worlds (e.g. the ranks of an in-process test world).
type Backend struct {
	lib    *nccl.Library
	device int
	opts   []nccl.CommOption

	mu     sync.Mutex
	groups map[string]*group
	closed bool
	calls  atomic.Int64
	made   atomic.Int64 // communicators made
}

// group is one communicator and its executor.
type group struct {
	mu   sync.Mutex // one response at a time per communicator
	x    *nccl.Executor
	host *ops.Comm // the host plane the communicator was bootstrapped over: one per world
}

// New returns a backend on lib. device is the GPU a rank whose entries
// are all absent (it has joined) uses to make its communicator; ranks with
// tensors use their tensors' device.
func New(lib *nccl.Library, device int, opts ...nccl.CommOption) *Backend {
	return &Backend{lib: lib, device: device, opts: opts, groups: map[string]*group{}}
}

// Calls is the number of NCCL collectives the backend has enqueued (a
// group of sends and receives counts once).
func (b *Backend) Calls() int64 {
	return b.calls.Load()
}

// CloseWorld destroys the communicators made for a world that is closing
// (collective.WorldCloser): those bootstrapped over one of hosts, the
// world's host planes. World.Close calls it after the world's loop has
// stopped, so no collective of that world is running on them.
func (b *Backend) CloseWorld(hosts []*ops.Comm) error {
	b.mu.Lock()
	groups := make(map[string]*group, len(b.groups))
	for key, gr := range b.groups {
		groups[key] = gr
	}
	b.mu.Unlock()
	var first error
	for key, gr := range groups { // gr.mu before b.mu, as in drop
		gr.mu.Lock()
		mine := slices.Contains(hosts, gr.host)
		if mine && gr.x != nil {
			if err := closeExecutor(gr.x); err != nil && first == nil {
				first = err
			}
			gr.x = nil
		}
		gr.mu.Unlock()
		if mine {
			b.mu.Lock()
			if b.groups[key] == gr {
				delete(b.groups, key)
			}
			b.mu.Unlock()
		}
	}
	return first
}

// Close destroys every communicator. Later responses fail. The backend is
// its maker's to close (World.Close does not), after the worlds that use
// it; each world's own communicators are already destroyed when it closes
// (CloseWorld).
func (b *Backend) Close() error {
	b.mu.Lock()
	groups := b.groups
	b.groups, b.closed = map[string]*group{}, true
	b.mu.Unlock()
	var first error
	for _, g := range groups {
		g.mu.Lock()
		if g.x != nil {
			if err := closeExecutor(g.x); err != nil && first == nil {
				first = err
			}
			g.x = nil
		}
		g.mu.Unlock()
	}
	return first
}

func groupKey(g collective.Group) string {
	return fmt.Sprintf("rank %d of %v", g.Members[g.Rank], g.Members)
}

// executor returns the executor of the communicator key names, making it
// with makeComm first.
func (b *Backend) executor(ctx context.Context, g collective.Group, key string, makeComm func(context.Context) (*nccl.Comm, error)) (*group, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, fmt.Errorf("%w: the NCCL backend is closed", collective.ErrShutdown)
	}
	gr := b.groups[key]
	if gr == nil {
		gr = &group{}
		b.groups[key] = gr
	}
	b.mu.Unlock()
	gr.mu.Lock()
	if gr.x != nil && gr.host == g.Host {
		return gr, nil
	}
	if gr.x != nil { // the same ranks in a new world (a new epoch): a new communicator
		closeExecutor(gr.x)
		gr.x = nil
	}
	c, err := makeComm(ctx)
	if err != nil {
		gr.mu.Unlock()
		return nil, b.wrap(err, "making the communicator", g)
	}
	x, err := nccl.NewExecutor(c, 0)
	if err != nil {
		c.Abort()
		gr.mu.Unlock()
		return nil, err
	}
	gr.x, gr.host = x, g.Host
	b.made.Add(1)
	return gr, nil
}

// flatComm makes the communicator of all the group's members: rank 0's id
// broadcast over the host plane.
func (b *Backend) flatComm(g collective.Group, device int) func(context.Context) (*nccl.Comm, error) {
	return func(ctx context.Context) (*nccl.Comm, error) {
		bcast := func(ctx context.Context, buf []byte) error { return g.Host.Broadcast(ctx, buf, 0) }
		return b.lib.NewCommBroadcast(ctx, len(g.Members), g.Rank, device, bcast, b.opts...)
	}
}

// closeExecutor destroys an executor's communicator after freeing its
// buffers.
func closeExecutor(x *nccl.Executor) error {
	c := x.Comm()
	err := x.Close()
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	return err
}

// drop forgets a failed communicator x (aborting it) so that a later
// response makes a new one; gr.mu is held. When gr has moved on to another
// communicator since x failed, x is only aborted (the executor's buffers
// go with it when its group is closed) and gr is kept.
func (b *Backend) drop(key string, gr *group, x *nccl.Executor) {
	if gr.x != x {
		x.Comm().Abort()
		return
	}
	if gr.x != nil {
		// Abort first: it releases work still queued on the stream, which
		// freeing the fusion buffer waits for.
		c := gr.x.Comm()
		c.Abort()
		gr.x.Close()
		c.Close()
		gr.x = nil
	}
	b.mu.Lock()
	if b.groups[key] == gr {
		delete(b.groups, key)
	}
	b.mu.Unlock()
}

// Execute runs one response (collective.Backend) and waits for it.
func (b *Backend) Execute(ctx context.Context, r *coordinator.Response, entries []*collective.Entry, g collective.Group) error {
	c, err := b.Enqueue(ctx, r, entries, g)
	if err != nil || c == nil {
		return err
	}
	return c.Wait(ctx)
}

// Enqueue starts one response (collective.AsyncBackend). A flat allreduce
// (fused or not, with or without scaling) returns once it is queued on the
// communicator's stream, with a CUDA event behind it that the completion
// waits for; the other collectives (they allocate their output, exchange
// sizes over the host plane, or take host steps) and every allreduce of a
// hierarchical layout wait for the device before returning, with a nil
// completion.
func (b *Backend) Enqueue(ctx context.Context, r *coordinator.Response, entries []*collective.Entry, g collective.Group) (collective.Completion, error) {
	calls, device, err := deviceCalls(r, entries, b.device)
	if err != nil {
		return nil, err
	}
	key, makeComm := groupKey(g), b.flatComm(g, device)
	h, hierLayout := plan(g)
	hier := hierLayout && r.Op == coordinator.OpAllreduce && len(r.JoinedRanks) == 0
	if hier {
		key, makeComm = key+" local", b.localComm(g, h, device)
	}
	gr, err := b.executor(ctx, g, key, makeComm)
	if err != nil {
		return nil, err
	}
	defer gr.mu.Unlock()
	x := gr.x
	before := x.Calls()
	if err := b.waitProducers(ctx, calls); err != nil {
		return nil, err
	}
	var p *nccl.Pending
	switch {
	case hier:
		err = hierarchicalAllreduce(ctx, x, r, calls, g, h)
	case r.Op == coordinator.OpAllreduce && !joinedHere(calls) && !hierLayout:
		// Not with the hierarchical layout: there an allreduce may run on
		// the flat or the per-host communicator, and an allreduce left in
		// flight on one must not overlap the next on the other (untested).
		p, err = allreduceAsync(ctx, x, r, calls)
	default:
		err = b.run(ctx, x, r, entries, calls, g)
	}
	b.calls.Add(x.Calls() - before)
	if err != nil {
		return nil, b.fail(err, r, g, key, gr, x)
	}
	if p == nil {
		return nil, nil
	}
	return completion{b: b, p: p, r: r, g: g, key: key, gr: gr, x: x}, nil
}

// completion is an enqueued allreduce (collective.Completion).
type completion struct {
	b   *Backend
	p   *nccl.Pending
	r   *coordinator.Response
	g   collective.Group
	key string
	gr  *group
	x   *nccl.Executor
}

// Wait waits for the allreduce's event under ctx (the loop's progress
// deadline, counted from Enqueue); a failure drops the communicator and
// is reported as Execute's would be.
func (c completion) Wait(ctx context.Context) error {
	if err := c.p.Wait(ctx); err != nil {
		c.gr.mu.Lock()
		defer c.gr.mu.Unlock()
		return c.b.fail(err, c.r, c.g, c.key, c.gr, c.x)
	}
	return nil
}

// fail drops the communicator x (gr.mu held) and turns err into the
// collective layer's kinds, reporting a peer NCCL names to the oracle.
func (b *Backend) fail(err error, r *coordinator.Response, g collective.Group, key string, gr *group, x *nccl.Executor) error {
	b.drop(key, gr, x)
	peer, named := blamed(err, g)
	err = b.wrap(err, r.Op.String()+" "+fmt.Sprint(r.Names), g)
	if named && g.Report != nil && errors.Is(err, collective.ErrPeerLost) {
		err = g.Report(peer, err)
	}
	return err
}

// joinedHere reports whether this rank has joined (its entries are nil).
func joinedHere(calls []*collective.DeviceCall) bool {
	for _, c := range calls {
		if c != nil {
			return false
		}
	}
	return true
}

// NCCL's last error names the rank at fault in texts such as "rank 3
// aborted", "rank 3 (pid 42) is gone" or "first failure: rank 3" (the test
// double's, and NCCL's own where it knows); the first failure wins.
var (
	firstRank = regexp.MustCompile(`first failure: rank (\d+)`)
	anyRank   = regexp.MustCompile(`\brank (\d+)\b`)
)

// blamed is the global rank an NCCL error names, if any other than this
// rank: the peer the backend reports to the job's first-failure oracle.
func blamed(err error, g collective.Group) (int, bool) {
	text := err.Error()
	for _, re := range []*regexp.Regexp{firstRank, anyRank} {
		for _, m := range re.FindAllStringSubmatch(text, -1) {
			idx, convErr := strconv.Atoi(m[1])
			if convErr != nil || idx < 0 || idx >= len(g.Members) || idx == g.Rank {
				continue
			}
			return g.Members[idx], true // NCCL ranks are indices into the group
		}
	}
	return 0, false
}

// deviceCalls extracts the device tensors of a response's entries (nil for
// a joined rank) and the device they are on.
func deviceCalls(r *coordinator.Response, entries []*collective.Entry, fallback int) ([]*collective.DeviceCall, int, error) {
	calls := make([]*collective.DeviceCall, len(entries))
	device := -1
	for i, en := range entries {
		if en == nil {
			continue
		}
		c, ok := en.Tensor.(*collective.DeviceCall)
		if !ok {
			return nil, 0, fmt.Errorf("%w: %q reached the NCCL backend without a device tensor (%T)", collective.ErrInvalid, en.Name, en.Tensor)
		}
		if device >= 0 && c.In.Device != device {
			return nil, 0, fmt.Errorf("%w: response %v mixes devices %d and %d on one rank; a process drives one GPU", collective.ErrInvalid, r.Names, device, c.In.Device)
		}
		device = c.In.Device
		calls[i] = c
	}
	if device < 0 {
		device = fallback
	}
	return calls, device, nil
}

// waitProducers waits for the streams that produced the inputs.
func (b *Backend) waitProducers(ctx context.Context, calls []*collective.DeviceCall) error {
	var waited []nccl.Stream
	for _, c := range calls {
		if c == nil || slices.Contains(waited, c.In.Stream) {
			continue
		}
		waited = append(waited, c.In.Stream)
		if err := b.lib.Device(c.In.Device).Synchronize(ctx, c.In.Stream); err != nil {
			return fmt.Errorf("%w: waiting for the input's stream: %w", collective.ErrTimeout, err)
		}
	}
	return nil
}

func (b *Backend) run(ctx context.Context, x *nccl.Executor, r *coordinator.Response, entries []*collective.Entry, calls []*collective.DeviceCall, g collective.Group) error {
	switch r.Op {
	case coordinator.OpAllreduce:
		return allreduce(ctx, x, r, calls)
	case coordinator.OpBroadcast:
		return broadcast(ctx, x, r, calls, g)
	case coordinator.OpAllgather:
		return allgather(ctx, x, r, entries, calls, g)
	case coordinator.OpReduceScatter:
		return reduceScatter(ctx, x, r, entries, calls, g)
	case coordinator.OpAlltoall:
		return alltoall(ctx, x, r, entries, calls, g)
	}
	return fmt.Errorf("%w: the NCCL backend has no %v", collective.ErrInvalid, r.Op)
}

// allreduceAsync enqueues the allreduce of this rank's tensors (all
// present: joinedHere is false).
func allreduceAsync(ctx context.Context, x *nccl.Executor, r *coordinator.Response, calls []*collective.DeviceCall) (*nccl.Pending, error) {
	ts := make([]nccl.Tensor, 0, len(calls))
	for _, c := range calls {
		if c != nil {
			ts = append(ts, nccl.Tensor{Ptr: c.In.Ptr, Count: c.In.Count})
		}
	}
	if len(ts) != len(calls) {
		return nil, fmt.Errorf("%w: response %v has tensors for only some of its names on this rank", collective.ErrInvalid, r.Names)
	}
	return x.AllreduceAsync(ctx, ts, r.DType, r.ReduceOp, r.Prescale, r.Postscale)
}

func allreduce(ctx context.Context, x *nccl.Executor, r *coordinator.Response, calls []*collective.DeviceCall) error {
	ts := make([]nccl.Tensor, 0, len(calls))
	for _, c := range calls {
		if c != nil {
			ts = append(ts, nccl.Tensor{Ptr: c.In.Ptr, Count: c.In.Count})
		}
	}
	if len(ts) == 0 { // joined: the identity, as many elements as the others reduce
		total := 0
		for _, n := range r.Counts {
			total += int(n)
		}
		return x.AllreduceIdentity(ctx, total, r.DType, r.ReduceOp)
	}
	if len(ts) != len(calls) {
		return fmt.Errorf("%w: response %v has tensors for only some of its names on this rank", collective.ErrInvalid, r.Names)
	}
	return x.Allreduce(ctx, ts, r.DType, r.ReduceOp, r.Prescale, r.Postscale)
}

func broadcast(ctx context.Context, x *nccl.Executor, r *coordinator.Response, calls []*collective.DeviceCall, g collective.Group) error {
	root := slices.Index(g.Members, r.Root)
	for i, c := range calls {
		if c == nil {
			return fmt.Errorf("%w: broadcast %q on a joined rank", collective.ErrInvalid, r.Names[i])
		}
		if err := x.Broadcast(ctx, nccl.Tensor{Ptr: c.In.Ptr, Count: c.In.Count}, r.DType, root); err != nil {
			return err
		}
	}
	return nil
}

func allgather(ctx context.Context, x *nccl.Executor, r *coordinator.Response, entries []*collective.Entry, calls []*collective.DeviceCall, g collective.Group) error {
	es := r.DType.Size()
	for i, c := range calls {
		bytes := r.AllgatherBytes(i)
		counts := make([]int, len(bytes))
		for j, n := range bytes {
			counts[j] = n / es
		}
		in := nccl.Tensor{}
		if c != nil {
			in = nccl.Tensor{Ptr: c.In.Ptr, Count: c.In.Count}
		}
		out, err := x.Allgather(ctx, in, counts, r.DType)
		if err != nil {
			return err
		}
		if c == nil {
			x.Free(out) // a joined rank gathers for nobody
			continue
		}
		c.Out = collective.DeviceTensor{Ptr: out, DType: r.DType, Count: sum(counts), Device: c.In.Device}
		entries[i].OutCounts = bytes
	}
	return nil
}

func reduceScatter(ctx context.Context, x *nccl.Executor, r *coordinator.Response, entries []*collective.Entry, calls []*collective.DeviceCall, g collective.Group) error {
	for i, c := range calls {
		if c == nil {
			return fmt.Errorf("%w: reducescatter %q on a joined rank", collective.ErrInvalid, r.Names[i])
		}
		counts := splitEven(c.In.Count, len(g.Members))
		out, err := x.ReduceScatter(ctx, nccl.Tensor{Ptr: c.In.Ptr, Count: c.In.Count}, counts, r.DType, r.ReduceOp, r.Prescale, r.Postscale)
		if err != nil {
			return err
		}
		c.Out = collective.DeviceTensor{Ptr: out, DType: r.DType, Count: counts[g.Rank], Device: c.In.Device}
		bytes := make([]int, len(counts))
		for j, n := range counts {
			bytes[j] = n * r.DType.Size()
		}
		entries[i].OutCounts = bytes
	}
	return nil
}

// alltoall learns how much each member sends here over the host control
// plane (an allgather of the splits), then exchanges the blocks with NCCL.
func alltoall(ctx context.Context, x *nccl.Executor, r *coordinator.Response, entries []*collective.Entry, calls []*collective.DeviceCall, g collective.Group) error {
	es := r.DType.Size()
	n := len(g.Members)
	for i, c := range calls {
		if c == nil {
			return fmt.Errorf("%w: alltoall %q on a joined rank", collective.ErrInvalid, r.Names[i])
		}
		if len(entries[i].Splits) != n {
			return fmt.Errorf("%w: alltoall %q has %d splits for %d ranks", collective.ErrInvalid, r.Names[i], len(entries[i].Splits), n)
		}
		mine := make([]byte, 8*n)
		send := make([]int, n)
		for j, s := range entries[i].Splits {
			send[j] = s / es
			binary.LittleEndian.PutUint64(mine[8*j:], uint64(send[j]))
		}
		all := make([]byte, 8*n*n)
		per := make([]int, n)
		for j := range per {
			per[j] = 8 * n
		}
		if err := g.Host.Allgatherv(ctx, mine, all, per); err != nil {
			return err
		}
		recv := make([]int, n)
		for j := range recv {
			recv[j] = int(binary.LittleEndian.Uint64(all[8*(j*n+g.Rank):]))
		}
		out, err := x.Alltoall(ctx, nccl.Tensor{Ptr: c.In.Ptr, Count: c.In.Count}, send, recv, r.DType)
		if err != nil {
			return err
		}
		c.Out = collective.DeviceTensor{Ptr: out, DType: r.DType, Count: sum(recv), Device: c.In.Device}
		bytes := make([]int, n)
		for j, v := range recv {
			bytes[j] = v * es
		}
		entries[i].OutCounts = bytes
	}
	return nil
}

func sum(xs []int) int {
	t := 0
	for _, x := range xs {
		t += x
	}
	return t
}

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

// wrap turns an NCCL failure into the collective layer's error kinds.
func (b *Backend) wrap(err error, what string, g collective.Group) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: NCCL %s on rank %d did not finish within the progress deadline: %w", collective.ErrTimeout, what, g.Members[g.Rank], err)
	case errors.Is(err, nccl.ErrAborted), errors.Is(err, nccl.ErrClosed):
		return fmt.Errorf("%w: NCCL %s on rank %d: %w", collective.ErrPeerLost, what, g.Members[g.Rank], err)
	}
	return fmt.Errorf("NCCL %s on rank %d: %w", what, g.Members[g.Rank], err)
}
