package collective

import (
	"context"
	"errors"
	"fmt"
	"runtime"
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
	"github.com/gorovod/gorovod/internal/transport/control"
	"github.com/gorovod/gorovod/internal/transport/tracked"
	"github.com/gorovod/gorovod/internal/worker"
	"github.com/gorovod/gorovod/ops"
)

// entry is one submitted tensor waiting for its response.
type entry struct {
	Entry      // what a backend sees: buffers, splits, results
	req        coordinator.Request
	exclusive  func(context.Context, *ops.Comm) error
	lastJoined int
	done       chan struct{}
	err        error

	e             *engine     // nil when the call failed before it was queued
	stopWatch     func() bool // stops watching the call's context
	withdrawCause error       // guarded by e.mu: why a withdrawal was asked
}

func (en *entry) finish(err error) {
	if en.stopWatch != nil {
		en.stopWatch()
	}
	en.err = err
	close(en.done)
}

// engine is one process's background loop and everything it drives: the
// negotiation controller, the data-plane communicator and the queue of
// submitted tensors. Exactly one goroutine (run) negotiates and executes, so
// every rank issues data-plane operations in the same order.
type engine struct {
	cfg      config.Config
	log      *zap.Logger
	topo     topology
	mesh     *tracked.Mesh // every link the loop uses reports lost peers
	comm     *ops.Comm
	ctrl     *coordinator.Controller
	fbuf     *fusion.Buffer
	met      *metrics
	cpu      Backend          // host-memory tensors
	device   Backend          // GPU tensors; nil without WithDeviceBackend
	allRanks []int            // 0..size-1: the members of the world\'s group
	tl       *timeline.Switch // rank 0 records the timeline; elsewhere it stays empty

	mu           sync.Mutex
	pending      map[string]*entry // submitted and not finished, by name
	queue        []coordinator.Request
	fatal        error // once set, the loop has stopped and new calls fail with it
	stopping     bool
	barriers     uint64
	freeBarriers []uint64          // numbers of withdrawn barriers, handed out again
	withdrawals  []*entry          // calls whose context ended, for the loop
	nextSet      int               // last process set id handed out (API side)
	sets         map[int]*setState // loop goroutine only
	prog         progress          // loop goroutine only

	inflight   chan inflightOp // device ops enqueued, for the completion goroutine (see AsyncBackend)
	inflightWG sync.WaitGroup  // ops in inflight not finished yet; Add on the loop goroutine only

	wake     chan struct{} // a submission arrived
	stop     chan struct{} // Shutdown asked the loop to stop
	loopDone chan struct{}
	closers  []func() error // run after the loop ends, in reverse order

	metricsURL string // where Prometheus metrics are served, if they are
}

// topology is this process's place in its world.
type topology = worker.Topology

func newEngine(cfg config.Config, log *zap.Logger, topo topology, raw transport.Mesh, oracle tracked.Oracle) (*engine, error) {
	mesh := tracked.New(raw, oracle)
	if cfg.SegmentBytes == 0 {
		cfg.SegmentBytes = 256 << 10
		if cfg.DisableShm || topo.CrossSize > 1 {
			cfg.SegmentBytes = 1 << 20 // TCP moves large segments faster
		}
	}
	comm, err := ops.NewComm(mesh, opsConfig(cfg))
	if err != nil {
		return nil, err
	}
	tl := &timeline.Switch{} // rank 0 records; elsewhere it stays empty
	if cfg.TimelineFile != "" && topo.Rank == 0 {
		if err := tl.Start(cfg.TimelineFile, timeline.Options{MarkCycles: cfg.TimelineMarkCycles}); err != nil {
			_ = comm.Close()
			return nil, fmt.Errorf("%w: timeline: %w", ErrInvalid, err)
		}
	}
	ctrl, err := coordinator.NewController(coordinator.Config{
		Observer:             timeline.Observer[coordinator.OpType]{S: tl},
		Rank:                 topo.Rank,
		Size:                 topo.Size,
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
		cfg: cfg, log: log, topo: topo, mesh: mesh, comm: comm, ctrl: ctrl,
		fbuf:     fusionBuffer(cfg),
		met:      newMetrics(),
		pending:  make(map[string]*entry),
		sets:     make(map[int]*setState),
		inflight: make(chan inflightOp, inflightQueue),
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	e.cpu = cpuBackend{e: e}
	for r := range topo.Size {
		e.allRanks = append(e.allRanks, r)
	}
	return e, nil
}

func opsConfig(cfg config.Config) ops.Config {
	algo, _ := ops.ParseAlgorithm(cfg.AllreduceAlgorithm) // validated with the config
	return ops.Config{SegmentBytes: cfg.SegmentBytes, Hierarchical: cfg.HierarchicalAllreduce,
		SmallBytes: cfg.SmallBytes, Algorithm: algo,
		SingleCopyOff: cfg.DisableSingleCopy, SingleCopyMaxBytes: cfg.SingleCopyMaxBytes,
		SharedBuffersOff: cfg.DisableSharedBuffers}
}

// fusionBuffer draws from shared memory (ops.Alloc), so that fused
// allreduces run on the peers' buffers directly, unless that is off.
func fusionBuffer(cfg config.Config) *fusion.Buffer {
	if cfg.DisableSharedBuffers {
		return fusion.NewBuffer()
	}
	return fusion.NewBufferAlloc(sharedAllocator{})
}

type sharedAllocator struct{}

func (sharedAllocator) Alloc(n int) ([]byte, error) { return ops.Alloc(n) }
func (sharedAllocator) Free(b []byte) error         { return ops.Free(b) }

func (e *engine) opsConfig() ops.Config { return opsConfig(e.cfg) }

func stallWarning(cfg config.Config) time.Duration {
	if cfg.StallCheckDisabled {
		return 0
	}
	return cfg.StallWarningTime
}

// submit queues a request; the loop picks it up on its next cycle.
func (e *engine) submit(ctx context.Context, req coordinator.Request, buf []byte, prep func(*entry)) *entry {
	en := &entry{Entry: Entry{Name: req.Name, Buf: buf}, req: req, done: make(chan struct{}), lastJoined: -1}
	if prep != nil {
		prep(en)
	}
	en.e = e
	en.watch(ctx) // before the loop can see en: finish reads stopWatch
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
		en.finish(fmt.Errorf("%w: a collective named %q is already in flight on rank %d; names must be unique among concurrent calls", ErrInvalid, req.Name, e.topo.Rank))
		return en
	}
	e.pending[req.Name] = en
	e.queue = append(e.queue, req)
	e.mu.Unlock()
	if err := ctx.Err(); err != nil { // ended before the watch could see it queued
		en.withdraw(err)
	}
	select {
	case e.wake <- struct{}{}:
	default:
	}
	return en
}

// inflightQueue is how many enqueued device ops the loop may run ahead of
// their completion before Enqueue waits for the oldest.
const inflightQueue = 64

// inflightOp is a device op an AsyncBackend enqueued: its entries finish
// when the completion does.
type inflightOp struct {
	r        *coordinator.Response
	entries  []*entry
	c        Completion
	start    time.Time
	deadline time.Time // the progress deadline from Enqueue; zero: none
}

// complete is the completion goroutine of run: it waits for enqueued
// device ops in order, finishes their entries, and stops the world when
// one failed. It ends when run closes ops, after the last one.
func (e *engine) complete(ops <-chan inflightOp, done chan<- struct{}) {
	defer close(done)
	for op := range ops {
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if !op.deadline.IsZero() {
			ctx, cancel = context.WithDeadline(ctx, op.deadline)
		}
		err := op.c.Wait(ctx)
		cancel()
		if err = e.finishOp(op.r, op.entries, op.start, err); err != nil {
			err = e.timeoutErr(err)
			e.die(typed(e.peerErr(fmt.Errorf("rank %d (%s): %w", e.topo.Rank, e.topo.Host, err)), true))
		}
		e.inflightWG.Done()
	}
}

// run is the background loop. It owns every data-plane operation.
func (e *engine) run() {
	defer close(e.loopDone)
	completed := make(chan struct{})
	go e.complete(e.inflight, completed)
	defer func() { // the device ops still in flight end, each within its deadline
		close(e.inflight)
		<-completed
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer e.prog.release()
	defer e.fbuf.Release()
	x := &exchange{e: e}
	timer := time.NewTimer(e.cfg.CycleTime)
	defer timer.Stop()
	stopped := false
	busy := false // submissions arrived while the last cycle negotiated: a burst
	for {
		stopped = e.awaitWork(timer, busy, stopped)
		if err := e.applyWithdrawals(); err != nil {
			e.die(err)
			return
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
			e.die(typed(e.peerErr(fmt.Errorf("negotiation on rank %d (%s) failed: %w", e.topo.Rank, e.topo.Host, err)), true))
			return
		}
		if debugCycles && len(rl.Responses) > 0 {
			fmt.Printf("rank %d cycle reqs=%d responses=%d first=%d\n", e.topo.Rank, len(reqs), len(rl.Responses), len(rl.Responses[0].Names))
		}
		e.logStalls()
		// A burst is what arrived while this cycle negotiated; a call
		// submitted once the ops below have completed others is not (it
		// may well be the caller's next lone call).
		busy = e.queued() > 0
		now := time.Now()
		for i := range rl.Responses {
			if e.tl.Enabled() {
				r := &rl.Responses[i]
				e.tl.OpStart(now, timeline.Op{Op: r.Op.String(), DType: r.DType.String(), Names: r.Names, Counts: r.Counts, ProcessSet: r.ProcessSet})
			}
		}
		for i := range rl.Responses {
			if err := e.execute(ctx, &rl.Responses[i]); err != nil {
				err = e.timeoutErr(err)
				e.die(typed(e.peerErr(fmt.Errorf("rank %d (%s): %w", e.topo.Rank, e.topo.Host, err)), true))
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

// awaitWork waits for a submission (then settles a burst; busy: calls
// arrived while the last cycle negotiated), the cycle time or Shutdown, and reports
// whether Shutdown was asked; once it was, the loop no longer waits.
func (e *engine) awaitWork(timer *time.Timer, busy, stopped bool) bool {
	if stopped {
		return true
	}
	select {
	case <-e.wake:
		e.settle(busy)
	case <-timer.C:
	case <-e.stop:
		return true
	}
	select {
	case <-e.stop:
		return true
	default:
		return false
	}
}

// progressDeadline bounds one negotiation cycle or one data-plane op: a
// peer that is alive but stuck (stopped, deadlocked) must not hang the job.
// Loop goroutine only. See progress for the context it returns.
func (e *engine) progressDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if e.cfg.ProgressTimeout <= 0 {
		return ctx, func() {}
	}
	return e.prog.bound(ctx, e.cfg.ProgressTimeout), func() {}
}

// progress hands the loop's phases one deadline context while it has at
// least 63/64 of ProgressTimeout left, so a phase gets between 63/64 of it
// and all of it: a context and a timer per phase cost a microsecond of a
// small op's ten. Loop goroutine only; release cancels the last one.
type progress struct {
	parent context.Context
	ctx    context.Context
	cancel context.CancelFunc
	until  time.Time
}

func (p *progress) bound(parent context.Context, limit time.Duration) context.Context {
	now := time.Now()
	if p.ctx == nil || p.parent != parent || p.until.Sub(now) < limit-limit/64 {
		p.release()
		p.parent, p.until = parent, now.Add(limit)
		p.ctx, p.cancel = context.WithDeadline(parent, p.until)
	}
	return p.ctx
}

func (p *progress) release() {
	if p.cancel != nil {
		p.cancel()
	}
	*p = progress{}
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
// batch window, or a whole cycle time passed. It waits only for a burst:
// when busy (submissions arrived while the last cycle negotiated) or more than one
// submission is queued. A lone call on an idle loop is negotiated at once;
// what arrives while its cycle negotiates marks the next wake a burst.
// Shutdown ends the wait.
func (e *engine) settle(busy bool) {
	quiet := e.cfg.BatchWindow
	if quiet <= 0 || (!busy && e.queued() <= 1) {
		return
	}
	start := time.Now()
	lastGrowth, last := start, -1
	for {
		n := e.queued()
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
		select {
		case <-e.stop: // shutting down: no burst to wait for
			return
		default:
		}
		runtime.Gosched()
	}
}

// queued is the number of submissions the loop has not taken yet.
func (e *engine) queued() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.queue)
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
// known (see package tracked), the error names the rank that was lost or
// stalled first, not just the neighbour this rank noticed.
func (e *engine) peerErr(err error) error {
	if errors.Is(err, ErrTimeout) {
		return e.mesh.ExplainAlways(err)
	}
	return e.mesh.Explain(err)
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
	start := time.Now()
	octx, cancel := e.progressDeadline(ctx)
	c, err := e.executeOp(octx, r, entries)
	cancel()
	if err == nil && c != nil {
		op := inflightOp{r: r, entries: entries, c: c, start: start}
		if e.cfg.ProgressTimeout > 0 {
			op.deadline = start.Add(e.cfg.ProgressTimeout)
		}
		e.inflightWG.Add(1)
		e.inflight <- op
		return nil
	}
	return e.finishOp(r, entries, start, err)
}

// finishOp ends a response's entries with the outcome of its op (err
// from the backend, nil on success). A returned error is fatal to the
// loop; see execute.
func (e *engine) finishOp(r *coordinator.Response, entries []*entry, start time.Time, err error) error {
	e.met.op(r, len(entries), time.Since(start))
	e.tl.OpEnd(time.Now(), r.Names, err)
	perTensor := errors.Is(err, tensor.ErrInvalid) // the ops refused these tensors before moving data
	if err != nil && !perTensor {
		err = e.peerErr(e.timeoutErr(err))
	}
	err = typed(err, !perTensor)
	for _, en := range entries {
		if en != nil {
			en.finish(err)
		}
	}
	if err != nil && !perTensor {
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

// executeOp runs one response: join and barrier (with an exclusive
// section) here, data-moving ops on the backend of the response's device.
// A non-nil Completion means an AsyncBackend enqueued the op.
func (e *engine) executeOp(ctx context.Context, r *coordinator.Response, entries []*entry) (Completion, error) {
	switch r.Op {
	case coordinator.OpJoin, coordinator.OpBarrier:
		e.inflightWG.Wait() // the device ops before them end first
		return nil, e.executeSync(ctx, r, entries)
	}
	b, err := e.backendFor(r.Device)
	if err != nil {
		return nil, err
	}
	g, err := e.group(r)
	if err != nil {
		return nil, err
	}
	views := make([]*Entry, len(entries))
	for i, en := range entries {
		if en != nil {
			views[i] = &en.Entry
		}
	}
	if ab, ok := b.(AsyncBackend); ok && Device(r.Device) != CPU {
		return ab.Enqueue(ctx, r, views, g)
	}
	return nil, b.Execute(ctx, r, views, g)
}

// executeSync runs a join or a barrier.
func (e *engine) executeSync(ctx context.Context, r *coordinator.Response, entries []*entry) error {
	switch r.Op {
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
				if err := en.exclusive(ctx, e.comm); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return fmt.Errorf("%w: %v is not a join or a barrier", ErrInvalid, r.Op)
}

// logStalls reports, on rank 0, tensors some ranks submitted and others
// did not, with what each missing rank was last seen doing (see
// coordinator.Controller.StallReport). The missing ranks are alive: the
// cycle that found the stall needed every rank's background loop to
// answer. What stalls is their program.
func (e *engine) logStalls() {
	rep := e.ctrl.StallReport()
	if rep == "" {
		return
	}
	e.log.Warn("stalled collectives (stall check): " + rep +
		"\n  the missing ranks are alive (their background loops answered this negotiation cycle) but their programs have not submitted these tensors")
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
	e.closeDeviceWorld()
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

// closeDeviceWorld tells a device backend that implements WorldCloser
// that this world is over (its loop has stopped; its host planes are
// still open).
func (e *engine) closeDeviceWorld() {
	wc, ok := e.device.(WorldCloser)
	if !ok {
		return
	}
	hosts := []*ops.Comm{e.comm}
	for _, st := range e.sets {
		if st.comm != nil {
			hosts = append(hosts, st.comm)
		}
	}
	if err := wc.CloseWorld(hosts); err != nil {
		e.log.Warn("closing the device backend's state of this world", zap.Error(err))
	}
}

// exchange implements coordinator.Exchange over the data plane: the bit
// vectors through the algorithms, requests and responses through package
// control, over the tracked links, so that a peer lost or stalled during
// negotiation is reported like one lost during an op. Only the loop
// goroutine calls it, between data-plane ops.
type exchange struct{ e *engine }

func (x *exchange) Rank() int { return x.e.topo.Rank }
func (x *exchange) Size() int { return x.e.topo.Size }

func (x *exchange) AllreduceBits(ctx context.Context, bits []uint64, op tensor.ReduceOp) error {
	if len(bits) == 0 || x.e.topo.Size == 1 {
		return nil
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(&bits[0])), len(bits)*8)
	return x.e.comm.Allreduce(ctx, b, tensor.Uint64, op, 1, 1)
}

func (x *exchange) GatherToRoot(ctx context.Context, payload []byte) ([][]byte, error) {
	return control.GatherToRoot(ctx, x.e.mesh, payload)
}

func (x *exchange) BroadcastFromRoot(ctx context.Context, payload []byte) ([]byte, error) {
	return control.BroadcastFromRoot(ctx, x.e.mesh, payload)
}

var debugCycles = false
