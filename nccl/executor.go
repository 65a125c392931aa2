package nccl

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/gorovod/gorovod/internal/tensor"
)

// Tensor is count elements of device memory at Ptr.
type Tensor struct {
	Ptr   DevicePtr
	Count int
}

// Executor runs the collectives of one process set's device tensors on one
// communicator, the way the background loop's device backend needs them:
// many tensors fused into one NCCL call through a device fusion buffer
// (device-to-device copies queued on the executor's stream), scaling and
// Average on NCCL without ncclAvg, allgather and alltoall with uneven
// counts (grouped ncclSend/ncclRecv), and a joined rank's identity
// contribution. Every method waits for its stream under ctx (the caller's
// progress deadline); when ctx ends first the communicator is aborted.
//
// An Executor is used by one goroutine at a time (the background loop).
type Executor struct {
	comm      *Comm
	dev       Device
	stream    Stream
	ownStream bool
	buf       DevicePtr
	bufLen    int
	calls     atomic.Int64

	emu           sync.Mutex // guards the event fields: Pending.Wait runs on another goroutine
	events        map[event]struct{}
	eventsChecked bool
	eventsOK      bool
}

// NewExecutor runs collectives on c. With stream 0 it creates a stream of
// its own (destroyed by Close).
func NewExecutor(c *Comm, stream Stream) (*Executor, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil communicator", ErrInvalid)
	}
	x := &Executor{comm: c, dev: c.l.Device(c.device), stream: stream, events: map[event]struct{}{}}
	if stream == 0 {
		s, err := x.dev.NewStream()
		if err != nil {
			return nil, err
		}
		x.stream, x.ownStream = s, true
	}
	return x, nil
}

// Comm is the executor's communicator.
func (x *Executor) Comm() *Comm { return x.comm }

// Free releases device memory the executor returned (Allgather, Alltoall,
// ReduceScatter).
func (x *Executor) Free(p DevicePtr) error { return x.dev.Free(p) }

// Calls is how many NCCL collectives (a group of sends and receives counts
// once) the executor has enqueued.
func (x *Executor) Calls() int64 { return x.calls.Load() }

// Close frees the fusion buffer, the executor's own stream and the events
// of Pendings not waited for successfully; the communicator is the
// caller's.
func (x *Executor) Close() error {
	var first error
	if x.buf != 0 {
		first = x.dev.Free(x.buf)
		x.buf, x.bufLen = 0, 0
	}
	if x.ownStream {
		if err := x.dev.DestroyStream(x.stream); first == nil {
			first = err
		}
		x.ownStream = false
	}
	x.emu.Lock()
	events := x.events
	x.events = map[event]struct{}{}
	x.emu.Unlock()
	for e := range events { // CUDA releases an event still to be reached once the stream reaches it
		x.comm.l.s.eventDestroy(x.dev.Ordinal, e)
	}
	return first
}

// fusion returns a fusion buffer of at least n bytes, growing it.
func (x *Executor) fusion(ctx context.Context, n int) (DevicePtr, error) {
	if n <= x.bufLen {
		return x.buf, nil
	}
	if x.buf != 0 { // the stream may still read the old buffer
		if err := x.comm.Synchronize(ctx, x.stream); err != nil {
			return 0, err
		}
		if err := x.dev.Free(x.buf); err != nil {
			return 0, err
		}
		x.buf, x.bufLen = 0, 0
	}
	size := max(n, 1<<20)
	p, err := x.dev.Malloc(size)
	if err != nil {
		return 0, err
	}
	x.buf, x.bufLen = p, size
	return p, nil
}

func (x *Executor) count() { x.calls.Add(1) }

// Allreduce reduces each tensor in place across the ranks: one NCCL call
// for all of them. prescale multiplies the input, postscale the result.
func (x *Executor) Allreduce(ctx context.Context, ts []Tensor, dt tensor.DType, op tensor.ReduceOp, prescale, postscale float64) error {
	if err := x.enqueueAllreduce(ctx, ts, dt, op, prescale, postscale); err != nil {
		return err
	}
	return x.comm.Synchronize(ctx, x.stream)
}

// AllreduceAsync is Allreduce that returns once the work is queued on the
// executor's stream (a host scaling step, when one is needed, still waits
// for the stream first), with a CUDA event recorded after it: the tensors
// hold the result once the Pending's Wait returns nil, and must not be
// touched before. Later work on the executor is queued after it on the
// same stream, so the fusion buffer is never overwritten while this
// collective still reads it. Without CUDA events in the runtime it waits
// like Allreduce and returns a nil Pending (whose Wait returns nil).
func (x *Executor) AllreduceAsync(ctx context.Context, ts []Tensor, dt tensor.DType, op tensor.ReduceOp, prescale, postscale float64) (*Pending, error) {
	if !x.hasEvents() {
		return nil, x.Allreduce(ctx, ts, dt, op, prescale, postscale)
	}
	if err := x.enqueueAllreduce(ctx, ts, dt, op, prescale, postscale); err != nil {
		return nil, err
	}
	return x.record()
}

func (x *Executor) enqueueAllreduce(ctx context.Context, ts []Tensor, dt tensor.DType, op tensor.ReduceOp, prescale, postscale float64) error {
	red, err := x.comm.Reduction(dt, op)
	if err != nil {
		return err
	}
	es := dt.Size()
	total := 0
	for _, t := range ts {
		total += t.Count
	}
	post := x.postFactor(dt, red, postscale)
	if len(ts) == 1 && prescale == 1 && post.identity() {
		t := ts[0]
		if err := x.comm.Allreduce(ctx, t.Ptr, t.Ptr, t.Count, dt, op, x.stream); err != nil {
			return err
		}
		x.count()
		return nil
	}
	buf, err := x.fusion(ctx, total*es)
	if err != nil {
		return err
	}
	if err := x.pack(buf, ts, es); err != nil {
		return err
	}
	if prescale != 1 {
		if err := x.scaleOnHost(ctx, buf, total, dt, hostScale{factor: prescale}); err != nil {
			return err
		}
	}
	if err := x.comm.Allreduce(ctx, buf, buf, total, dt, op, x.stream); err != nil {
		return err
	}
	x.count()
	if !post.identity() {
		if err := x.scaleOnHost(ctx, buf, total, dt, post); err != nil {
			return err
		}
	}
	return x.unpack(buf, ts, es)
}

// AllreduceIdentity is a joined rank's part in an allreduce of count
// elements: it contributes op's identity and discards the result.
func (x *Executor) AllreduceIdentity(ctx context.Context, count int, dt tensor.DType, op tensor.ReduceOp) error {
	if _, err := x.comm.Reduction(dt, op); err != nil {
		return err
	}
	buf, err := x.fusion(ctx, count*dt.Size())
	if err != nil {
		return err
	}
	if err := x.comm.Synchronize(ctx, x.stream); err != nil { // the buffer is ours to overwrite
		return err
	}
	if err := x.dev.CopyToDevice(buf, Identity(dt, op, count)); err != nil {
		return err
	}
	if err := x.comm.Allreduce(ctx, buf, buf, count, dt, op, x.stream); err != nil {
		return err
	}
	x.count()
	return x.comm.Synchronize(ctx, x.stream)
}

func (x *Executor) pack(buf DevicePtr, ts []Tensor, es int) error {
	off := 0
	for _, t := range ts {
		if err := x.dev.CopyAsync(buf+DevicePtr(off), t.Ptr, t.Count*es, x.stream); err != nil {
			return err
		}
		off += t.Count * es
	}
	return nil
}

func (x *Executor) unpack(buf DevicePtr, ts []Tensor, es int) error {
	off := 0
	for _, t := range ts {
		if err := x.dev.CopyAsync(t.Ptr, buf+DevicePtr(off), t.Count*es, x.stream); err != nil {
			return err
		}
		off += t.Count * es
	}
	return nil
}

// Broadcast copies root's tensor into every rank's, in place.
func (x *Executor) Broadcast(ctx context.Context, t Tensor, dt tensor.DType, root int) error {
	if err := x.comm.Broadcast(ctx, t.Ptr, t.Ptr, t.Count, dt, root, x.stream); err != nil {
		return err
	}
	x.count()
	return x.comm.Synchronize(ctx, x.stream)
}

// Allgather gathers every rank's tensor (counts[r] elements from rank r,
// counts may differ) into new device memory in rank order, which the
// caller frees with Device.Free. Equal counts use ncclAllGather; uneven
// ones grouped ncclSend/ncclRecv.
func (x *Executor) Allgather(ctx context.Context, in Tensor, counts []int, dt tensor.DType) (DevicePtr, error) {
	if len(counts) != x.comm.Size() || counts[x.comm.Rank()] != in.Count {
		return 0, fmt.Errorf("%w: allgather counts %v for rank %d of %d sending %d", ErrInvalid, counts, x.comm.Rank(), x.comm.Size(), in.Count)
	}
	total, even := 0, true
	for _, c := range counts {
		total += c
		even = even && c == counts[0]
	}
	out, err := x.dev.Malloc(max(total*dt.Size(), 1))
	if err != nil {
		return 0, err
	}
	if even {
		err = x.comm.AllGather(ctx, in.Ptr, out, in.Count, dt, x.stream)
	} else {
		n := x.comm.Size()
		sc, sd, rd := make([]int, n), make([]int, n), make([]int, n)
		off := 0
		for r := range counts {
			sc[r], rd[r] = in.Count, off
			off += counts[r]
		}
		err = x.comm.AlltoallV(ctx, in.Ptr, sc, sd, out, counts, rd, dt, x.stream)
	}
	if err == nil {
		x.count()
		err = x.comm.Synchronize(ctx, x.stream)
	}
	if err != nil {
		x.dev.Free(out)
		return 0, err
	}
	return out, nil
}

// Alltoall sends sendSplits[r] elements (consecutive blocks of in) to rank
// r and receives recvSplits[r] from it into new device memory the caller
// frees.
func (x *Executor) Alltoall(ctx context.Context, in Tensor, sendSplits, recvSplits []int, dt tensor.DType) (DevicePtr, error) {
	sd, rd := prefix(sendSplits), prefix(recvSplits)
	total := 0
	for _, c := range recvSplits {
		total += c
	}
	out, err := x.dev.Malloc(max(total*dt.Size(), 1))
	if err != nil {
		return 0, err
	}
	err = x.comm.AlltoallV(ctx, in.Ptr, sendSplits, sd, out, recvSplits, rd, dt, x.stream)
	if err == nil {
		x.count()
		err = x.comm.Synchronize(ctx, x.stream)
	}
	if err != nil {
		x.dev.Free(out)
		return 0, err
	}
	return out, nil
}

// ReduceScatter reduces in across ranks and returns this rank's block
// (counts[rank] elements, counts may differ) in new device memory the
// caller frees. It runs as a fused allreduce in the fusion buffer, so
// uneven blocks need no padding.
func (x *Executor) ReduceScatter(ctx context.Context, in Tensor, counts []int, dt tensor.DType, op tensor.ReduceOp, prescale, postscale float64) (DevicePtr, error) {
	rank := x.comm.Rank()
	if len(counts) != x.comm.Size() {
		return 0, fmt.Errorf("%w: reducescatter counts %v for %d ranks", ErrInvalid, counts, x.comm.Size())
	}
	es := dt.Size()
	out, err := x.dev.Malloc(max(counts[rank]*es, 1))
	if err != nil {
		return 0, err
	}
	buf, err := x.fusion(ctx, in.Count*es)
	if err == nil {
		err = x.dev.CopyAsync(buf, in.Ptr, in.Count*es, x.stream)
	}
	if err == nil {
		err = x.Allreduce(ctx, []Tensor{{Ptr: buf, Count: in.Count}}, dt, op, prescale, postscale)
	}
	if err == nil {
		err = x.dev.CopyAsync(out, buf+DevicePtr(prefix(counts)[rank]*es), counts[rank]*es, x.stream)
	}
	if err == nil {
		err = x.comm.Synchronize(ctx, x.stream)
	}
	if err != nil {
		x.dev.Free(out)
		return 0, err
	}
	return out, nil
}

func prefix(counts []int) []int {
	out := make([]int, len(counts))
	off := 0
	for i, c := range counts {
		out[i] = off
		off += c
	}
	return out
}

// AllreduceHierarchical is Allreduce in three stages, for a communicator
// that spans the ranks of one host: ncclReduceScatter within the host,
// cross(shard) combining this rank's shard (host memory, reduced with op,
// Sum for Average) with the same shard of the other hosts, then
// ncclAllGather within the host. The data is padded with op's identity to a
// multiple of the host's ranks. size is the number of ranks across all
// hosts, the divisor of Average.
func (x *Executor) AllreduceHierarchical(ctx context.Context, ts []Tensor, dt tensor.DType, op tensor.ReduceOp, prescale, postscale float64, size int, cross func(ctx context.Context, shard []byte) error) error {
	rop := op
	if op == tensor.Average {
		rop = tensor.Sum
	}
	if _, err := x.comm.Reduction(dt, rop); err != nil {
		return err
	}
	es, local := dt.Size(), x.comm.Size()
	total := 0
	for _, t := range ts {
		total += t.Count
	}
	shard := (total + local - 1) / local
	buf, err := x.fusion(ctx, (shard*local+shard)*es)
	if err != nil {
		return err
	}
	scratch := buf + DevicePtr(shard*local*es)
	if err := x.pack(buf, ts, es); err != nil {
		return err
	}
	if pad := shard*local - total; pad > 0 {
		if err := x.dev.CopyToDevice(buf+DevicePtr(total*es), Identity(dt, rop, pad)); err != nil {
			return err
		}
	}
	if prescale != 1 {
		if err := x.scaleOnHost(ctx, buf, total, dt, hostScale{factor: prescale}); err != nil {
			return err
		}
	}
	if err := x.comm.ReduceScatter(ctx, buf, scratch, shard, dt, rop, x.stream); err != nil {
		return err
	}
	x.count()
	if err := x.comm.Synchronize(ctx, x.stream); err != nil {
		return err
	}
	host := make([]byte, shard*es)
	if err := x.dev.CopyFromDevice(host, scratch); err != nil {
		return err
	}
	if err := cross(ctx, host); err != nil {
		return err
	}
	if err := x.dev.CopyToDevice(scratch, host); err != nil {
		return err
	}
	if err := x.comm.AllGather(ctx, scratch, buf, shard, dt, x.stream); err != nil {
		return err
	}
	x.count()
	post := hostScale{factor: postscale}
	if op == tensor.Average && size > 1 {
		if dt.IsFloat() {
			post.factor /= float64(size)
		} else {
			post.divide = size
		}
	}
	if !post.identity() {
		if err := x.scaleOnHost(ctx, buf, total, dt, post); err != nil {
			return err
		}
	}
	if err := x.unpack(buf, ts, es); err != nil {
		return err
	}
	return x.comm.Synchronize(ctx, x.stream)
}

// Pending is device work an executor has queued, followed by a CUDA
// event (AllreduceAsync).
type Pending struct {
	x  *Executor
	ev event
}

// Wait waits for the work under ctx (the caller's progress deadline) while
// watching the communicator's async error; when ctx ends first, or NCCL
// reports an error, the communicator is aborted, as in Synchronize. Wait is
// called once; a nil Pending's Wait returns nil at once. It may be called
// from another goroutine than the one using the executor.
func (p *Pending) Wait(ctx context.Context) error {
	if p == nil {
		return nil
	}
	x := p.x
	err := x.comm.waitDevice(ctx, "collective not done", func() (bool, error) {
		// The executor may have been closed since (a failed earlier
		// collective dropped it): its events are gone with it.
		x.emu.Lock()
		_, live := x.events[p.ev]
		e := cudaErrorNotReady
		if live {
			e = x.comm.l.s.eventQuery(x.dev.Ordinal, p.ev)
		}
		x.emu.Unlock()
		if !live {
			if cause := x.comm.Err(); cause != nil {
				return true, cause
			}
			return true, fmt.Errorf("%w: the executor was closed with the collective pending", ErrClosed)
		}
		switch e {
		case 0:
			return true, nil
		case cudaErrorNotReady:
			return false, nil
		default:
			return true, x.comm.l.cudaErr("cudaEventQuery", e)
		}
	})
	if err == nil {
		x.releaseEvent(p.ev)
	}
	// On an error the event stays with the executor, which destroys it in
	// Close once the stream can no longer record it.
	return err
}

// hasEvents reports whether the runtime has the CUDA event calls.
func (x *Executor) hasEvents() bool {
	x.emu.Lock()
	defer x.emu.Unlock()
	if x.eventsChecked {
		return x.eventsOK
	}
	e, code := x.comm.l.s.eventCreate(x.dev.Ordinal)
	x.eventsChecked, x.eventsOK = true, code == 0
	if code == 0 {
		x.comm.l.s.eventDestroy(x.dev.Ordinal, e)
	}
	return x.eventsOK
}

// record records a new event on the executor's stream.
func (x *Executor) record() (*Pending, error) {
	e, code := x.comm.l.s.eventCreate(x.dev.Ordinal)
	if code != 0 {
		return nil, x.comm.l.cudaErr("cudaEventCreateWithFlags", code)
	}
	if code := x.comm.l.s.eventRecord(x.dev.Ordinal, e, x.stream); code != 0 {
		x.comm.l.s.eventDestroy(x.dev.Ordinal, e)
		return nil, x.comm.l.cudaErr("cudaEventRecord", code)
	}
	x.emu.Lock()
	x.events[e] = struct{}{}
	x.emu.Unlock()
	return &Pending{x: x, ev: e}, nil
}

func (x *Executor) releaseEvent(e event) {
	x.emu.Lock()
	_, ok := x.events[e]
	delete(x.events, e)
	x.emu.Unlock()
	if ok {
		x.comm.l.s.eventDestroy(x.dev.Ordinal, e)
	}
}
