package nccl

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
)

// DefaultWatchdogInterval is how often a Comm polls ncclCommGetAsyncError.
const DefaultWatchdogInterval = 100 * time.Millisecond

// DefaultAbortGrace bounds how long NewComm waits, after aborting an
// initialisation its context gave up on, for ncclCommInitRank to return.
const DefaultAbortGrace = 10 * time.Second

type commOptions struct {
	watchdog     time.Duration
	blockingInit bool
	abortGrace   time.Duration
}

// CommOption configures NewComm.
type CommOption func(*commOptions)

// WithWatchdogInterval sets how often the async-error watchdog polls; 0 or
// less disables it (errors then surface on the next call).
func WithWatchdogInterval(d time.Duration) CommOption {
	return func(o *commOptions) { o.watchdog = d }
}

// WithBlockingInit makes NewComm use blocking ncclCommInitRank and its
// abort-on-context watchdog even when NCCL offers nonblocking communicators
// (2.14+). The communicator then also runs collectives in blocking mode.
func WithBlockingInit() CommOption {
	return func(o *commOptions) { o.blockingInit = true }
}

// WithAbortGrace bounds the wait for a blocking init to return after it was
// aborted; after it NewComm returns and the init is left to NCCL.
func WithAbortGrace(d time.Duration) CommOption {
	return func(o *commOptions) { o.abortGrace = d }
}

// Comm is an NCCL communicator bound to one GPU.
//
// NCCL communicators are not safe for concurrent calls, so Comm serialises
// its collectives. Abort may be called at any time from any goroutine: it
// is how a collective stuck on a lost peer is unblocked (NCCL's own
// contract for ncclCommAbort).
type Comm struct {
	l           *Library
	nranks      int
	rank        int
	device      int
	nonblocking bool

	opMu sync.Mutex // serialises NCCL calls on the communicator

	hmu   sync.Mutex // guards h and cause: the lifetime of the NCCL handle
	h     handle     // 0 once aborted or destroyed
	cause error      // why h is gone

	stopOnce sync.Once
	stop     chan struct{} // closed to stop the watchdog
	wdDone   chan struct{} // closed when the watchdog has exited
	doneOnce sync.Once
	done     chan struct{} // closed when the communicator is aborted or closed
}

// NewComm joins rank of an nranks-rank communicator identified by id, on
// GPU device. All ranks must call it with the same id and nranks. It returns
// when every rank has joined, or when ctx ends: the half-built communicator
// is then aborted and the error wraps ErrAborted and ctx's error.
//
// On NCCL 2.14+ the communicator is created nonblocking
// (ncclCommInitRankConfig with blocking=0) and its progress polled;
// otherwise ncclCommInitRank runs on its own thread while NewComm watches
// ctx and aborts the communicator NCCL publishes during initialisation.
func (l *Library) NewComm(ctx context.Context, nranks, rank int, id UniqueID, device int, opts ...CommOption) (*Comm, error) {
	if err := l.ready(); err != nil {
		return nil, err
	}
	o := commOptions{watchdog: DefaultWatchdogInterval, abortGrace: DefaultAbortGrace}
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case nranks < 1:
		return nil, fmt.Errorf("%w: nranks %d, want >= 1", ErrInvalid, nranks)
	case rank < 0 || rank >= nranks:
		return nil, fmt.Errorf("%w: rank %d outside [0, %d)", ErrInvalid, rank, nranks)
	case device < 0:
		return nil, fmt.Errorf("%w: device %d", ErrInvalid, device)
	}
	where := fmt.Sprintf("rank %d/%d on device %d", rank, nranks, device)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("nccl: init of %s: %w", where, err)
	}
	c := &Comm{
		l: l, nranks: nranks, rank: rank, device: device,
		nonblocking: l.s.hasInitConfig() && !o.blockingInit,
		stop:        make(chan struct{}),
		wdDone:      make(chan struct{}),
		done:        make(chan struct{}),
	}
	var err error
	if c.nonblocking {
		err = c.initNonblocking(ctx, id, where)
	} else {
		err = c.initBlocking(ctx, id, where, o.abortGrace)
	}
	if err != nil {
		c.stopOnce.Do(func() { close(c.stop) })
		close(c.wdDone)
		return nil, err
	}
	if o.watchdog > 0 {
		go c.watch(o.watchdog)
	} else {
		close(c.wdDone)
	}
	return c, nil
}

func (c *Comm) initNonblocking(ctx context.Context, id UniqueID, where string) error {
	slot := c.l.s.newSlot()
	r := c.l.s.commInit(slot, c.nranks, c.rank, &id, c.device, true)
	c.h = slot.comm()
	slot.release() // the nonblocking call has returned: NCCL no longer writes the slot
	if r < 0 {
		return fmt.Errorf("nccl: init of %s: %w", where, c.l.cudaErr("", int(r)))
	}
	if r != Success && r != InProgress {
		err := c.callErr("ncclCommInitRankConfig", r)
		if c.h != 0 {
			c.l.s.commAbort(c.h)
			c.h = 0
		}
		return fmt.Errorf("nccl: init of %s: %w", where, err)
	}
	if r == InProgress {
		if err := c.waitReady(ctx, "ncclCommInitRankConfig"); err != nil {
			return fmt.Errorf("nccl: init of %s: %w", where, err)
		}
	}
	return nil
}

func (c *Comm) initBlocking(ctx context.Context, id UniqueID, where string, grace time.Duration) error {
	slot := c.l.s.newSlot()
	res := make(chan Result, 1)
	go func() { res <- c.l.s.commInit(slot, c.nranks, c.rank, &id, c.device, false) }()
	select {
	case r := <-res:
		c.h = slot.comm()
		slot.release()
		if r < 0 {
			return fmt.Errorf("nccl: init of %s: %w", where, c.l.cudaErr("", int(r)))
		}
		if r != Success {
			return fmt.Errorf("nccl: init of %s: %w", where, c.l.callErr("ncclCommInitRank", r, 0))
		}
		return nil
	case <-ctx.Done():
	}
	// NCCL publishes the communicator early in ncclCommInitRank; aborting it
	// is the only way to make the call return before every rank has joined.
	cause := fmt.Errorf("%w: init of %s did not complete: %w", ErrAborted, where, ctx.Err())
	graceCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	var r Result
	returned := false
	aborted := false
	_ = pollUntil(graceCtx, func() (bool, error) {
		select {
		case r = <-res:
			returned = true
			return true, nil
		default:
		}
		if h := slot.comm(); h != 0 && !aborted {
			c.l.s.commAbort(h)
			aborted = true
		}
		return false, nil
	})
	if !returned {
		// NCCL ignored the abort for longer than the grace period. The init
		// goroutine ends whenever NCCL returns; the slot stays allocated
		// because NCCL may still write to it.
		return fmt.Errorf("%w (ncclCommInitRank still running %v after the abort)", cause, grace)
	}
	if r == Success && !aborted {
		if h := slot.comm(); h != 0 {
			c.l.s.commDestroy(h) // finished as ctx ended; nobody will use it
		}
	}
	slot.release()
	return cause
}

// waitReady polls a nonblocking communicator until its pending operation
// (init or an enqueue that returned ncclInProgress) completes. When ctx ends
// or the operation fails, the communicator is aborted.
func (c *Comm) waitReady(ctx context.Context, call string) error {
	err := pollUntil(ctx, func() (bool, error) {
		c.hmu.Lock()
		defer c.hmu.Unlock()
		if c.h == 0 {
			return true, c.cause
		}
		st, r := c.l.s.asyncError(c.h)
		switch {
		case r != Success:
			return true, c.callErrLocked("ncclCommGetAsyncError", r)
		case st == Success:
			return true, nil
		case st == InProgress:
			return false, nil
		}
		return true, c.callErrLocked(call, st)
	})
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && err == ctx.Err() {
		err = fmt.Errorf("%w: %s did not complete on rank %d: %w", ErrAborted, call, c.rank, err)
	} else {
		err = fmt.Errorf("%w: %w", ErrAborted, err)
	}
	c.abortWith(err)
	return err
}

func (c *Comm) callErr(call string, r Result) error {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	return c.callErrLocked(call, r)
}

func (c *Comm) callErrLocked(call string, r Result) error {
	return c.l.callErr(call, r, c.h)
}

// watch polls ncclCommGetAsyncError and aborts the communicator on the
// first error, so that collectives blocked on a failed peer return.
func (c *Comm) watch(interval time.Duration) {
	defer close(c.wdDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		c.hmu.Lock()
		if c.h == 0 {
			c.hmu.Unlock()
			return
		}
		var err error
		st, r := c.l.s.asyncError(c.h)
		switch {
		case r != Success:
			err = c.callErrLocked("ncclCommGetAsyncError", r)
		case st != Success && st != InProgress:
			err = c.callErrLocked("async error", st)
		}
		c.hmu.Unlock()
		if err != nil {
			c.abortWith(fmt.Errorf("%w: watchdog on rank %d: %w", ErrAborted, c.rank, err))
			return
		}
	}
}

func (c *Comm) stopWatchdog() { c.stopOnce.Do(func() { close(c.stop) }) }

// abortWith aborts the communicator once, recording cause for later calls.
func (c *Comm) abortWith(cause error) error {
	c.stopWatchdog()
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if c.h == 0 {
		return nil
	}
	h := c.h
	c.h, c.cause = 0, cause
	defer c.doneOnce.Do(func() { close(c.done) })
	if r := c.l.s.commAbort(h); r != Success {
		return c.l.callErr("ncclCommAbort", r, 0)
	}
	return nil
}

// Abort aborts the communicator: pending and later collectives fail with
// ErrAborted. Safe to call concurrently with a blocked collective, and more
// than once.
func (c *Comm) Abort() error {
	if c == nil {
		return fmt.Errorf("%w: nil communicator", ErrUnavailable)
	}
	return c.abortWith(fmt.Errorf("%w: Abort called on rank %d", ErrAborted, c.rank))
}

// Close stops the watchdog and destroys the communicator after the
// collective in progress, if any, has been enqueued (a collective stuck
// inside NCCL on a blocking communicator keeps Close waiting: Abort, or a
// context on the collective, releases it). Closing an aborted communicator
// releases nothing more and returns nil. Idempotent.
func (c *Comm) Close() error {
	if c == nil {
		return fmt.Errorf("%w: nil communicator", ErrUnavailable)
	}
	c.stopWatchdog()
	<-c.wdDone
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.hmu.Lock()
	defer c.hmu.Unlock()
	defer c.doneOnce.Do(func() { close(c.done) })
	h := c.h
	c.h, c.cause = 0, fmt.Errorf("%w (rank %d)", ErrClosed, c.rank)
	if h == 0 {
		return nil
	}
	if r := c.l.s.commDestroy(h); r != Success {
		return c.l.callErr("ncclCommDestroy", r, 0)
	}
	return nil
}

// Done is closed when the communicator has been aborted (by Abort, a
// context or the watchdog) or closed.
func (c *Comm) Done() <-chan struct{} { return c.done }

// Err is why the communicator is unusable, nil while it is usable.
func (c *Comm) Err() error {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	return c.cause
}

// Rank, Size and Device describe the communicator.
func (c *Comm) Rank() int   { return c.rank }
func (c *Comm) Size() int   { return c.nranks }
func (c *Comm) Device() int { return c.device }

// Reduction is how (dt, op) runs on this communicator's NCCL. When it
// reports Postscale, Allreduce and ReduceScatter leave the sum and the
// caller divides by Size().
func (c *Comm) Reduction(dt tensor.DType, op tensor.ReduceOp) (Reduction, error) {
	return MapReduction(dt, op, c.l.version)
}

// live returns the handle for a call, or why there is none.
func (c *Comm) live() (handle, error) {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if c.h == 0 {
		return 0, c.cause
	}
	return c.h, nil
}

// call makes one NCCL call on the live handle. On a nonblocking
// communicator no call blocks, so it holds the handle lock throughout and an
// Abort from another goroutine waits for it instead of freeing the
// communicator under it. A blocking communicator's call may wait for peers
// indefinitely; there Abort must be able to run concurrently (NCCL allows
// it: that is how a stuck call is released).
func (c *Comm) call(f func(h handle) Result) (Result, error) {
	if c.nonblocking {
		c.hmu.Lock()
		defer c.hmu.Unlock()
		if c.h == 0 {
			return 0, c.cause
		}
		return f(c.h), nil
	}
	h, err := c.live()
	if err != nil {
		return 0, err
	}
	return f(h), nil
}

// callCtx is call with ctx honoured while a blocking communicator sits in
// NCCL: when ctx ends first, the communicator is aborted, which makes NCCL
// return. Nonblocking communicators never wait inside NCCL; waitReady
// watches ctx for them.
func (c *Comm) callCtx(ctx context.Context, call string, f func(h handle) Result) (Result, error) {
	if c.nonblocking || ctx.Done() == nil {
		return c.call(f)
	}
	stop := context.AfterFunc(ctx, func() {
		c.abortWith(fmt.Errorf("%w: %s did not return on rank %d: %w", ErrAborted, call, c.rank, context.Cause(ctx)))
	})
	defer stop()
	return c.call(f)
}

// enqueue runs one NCCL call under the op lock and turns its result into an
// error. Errors other than bad arguments leave NCCL communicators unusable,
// so they abort it.
func (c *Comm) enqueue(ctx context.Context, call string, f func(h handle) Result) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("nccl: %s on rank %d: %w", call, c.rank, err)
	}
	c.opMu.Lock()
	defer c.opMu.Unlock()
	r, err := c.callCtx(ctx, call, f)
	if err != nil {
		return err
	}
	switch {
	case r == Success:
		return nil
	case r == InProgress && c.nonblocking:
		return c.waitReady(ctx, call)
	case r < 0:
		return c.l.cudaErr("", int(r))
	}
	if cause := c.Err(); cause != nil { // aborted while we were inside NCCL
		return fmt.Errorf("%w (%s returned %v)", cause, call, r)
	}
	err = c.callErr(call, r)
	if r != InvalidArgument && r != InvalidUsage {
		c.abortWith(fmt.Errorf("%w: %w", ErrAborted, err))
	}
	return err
}

func (c *Comm) dtype(dt tensor.DType) (DataType, error) { return MapDType(dt, c.l.version) }

func checkCount(call string, n int) error {
	if n < 0 {
		return fmt.Errorf("%w: %s count %d", ErrInvalid, call, n)
	}
	return nil
}

// Allreduce reduces count elements of sendbuf across all ranks into recvbuf
// (which may equal sendbuf) on every rank. It enqueues on stream and returns;
// use Synchronize to wait. See Reduction for Average on NCCL < 2.10.
func (c *Comm) Allreduce(ctx context.Context, sendbuf, recvbuf DevicePtr, count int, dt tensor.DType, op tensor.ReduceOp, stream Stream) error {
	red, err := c.Reduction(dt, op)
	if err != nil {
		return err
	}
	if err := checkCount("ncclAllReduce", count); err != nil {
		return err
	}
	return c.enqueue(ctx, "ncclAllReduce", func(h handle) Result {
		return c.l.s.allReduce(c.device, h, sendbuf, recvbuf, count, red.DType, red.Op, stream)
	})
}

// AllGather gathers sendCount elements from every rank into recvbuf, which
// holds Size()*sendCount elements in rank order.
func (c *Comm) AllGather(ctx context.Context, sendbuf, recvbuf DevicePtr, sendCount int, dt tensor.DType, stream Stream) error {
	ndt, err := c.dtype(dt)
	if err != nil {
		return err
	}
	if err := checkCount("ncclAllGather", sendCount); err != nil {
		return err
	}
	return c.enqueue(ctx, "ncclAllGather", func(h handle) Result {
		return c.l.s.allGather(c.device, h, sendbuf, recvbuf, sendCount, ndt, stream)
	})
}

// Broadcast copies count elements of root's sendbuf into every rank's recvbuf.
func (c *Comm) Broadcast(ctx context.Context, sendbuf, recvbuf DevicePtr, count int, dt tensor.DType, root int, stream Stream) error {
	ndt, err := c.dtype(dt)
	if err != nil {
		return err
	}
	if root < 0 || root >= c.nranks {
		return fmt.Errorf("%w: broadcast root %d outside [0, %d)", ErrInvalid, root, c.nranks)
	}
	if err := checkCount("ncclBroadcast", count); err != nil {
		return err
	}
	return c.enqueue(ctx, "ncclBroadcast", func(h handle) Result {
		return c.l.s.broadcast(c.device, h, sendbuf, recvbuf, count, ndt, root, stream)
	})
}

// ReduceScatter reduces Size()*recvCount elements of sendbuf across ranks
// and leaves block Rank() (recvCount elements) in recvbuf.
func (c *Comm) ReduceScatter(ctx context.Context, sendbuf, recvbuf DevicePtr, recvCount int, dt tensor.DType, op tensor.ReduceOp, stream Stream) error {
	red, err := c.Reduction(dt, op)
	if err != nil {
		return err
	}
	if err := checkCount("ncclReduceScatter", recvCount); err != nil {
		return err
	}
	return c.enqueue(ctx, "ncclReduceScatter", func(h handle) Result {
		return c.l.s.reduceScatter(c.device, h, sendbuf, recvbuf, recvCount, red.DType, red.Op, stream)
	})
}

// Alltoall sends block j (count elements) of sendbuf to rank j and receives
// rank j's block for this rank into block j of recvbuf.
func (c *Comm) Alltoall(ctx context.Context, sendbuf, recvbuf DevicePtr, count int, dt tensor.DType, stream Stream) error {
	if err := checkCount("alltoall", count); err != nil {
		return err
	}
	counts := make([]int, c.nranks)
	displs := make([]int, c.nranks)
	for i := range counts {
		counts[i], displs[i] = count, i*count
	}
	return c.AlltoallV(ctx, sendbuf, counts, displs, recvbuf, counts, displs, dt, stream)
}

// AlltoallV is Alltoall with per-peer counts and displacements, in elements:
// sendCounts[j] elements at sendDispls[j] go to rank j, recvCounts[j]
// elements from rank j land at recvDispls[j]. It runs as ncclSend/ncclRecv
// pairs inside one group (NCCL 2.7+).
func (c *Comm) AlltoallV(ctx context.Context, sendbuf DevicePtr, sendCounts, sendDispls []int, recvbuf DevicePtr, recvCounts, recvDispls []int, dt tensor.DType, stream Stream) error {
	ndt, err := c.dtype(dt)
	if err != nil {
		return err
	}
	if !c.l.s.hasSendRecv() {
		return fmt.Errorf("%w: alltoall needs ncclSend/ncclRecv (NCCL >= 2.7), loaded %v", ErrUnsupported, c.l.version)
	}
	for name, s := range map[string][]int{"sendCounts": sendCounts, "sendDispls": sendDispls, "recvCounts": recvCounts, "recvDispls": recvDispls} {
		if len(s) != c.nranks {
			return fmt.Errorf("%w: alltoall %s has %d entries, want one per rank (%d)", ErrInvalid, name, len(s), c.nranks)
		}
		for peer, v := range s {
			if v < 0 {
				return fmt.Errorf("%w: alltoall %s[%d] = %d", ErrInvalid, name, peer, v)
			}
		}
	}
	size := DevicePtr(dt.Size())
	ps := make([]p2p, 0, 2*c.nranks)
	for peer := 0; peer < c.nranks; peer++ {
		if n := sendCounts[peer]; n > 0 {
			ps = append(ps, p2p{send: true, peer: peer, ptr: sendbuf + DevicePtr(sendDispls[peer])*size, count: n})
		}
		if n := recvCounts[peer]; n > 0 {
			ps = append(ps, p2p{peer: peer, ptr: recvbuf + DevicePtr(recvDispls[peer])*size, count: n})
		}
	}
	return c.enqueue(ctx, "ncclGroupEnd(alltoall)", func(h handle) Result {
		return c.l.s.group(c.device, h, ps, ndt, stream)
	})
}

// Synchronize waits for the work queued on stream while watching the
// communicator's async error. If ctx ends first the communicator is aborted:
// a kernel waiting on a lost peer never finishes otherwise.
func (c *Comm) Synchronize(ctx context.Context, stream Stream) error {
	return c.waitDevice(ctx, "stream not done", func() (bool, error) {
		switch e := c.l.s.streamQuery(c.device, stream); e {
		case 0:
			return true, nil
		case cudaErrorNotReady:
			return false, nil
		case -1: // no cudaStreamQuery: block
			return true, c.l.cudaErr("cudaStreamSynchronize", c.l.s.streamSynchronize(c.device, stream))
		default:
			return true, c.l.cudaErr("cudaStreamQuery", e)
		}
	})
}

// waitDevice polls query (true once the device work is done) while
// watching the communicator's async error; see Synchronize.
func (c *Comm) waitDevice(ctx context.Context, what string, query func() (bool, error)) error {
	err := pollUntil(ctx, func() (bool, error) {
		if done, err := query(); done || err != nil {
			return true, err
		}
		c.hmu.Lock()
		defer c.hmu.Unlock()
		if c.h == 0 {
			return true, c.cause
		}
		if st, r := c.l.s.asyncError(c.h); r == Success && st != Success && st != InProgress {
			return true, c.callErrLocked("async error", st)
		}
		return false, nil
	})
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && err == ctx.Err() {
		err = fmt.Errorf("%w: %s on rank %d: %w", ErrAborted, what, c.rank, err)
		c.abortWith(err)
		return err
	}
	if cause := c.Err(); cause != nil {
		return cause // aborted meanwhile (the watchdog, Abort): its reason
	}
	err = fmt.Errorf("%w: %w", ErrAborted, err)
	c.abortWith(err)
	return err
}
