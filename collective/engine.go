package collective

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/gorovod/gorovod/internal/tensor"

	"go.uber.org/zap"

	"github.com/gorovod/gorovod/coordinator"
	"github.com/gorovod/gorovod/fusion"
	"github.com/gorovod/gorovod/internal/config"
	"github.com/gorovod/gorovod/internal/timeline"
	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/ops"
)

// entry is one submitted tensor waiting for its response.
type entry struct {
	req        coordinator.Request
	buf        []byte // input; also the output of in-place ops
	out        []byte // result of allgather / alltoall / reduce-scatter
	outCounts  []int
	splits     []int // alltoall: bytes to each rank
	exclusive  func(context.Context, *ops.Comm) error
	lastJoined int
	done       chan struct{}
	err        error
}

func (en *entry) finish(err error) {
	en.err = err
	close(en.done)
}

// engine is one process's background loop and everything it drives: the
// negotiation controller, the data-plane communicator and the queue of
// submitted tensors. Exactly one goroutine (run) negotiates and executes, so
// every rank issues data-plane operations in the same order.
type engine struct {
	cfg     config.Config
	log     *zap.Logger
	topo    topology
	mesh    transport.Mesh
	tracker *failureTracker
	comm    *ops.Comm
	ctrl    *coordinator.Controller
	fbuf    *fusion.Buffer
	met     *metrics
	tl      *timeline.Switch // rank 0 records the timeline; elsewhere it stays empty

	mu       sync.Mutex
	pending  map[string]*entry // submitted and not finished, by name
	queue    []coordinator.Request
	fatal    error // once set, the loop has stopped and new calls fail with it
	stopping bool
	barriers uint64
	nextSet  int               // last process set id handed out (API side)
	sets     map[int]*setState // loop goroutine only

	lastDone   string // loop goroutine only: the last global collective completed
	lastDoneAt time.Time

	wake     chan struct{} // a submission arrived
	stop     chan struct{} // Shutdown asked the loop to stop
	loopDone chan struct{}
	closers  []func() error // run after the loop ends, in reverse order

	metricsURL string // where Prometheus metrics are served, if they are
}

type topology struct {
	rank, size, localRank, localSize, crossRank, crossSize int
	host                                                   string
	epoch                                                  uint64
}

func newEngine(cfg config.Config, log *zap.Logger, topo topology, mesh transport.Mesh, oracle failureOracle) (*engine, error) {
	tracker := newFailureTracker(mesh, oracle)
	if cfg.SegmentBytes == 0 {
		cfg.SegmentBytes = 256 << 10
		if cfg.DisableShm || topo.crossSize > 1 {
			cfg.SegmentBytes = 1 << 20 // TCP moves large segments faster
		}
	}
	comm, err := ops.NewComm(tracker, opsConfig(cfg))
	if err != nil {
		return nil, err
	}
	tl := &timeline.Switch{} // rank 0 records; elsewhere it stays empty
	if cfg.TimelineFile != "" && topo.rank == 0 {
		if err := tl.Start(cfg.TimelineFile, timeline.Options{}); err != nil {
			_ = comm.Close()
			return nil, fmt.Errorf("%w: timeline: %w", ErrInvalid, err)
		}
	}
	ctrl, err := coordinator.NewController(coordinator.Config{
		Observer:             tl,
		Rank:                 topo.rank,
		Size:                 topo.size,
		CacheCapacity:        cfg.CacheCapacity,
		FusionThresholdBytes: cfg.FusionThresholdBytes,
		StallWarning:         stallWarning(cfg),
		StallShutdown:        cfg.StallShutdownTime,
	})
	if err != nil {
		_ = tl.Stop()
		_ = comm.Close()
		return nil, err
	}
	e := &engine{
		tl:  tl,
		cfg: cfg, log: log, topo: topo, mesh: mesh, tracker: tracker, comm: comm, ctrl: ctrl,
		fbuf:     fusion.NewBuffer(),
		met:      newMetrics(),
		pending:  make(map[string]*entry),
		sets:     make(map[int]*setState),
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	return e, nil
}

func opsConfig(cfg config.Config) ops.Config {
	return ops.Config{SegmentBytes: cfg.SegmentBytes, Hierarchical: cfg.HierarchicalAllreduce}
}

func (e *engine) opsConfig() ops.Config { return opsConfig(e.cfg) }

func stallWarning(cfg config.Config) time.Duration {
	if cfg.StallCheckDisabled {
		return 0
	}
	return cfg.StallWarningTime
}

// submit queues a request; the loop picks it up on its next cycle.
func (e *engine) submit(req coordinator.Request, buf []byte, prep func(*entry)) *entry {
	en := &entry{req: req, buf: buf, done: make(chan struct{}), lastJoined: -1}
	if prep != nil {
		prep(en)
	}
	e.mu.Lock()
	switch {
	case e.fatal != nil:
		e.mu.Unlock()
		en.finish(e.fatal)
		return en
	case e.stopping:
		e.mu.Unlock()
		en.finish(fmt.Errorf("%w: %s %q submitted after Shutdown", ErrShutdown, req.Op, req.Name))
		return en
	}
	if _, dup := e.pending[req.Name]; dup {
		e.mu.Unlock()
		en.finish(fmt.Errorf("%w: a collective named %q is already in flight on rank %d; names must be unique among concurrent calls", ErrInvalid, req.Name, e.topo.rank))
		return en
	}
	e.pending[req.Name] = en
	e.queue = append(e.queue, req)
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
	return en
}

// run is the background loop. It owns every data-plane operation.
func (e *engine) run() {
	defer close(e.loopDone)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	x := &exchange{e: e}
	timer := time.NewTimer(e.cfg.CycleTime)
	defer timer.Stop()
	stopped := false
	for {
		if !stopped {
			select {
			case <-e.wake:
				e.settle()
			case <-timer.C:
			case <-e.stop:
				stopped = true
			}
		}
		if !stopped {
			select {
			case <-e.stop:
				stopped = true
			default:
			}
		}
		start := time.Now()
		e.mu.Lock()
		reqs := e.queue
		e.queue = nil
		e.mu.Unlock()

		cctx, ccancel := e.progressDeadline(ctx)
		rl, err := e.ctrl.Cycle(cctx, x, start, reqs, stopped)
		ccancel()
		err = e.timeoutErr(err)
		e.met.cycle(time.Since(start), e.ctrl.Stats())
		if err != nil {
			e.die(e.peerErr(fmt.Errorf("negotiation on rank %d (%s) failed: %w", e.topo.rank, e.topo.host, err)))
			return
		}
		if debugCycles && len(rl.Responses) > 0 {
			fmt.Printf("rank %d cycle reqs=%d responses=%d first=%d\n", e.topo.rank, len(reqs), len(rl.Responses), len(rl.Responses[0].Names))
		}
		e.logStalls()
		now := time.Now()
		for i := range rl.Responses {
			e.tl.OpStart(now, &rl.Responses[i])
		}
		for i := range rl.Responses {
			if err := e.execute(ctx, &rl.Responses[i]); err != nil {
				err = e.timeoutErr(err)
				e.die(e.peerErr(fmt.Errorf("rank %d (%s): %w", e.topo.rank, e.topo.host, err)))
				return
			}
		}
		if rl.Shutdown {
			e.die(fmt.Errorf("%w", ErrShutdown))
			return
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(e.cfg.CycleTime)
	}
}

// progressDeadline bounds one negotiation cycle or one data-plane op: a
// peer that is alive but stuck (stopped, deadlocked) must not hang the job.
func (e *engine) progressDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if e.cfg.ProgressTimeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, e.cfg.ProgressTimeout)
}

// timeoutErr marks a progress deadline as ErrTimeout (the wrapped
// PeerError still names the rank this one was waiting for).
func (e *engine) timeoutErr(err error) error {
	if err != nil && errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrTimeout) {
		return fmt.Errorf("%w: no progress for %v (GOROVOD_PROGRESS_TIMEOUT): %w", ErrTimeout, e.cfg.ProgressTimeout, err)
	}
	return err
}

// settle gives a burst of submissions (a model's gradients) the chance to
// land in one cycle: it polls the queue until no submission arrived for the
// batch window, or a whole cycle time passed. A lone op pays one window.
func (e *engine) settle() {
	quiet := e.cfg.BatchWindow
	if quiet <= 0 {
		return
	}
	start := time.Now()
	lastGrowth, last := start, -1
	for {
		e.mu.Lock()
		n := len(e.queue)
		e.mu.Unlock()
		now := time.Now()
		switch {
		case n != last:
			last, lastGrowth = n, now
		case now.Sub(lastGrowth) >= quiet:
			return
		}
		if now.Sub(start) >= e.cfg.CycleTime {
			return
		}
		runtime.Gosched()
	}
}

// die fails every pending call with err and stops accepting new ones.
func (e *engine) die(err error) {
	e.mu.Lock()
	if e.fatal == nil {
		e.fatal = err
	}
	pend := e.pending
	e.pending = map[string]*entry{}
	e.queue = nil
	e.mu.Unlock()
	if !errors.Is(err, ErrShutdown) {
		e.log.Error("collective loop stopped", zap.Error(err))
		// Fail-stop: peers blocked on this rank (say, waiting for rank 0's
		// responses) see it gone now rather than never.
		_ = e.mesh.Close()
	}
	for _, en := range pend {
		en.finish(err)
	}
}

// peerErr explains a data-plane error: when the job's first failure is
// known (see failureTracker), the error names the rank that was lost first,
// not just the neighbour this rank noticed.
func (e *engine) peerErr(err error) error {
	if !errors.Is(err, transport.ErrPeerLost) {
		return err
	}
	if f, ok := e.tracker.firstFailure(); ok {
		return fmt.Errorf("%s: %w", f, err)
	}
	return err
}

func (e *engine) take(names []string) []*entry {
	out := make([]*entry, len(names))
	e.mu.Lock()
	for i, n := range names {
		out[i] = e.pending[n]
		delete(e.pending, n)
	}
	e.mu.Unlock()
	return out
}

// execute runs one response. A returned error is fatal to the loop (the
// data plane is broken); errors that concern only these tensors finish
// their entries and return nil.
func (e *engine) execute(ctx context.Context, r *coordinator.Response) error {
	entries := e.take(r.Names)
	if r.Error != "" {
		err := responseError(r)
		for _, en := range entries {
			if en != nil {
				en.finish(err)
			}
		}
		return nil
	}
	octx, cancel := e.progressDeadline(ctx)
	err := e.executeOp(octx, r, entries)
	cancel()
	e.tl.OpEnd(time.Now(), r.Names, err)
	if err != nil && !errors.Is(err, tensor.ErrInvalid) {
		err = e.peerErr(e.timeoutErr(err))
	}
	if err == nil && r.ProcessSet == 0 && len(r.Names) > 0 {
		e.lastDone, e.lastDoneAt = r.Names[len(r.Names)-1], time.Now()
	}
	for _, en := range entries {
		if en != nil {
			en.finish(err)
		}
	}
	if err != nil && !errors.Is(err, tensor.ErrInvalid) {
		return err
	}
	return nil
}

func responseError(r *coordinator.Response) error {
	switch r.ErrorKind {
	case coordinator.ErrorMismatch:
		return fmt.Errorf("%w: %s", ErrMismatch, r.Error)
	case coordinator.ErrorTimeout:
		return fmt.Errorf("%w: %s", ErrTimeout, r.Error)
	case coordinator.ErrorShutdown:
		return fmt.Errorf("%w: %s", ErrShutdown, r.Error)
	}
	return fmt.Errorf("%w: %s", ErrInvalid, r.Error)
}

func (e *engine) executeOp(ctx context.Context, r *coordinator.Response, entries []*entry) error {
	start := time.Now()
	defer func() { e.met.op(r, len(entries), time.Since(start)) }()
	comm, err := e.commFor(r.ProcessSet)
	if err != nil {
		return err
	}
	if r.Op != coordinator.OpAllreduce {
		e.tl.Activity(time.Now(), r.Names, "CPU_"+strings.ToUpper(r.Op.String()))
	}
	es := r.DType.Size()
	// A rank that has joined takes part without a tensor of its own: it
	// contributes the op's identity (allreduce), nothing (allgather), or a
	// scratch buffer it then drops (broadcast, reduce-scatter, alltoall).
	bufs := make([][]byte, len(entries))
	for i, en := range entries {
		if en != nil {
			bufs[i] = en.buf
			continue
		}
		if !slices.Contains(r.JoinedRanks, e.topo.rank) && r.Op != coordinator.OpJoin {
			return fmt.Errorf("%w: response for %q has no local tensor", ErrInvalid, r.Names[i])
		}
		if r.Op != coordinator.OpAllgather && i < len(r.Counts) {
			bufs[i] = make([]byte, int(r.Counts[i])*es)
			if r.Op == coordinator.OpAllreduce || r.Op == coordinator.OpReduceScatter {
				identityFill(r.DType, r.ReduceOp, bufs[i])
			}
		}
	}
	switch r.Op {
	case coordinator.OpAllreduce:
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
	case coordinator.OpBroadcast:
		root := r.Root // a global rank; the set's communicator counts members
		if r.ProcessSet != 0 {
			root = slices.Index(e.sets[r.ProcessSet].members, r.Root)
		}
		for _, b := range bufs {
			if err := comm.Broadcast(ctx, b, root); err != nil {
				return err
			}
		}
		return nil
	case coordinator.OpAllgather:
		for i, en := range entries {
			counts := r.AllgatherBytes(i)
			total := 0
			for _, c := range counts {
				total += c
			}
			out := make([]byte, total)
			if err := comm.Allgatherv(ctx, bufs[i], out, counts); err != nil {
				return err
			}
			if en != nil {
				en.out, en.outCounts = out, counts
			}
		}
		return nil
	case coordinator.OpAlltoall:
		for i, en := range entries {
			splits := make([]int, comm.Size())
			if en != nil {
				splits = en.splits
			}
			out, counts, err := comm.Alltoallv(ctx, bufs[i], splits)
			if err != nil {
				return err
			}
			if en != nil {
				en.out, en.outCounts = out, counts
			}
		}
		return nil
	case coordinator.OpReduceScatter:
		for i, en := range entries {
			counts := splitEven(len(bufs[i])/es, comm.Size())
			mine, err := comm.ReduceScatter(ctx, bufs[i], counts, r.DType, r.ReduceOp)
			if err != nil {
				return err
			}
			if en != nil {
				en.out = append([]byte(nil), mine...)
			}
		}
		return nil
	case coordinator.OpJoin:
		for _, en := range entries {
			if en != nil {
				en.lastJoined = r.LastJoined
			}
		}
		return nil
	case coordinator.OpBarrier:
		// Negotiation completing on every rank is the barrier; an exclusive
		// section runs here, at the same point of every rank's op sequence.
		for _, en := range entries {
			if en != nil && en.exclusive != nil {
				if err := en.exclusive(ctx, comm); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return fmt.Errorf("%w: response with unknown op %v", ErrInvalid, r.Op)
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

// logStalls reports, on rank 0, tensors some ranks submitted and others
// did not. The missing ranks are alive: the cycle that found the stall
// needed every rank's background loop to answer. What stalls is their
// program, so the report says what every rank completed last.
func (e *engine) logStalls() {
	rep := e.ctrl.StallReport()
	if rep == "" {
		return
	}
	last := "nothing yet"
	if e.lastDone != "" {
		last = fmt.Sprintf("%q, %v ago", e.lastDone, time.Since(e.lastDoneAt).Round(time.Millisecond))
	}
	e.log.Warn("stalled collectives (stall check): " + rep +
		"\n  the missing ranks are alive (their background loops answered this negotiation cycle) but their programs have not submitted these tensors;" +
		" the last collective every rank completed: " + last)
}

// shutdown stops the loop (coordinated with the other ranks) and releases
// everything; ctx bounds the wait for the other ranks to agree.
func (e *engine) shutdown(ctx context.Context) error {
	e.mu.Lock()
	first := !e.stopping
	e.stopping = true
	e.mu.Unlock()
	if first {
		close(e.stop)
	}
	var err error
	select {
	case <-e.loopDone:
	case <-ctx.Done():
		err = fmt.Errorf("%w: other ranks did not acknowledge shutdown: %w", ErrTimeout, ctx.Err())
		_ = e.mesh.Close() // unblocks the loop
		<-e.loopDone
	}
	e.close()
	return err
}

func (e *engine) close() {
	if err := e.tl.Stop(); err != nil {
		e.log.Warn("closing the timeline", zap.Error(err))
	}
	for _, st := range e.sets {
		if st.comm != nil {
			_ = st.comm.Close()
		}
	}
	_ = e.comm.Close()
	_ = e.mesh.Close()
	for i := len(e.closers) - 1; i >= 0; i-- {
		_ = e.closers[i]()
	}
	e.closers = nil
}

// exchange implements coordinator.Exchange over the data plane. Only the
// loop goroutine calls it, between data-plane ops, so it may use the mesh's
// links directly.
type exchange struct{ e *engine }

const maxControlMessage = 64 << 20

func (x *exchange) Rank() int { return x.e.topo.rank }
func (x *exchange) Size() int { return x.e.topo.size }

func (x *exchange) AllreduceBits(ctx context.Context, bits []uint64, op tensor.ReduceOp) error {
	if len(bits) == 0 || x.e.topo.size == 1 {
		return nil
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(&bits[0])), len(bits)*8)
	return x.e.comm.Allreduce(ctx, b, tensor.Uint64, op, 1, 1)
}

func (x *exchange) GatherToRoot(ctx context.Context, payload []byte) ([][]byte, error) {
	e := x.e
	if e.topo.rank != 0 {
		return nil, sendFrame(ctx, e.tracker.Link(0), payload)
	}
	all := make([][]byte, e.topo.size)
	all[0] = payload
	for r := 1; r < e.topo.size; r++ {
		p, err := recvFrame(ctx, e.tracker.Link(r), r)
		if err != nil {
			return nil, err
		}
		all[r] = p
	}
	return all, nil
}

func (x *exchange) BroadcastFromRoot(ctx context.Context, payload []byte) ([]byte, error) {
	e := x.e
	if e.topo.rank != 0 {
		return recvFrame(ctx, e.tracker.Link(0), 0)
	}
	for r := 1; r < e.topo.size; r++ {
		if err := sendFrame(ctx, e.tracker.Link(r), payload); err != nil {
			return nil, err
		}
	}
	return payload, nil
}

func sendFrame(ctx context.Context, l transport.Link, p []byte) error {
	var hdr [8]byte
	n := uint64(len(p))
	for i := range hdr {
		hdr[i] = byte(n >> (8 * i))
	}
	if err := l.Send(ctx, hdr[:]); err != nil {
		return err
	}
	if len(p) == 0 {
		return nil
	}
	return l.Send(ctx, p)
}

func recvFrame(ctx context.Context, l transport.Link, from int) ([]byte, error) {
	var hdr [8]byte
	if err := l.Recv(ctx, hdr[:]); err != nil {
		return nil, err
	}
	var n uint64
	for i := range hdr {
		n |= uint64(hdr[i]) << (8 * i)
	}
	if n > maxControlMessage {
		return nil, &transport.PeerError{Rank: from, Op: "recv", Err: fmt.Errorf("%w: control message of %d bytes", transport.ErrMalformed, n)}
	}
	p := make([]byte, n)
	if n == 0 {
		return p, nil
	}
	return p, l.Recv(ctx, p)
}

var debugCycles = false
