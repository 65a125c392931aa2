package ops

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"sort"
	"sync"

	"github.com/gorovod/gorovod/internal/tensor"

	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/cma"
)

// errAborted is the cancel cause of an op's context when the op gives up
// because of an error elsewhere (a failed send); it never reaches callers.
var errAborted = errors.New("operation aborted")

// errCommClosed is what an op sees when Close interrupts it.
var errCommClosed = fmt.Errorf("%w: communicator closed", transport.ErrClosed)

// Comm runs collective operations over a transport.Mesh. Every rank of the
// mesh must call the same operations in the same order with the same sizes
// (and the same Config); calls on one Comm are serialised.
//
// A Comm owns one sender goroutine (for worlds of two or more ranks) so
// that sends run while the caller's goroutine receives and reduces; Close
// stops it. When an operation fails after bytes have moved, the byte
// streams are out of step: the Comm closes the mesh so that every peer's
// operation fails promptly instead of hanging, and later operations return
// the original error.
type Comm struct {
	mesh  transport.Mesh
	cfg   Config
	rank  int
	size  int
	links []transport.Link

	// Hierarchical topology (hierOK false when hosts differ in size).
	hierOK bool
	local  []int // ranks on this rank's host, ascending
	cross  []int // ranks with this rank's local index, one per host

	snd *sender // nil when size == 1

	// spins: idle rounds the duplex engine retries before it yields the
	// core (memorySpins over shared memory while the host's cores are not
	// oversubscribed, see load; duplexSpins otherwise); 1 (no spinning)
	// when this host has more ranks than cores, where the peer waited for
	// may need this very core.
	spins int
	load  *hostLoad // nil unless spins may be memorySpins; sampled under opMu

	sc       singleCopy       // under opMu
	shr      sharedState      // under opMu
	scStatus SingleCopyStatus // under mu

	opMu    sync.Mutex // serialises operations
	scratch []byte     // receive buffer of the running op

	mu        sync.Mutex
	closed    bool
	broken    error
	cancelOp  context.CancelCauseFunc // cancels opCtx
	opCtx     context.Context         // the last op's context, kept for the next (see opContext)
	opParent  context.Context         // the ctx opCtx derives from
	closeOnce sync.Once
}

// NewComm checks the mesh and cfg and starts the Comm's sender goroutine.
func NewComm(mesh transport.Mesh, cfg Config) (*Comm, error) {
	if mesh == nil {
		return nil, fmt.Errorf("%w: NewComm: nil mesh", tensor.ErrInvalid)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	rank, size := mesh.Rank(), mesh.Size()
	if size <= 0 || rank < 0 || rank >= size {
		return nil, fmt.Errorf("%w: NewComm: rank %d of size %d", tensor.ErrInvalid, rank, size)
	}
	c := &Comm{mesh: mesh, cfg: cfg, rank: rank, size: size, links: make([]transport.Link, size)}
	c.sc.read, c.sc.write, c.sc.calibrate = cma.Read, cma.Write, c.timeBothWays
	for p := range size {
		if p == rank {
			continue
		}
		if c.links[p] = mesh.Link(p); c.links[p] == nil {
			return nil, fmt.Errorf("%w: NewComm: rank %d has no link to rank %d", tensor.ErrInvalid, rank, p)
		}
	}
	c.topology()
	c.spins = duplexSpins
	switch {
	case len(c.local) > runtime.NumCPU():
		c.spins = 1
	case c.memoryLinks():
		c.spins = memorySpins
		c.load = newHostLoad()
	}
	if size > 1 {
		c.snd = newSender()
		go c.snd.loop()
	}
	return c, nil
}

// memorySpins is Comm.spins when every link is in memory (shared memory:
// a retry is two loads, some 25 ns, so 512 are about 13 us) and the host's
// cores are not oversubscribed. Two ranks' small ops drift apart by a few
// microseconds; a waiter that yields within that hands its core to another
// thread and sees the peer's data late: with 32 spins a 64 KiB allreduce
// through the API took 1.4x as long. When other work waits for the cores
// (hostLoad), spinning keeps the peer from running: beside one busy
// process, two ranks on the 2-core VM ran 4 KiB 4x faster with 32 spins.
const memorySpins = 512

// setSpins picks the spins of the next op from the host's load (see
// memorySpins). Under opMu.
func (c *Comm) setSpins() {
	if c.load == nil {
		return
	}
	c.spins = memorySpins
	if c.load.oversubscribed() {
		c.spins = duplexSpins
	}
}

// memoryLinks reports whether every link reduces from its own memory
// (transport.DuplexReducer: shared memory), where retrying costs no
// system call.
func (c *Comm) memoryLinks() bool {
	for p, l := range c.links {
		if _, ok := l.(transport.DuplexReducer); p != c.rank && !ok {
			return false
		}
	}
	return c.size > 1
}

// topology groups ranks by mesh.Host for the hierarchical algorithm.
func (c *Comm) topology() {
	byHost := map[string][]int{}
	var order []string
	for r := range c.size {
		h := c.mesh.Host(r)
		if _, ok := byHost[h]; !ok {
			order = append(order, h)
		}
		byHost[h] = append(byHost[h], r)
	}
	c.local = byHost[c.mesh.Host(c.rank)]
	idx := sort.SearchInts(c.local, c.rank)
	c.hierOK = true
	for _, h := range order {
		rs := byHost[h]
		if len(rs) != len(c.local) {
			c.hierOK = false
			c.cross = nil
			return
		}
		c.cross = append(c.cross, rs[idx])
	}
}

// Rank is this rank's index in the mesh.
func (c *Comm) Rank() int { return c.rank }

// Size is the number of ranks.
func (c *Comm) Size() int { return c.size }

// Config is the configuration in use, defaults filled in.
func (c *Comm) Config() Config { return c.cfg }

// Close stops the Comm's goroutine. A running operation is interrupted: it
// fails with ErrClosed and, like any failed operation, closes the mesh.
// Otherwise Close leaves the mesh to its owner. Idempotent.
func (c *Comm) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		cancel := c.cancelOp
		c.mu.Unlock()
		if cancel != nil {
			cancel(errCommClosed)
		}
		if c.snd != nil {
			close(c.snd.quit)
			<-c.snd.done
		}
		c.load.close()
		// The interrupted op (if any) returns soon; then no one reads the
		// peers' mappings any more.
		c.opMu.Lock()
		c.closeShared()
		c.opMu.Unlock()
	})
	return nil
}

// run executes one operation body with the Comm's failure handling: the
// body gets a context that a failed send cancels; on failure the sender is
// stopped and drained before the error is returned (so the caller's buffers
// are no longer touched), and the mesh is closed.
func (c *Comm) run(ctx context.Context, name string, body func(ctx context.Context) error) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	opCtx, cancel, err := c.opContext(ctx)
	if err != nil {
		return fmt.Errorf("ops: %s on rank %d: %w", name, c.rank, err)
	}
	c.setSpins()
	if c.snd != nil {
		c.snd.begin(opCtx, cancel)
	}
	err = body(opCtx)
	c.sc.exposed = nil // peers are done reading it (or the op failed)
	if err != nil {
		cancel(errAborted)
	}
	var sendErr error
	if c.snd != nil {
		sendErr = c.snd.finish()
	}
	if err == nil && sendErr == nil {
		return nil // opCtx stays for the next op (see opContext)
	}
	err = firstCause(ctx, opCtx, err, sendErr)
	c.mu.Lock()
	c.broken = err
	c.cancelOp, c.opCtx, c.opParent = nil, nil, nil
	c.mu.Unlock()
	cancel(nil)
	// Fail-stop: peers blocked on this rank see ErrPeerLost now rather than
	// at their deadline.
	_ = c.mesh.Close()
	return fmt.Errorf("ops: %s on rank %d: %w", name, c.rank, err)
}

// opContext returns the context of an op called with ctx: derived from
// ctx, cancelled by a failed send or by Close. The previous op's is reused
// when it was called with the same ctx and nothing cancelled it (deriving
// one per op costs a small op a few hundred nanoseconds); Close or the
// next op with another ctx releases it. Under opMu.
func (c *Comm) opContext(ctx context.Context) (context.Context, context.CancelCauseFunc, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return nil, nil, errCommClosed
	case c.broken != nil:
		return nil, nil, fmt.Errorf("communicator unusable after an earlier failure: %w", c.broken)
	}
	if c.opCtx != nil && sameContext(c.opParent, ctx) && c.opCtx.Err() == nil {
		return c.opCtx, c.cancelOp, nil
	}
	if c.cancelOp != nil {
		c.cancelOp(nil)
	}
	c.opCtx, c.cancelOp = context.WithCancelCause(ctx)
	c.opParent = ctx
	return c.opCtx, c.cancelOp, nil
}

// sameContext reports whether a and b are the same context; contexts of a
// type that cannot be compared never are.
func sameContext(a, b context.Context) bool {
	t := reflect.TypeOf(a)
	return t != nil && t == reflect.TypeOf(b) && t.Comparable() && a == b
}

// firstCause picks the error that explains a failure: an error caused by
// the op's own cancellation (after the sender failed, or Close) is replaced
// by the sender's error or the cancel cause.
func firstCause(parent, opCtx context.Context, errs ...error) error {
	induced := func(e error) bool {
		return errors.Is(e, context.Canceled) && parent.Err() == nil
	}
	for _, e := range errs {
		if e != nil && !induced(e) {
			return e
		}
	}
	if cause := context.Cause(opCtx); cause != nil && !errors.Is(cause, errAborted) && !errors.Is(cause, context.Canceled) {
		return cause
	}
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return errAborted
}

// buffer returns the Comm's scratch buffer of n bytes (valid during an op).
func (c *Comm) buffer(n int) []byte {
	if cap(c.scratch) < n {
		c.scratch = make([]byte, n)
	}
	return c.scratch[:n]
}

// fits reports whether total bytes sent to peer in one operation, in sends
// Send calls, may be written with blocking Sends on the caller's goroutine:
// the link buffers them without the peer receiving (half the capacity, so
// bytes of a previous operation the peer has not read yet cannot make it
// block for long). Only a single Send is trusted: a link of slots (shared
// memory) spends a whole slot on each Send however small, so many small
// Sends can fill it long before BufferedBytes.
func (c *Comm) fits(peer, total, sends int) bool {
	b, ok := c.links[peer].(transport.Buffered)
	return ok && sends <= 1 && total <= b.BufferedBytes()/2
}

// out sends to one peer, inline (no goroutine hand-off) when the whole
// operation's traffic to that peer fits the link's buffer, else through the
// sender goroutine.
type out struct {
	c      *Comm
	peer   int
	inline bool
}

// to is the sending side of an operation that sends peer total bytes in
// one Send.
func (c *Comm) to(peer, total int) out { return c.toN(peer, total, 1) }

// toN is to for an operation that sends peer total bytes in sends Sends.
func (c *Comm) toN(peer, total, sends int) out {
	return out{c: c, peer: peer, inline: c.fits(peer, total, sends)}
}

// send sends p, or queues it; the sequence number (0 for an inline send,
// which is complete on return) is for sender.waitFor.
func (o out) send(ctx context.Context, p []byte) (uint64, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if o.inline {
		return 0, o.c.links[o.peer].Send(ctx, p)
	}
	return o.c.snd.push(o.c.links[o.peer], p), nil
}

// recv reads len(p) bytes from peer.
func (c *Comm) recv(ctx context.Context, peer int, p []byte) error {
	if len(p) == 0 {
		return nil
	}
	return c.links[peer].Recv(ctx, p)
}

// recvReduce receives len(dst) bytes from peer and reduces them into dst,
// straight from the link's memory when it is a transport.RecvReducer.
func (c *Comm) recvReduce(ctx context.Context, peer int, dst []byte, dt tensor.DType, op tensor.ReduceOp) error {
	if len(dst) == 0 {
		return nil
	}
	l := c.links[peer]
	if rr, ok := l.(transport.RecvReducer); ok {
		sink := reduceSink{dt: dt, op: op, dst: dst}
		return rr.RecvReduce(ctx, dst, sink.fn)
	}
	tmp := c.buffer(len(dst))
	if err := l.Recv(ctx, tmp); err != nil {
		return err
	}
	reduce(dt, op, dst, tmp)
	return nil
}

// reduceSink adapts RecvReduce pieces, which may split an element, to the
// element-wise kernels: a split element is completed in carry.
type reduceSink struct {
	dt    tensor.DType
	op    tensor.ReduceOp
	dst   []byte
	off   int // bytes of dst covered so far
	carry [8]byte
	nc    int // bytes in carry
	cOff  int // offset in dst of the carried element
}

func (r *reduceSink) fn(_, src []byte) {
	esz := r.dt.Size()
	i := 0
	if r.nc > 0 {
		k := copy(r.carry[r.nc:esz], src)
		r.nc += k
		i = k
		if r.nc == esz {
			reduce(r.dt, r.op, r.dst[r.cOff:r.cOff+esz], r.carry[:esz])
			r.nc = 0
		}
	}
	whole := (len(src) - i) / esz * esz
	if whole > 0 {
		reduce(r.dt, r.op, r.dst[r.off+i:r.off+i+whole], src[i:i+whole])
	}
	if rest := src[i+whole:]; len(rest) > 0 {
		r.cOff = r.off + i + whole
		r.nc = copy(r.carry[:], rest)
	}
	r.off += len(src)
}

// sendJob is one Send the sender goroutine performs.
type sendJob struct {
	link transport.Link
	p    []byte
}

// sender performs the sends of the running operation in order, so that the
// operation's goroutine can receive (and reduce) at the same time: a ring
// step sends right while receiving from the left, and two ranks doing a
// blocking Send of a large segment to each other would deadlock.
type sender struct {
	mu        sync.Mutex
	q         []sendJob
	head      int
	busy      bool
	pushed    uint64 // jobs ever queued (a job's sequence number)
	completed uint64 // jobs ever finished (sent, failed or dropped)
	want      uint64 // a waitFor is waiting for completed >= want
	err       error  // first send error of the current op
	ctx       context.Context
	cancel    context.CancelCauseFunc

	wake     chan struct{} // cap 1: jobs were queued
	idle     chan struct{} // cap 1: the queue ran empty
	progress chan struct{} // cap 1: completed reached want (or a send failed)
	quit     chan struct{} // closed by Comm.Close
	done     chan struct{} // closed when loop returns
}

func newSender() *sender {
	return &sender{
		wake:     make(chan struct{}, 1),
		idle:     make(chan struct{}, 1),
		progress: make(chan struct{}, 1),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (s *sender) begin(ctx context.Context, cancel context.CancelCauseFunc) {
	s.mu.Lock()
	s.ctx, s.cancel, s.err = ctx, cancel, nil
	s.mu.Unlock()
}

// push queues a send and returns its sequence number (for waitFor).
func (s *sender) push(l transport.Link, p []byte) uint64 {
	s.mu.Lock()
	s.q = append(s.q, sendJob{l, p})
	s.pushed++
	seq := s.pushed
	s.mu.Unlock()
	signal(s.wake)
	return seq
}

// waitFor blocks until the send with sequence number seq (and all before
// it) has finished, so its buffer may be written again; it returns early
// with the op's send error. Besides ordering the program, this gives the
// race detector the happens-before edge that the network provides but
// cannot show it.
func (s *sender) waitFor(seq uint64) error {
	for {
		s.mu.Lock()
		if s.completed >= seq || s.err != nil {
			err := s.err
			s.mu.Unlock()
			return err
		}
		s.want = seq
		s.mu.Unlock()
		select {
		case <-s.progress:
		case <-s.done:
			return errCommClosed
		}
	}
}

// wait blocks until every queued send has completed or failed and returns
// the first send error of the op.
func (s *sender) wait() error {
	for {
		s.mu.Lock()
		if s.head == len(s.q) && !s.busy {
			err := s.err
			s.mu.Unlock()
			return err
		}
		s.mu.Unlock()
		select {
		case <-s.idle:
		case <-s.done:
			return errCommClosed
		}
	}
}

// finish waits for the op's sends and forgets the op (dropping references
// to its buffers).
func (s *sender) finish() error {
	err := s.wait()
	s.mu.Lock()
	clear(s.q)
	s.q, s.head = s.q[:0], 0
	s.ctx, s.cancel = nil, nil
	s.mu.Unlock()
	return err
}

func (s *sender) loop() {
	defer close(s.done)
	for {
		s.mu.Lock()
		for s.head == len(s.q) {
			s.busy = false
			s.mu.Unlock()
			signal(s.idle)
			select {
			case <-s.wake:
			case <-s.quit:
				return
			}
			s.mu.Lock()
		}
		job := s.q[s.head]
		s.q[s.head] = sendJob{}
		s.head++
		s.busy = true
		ctx, failed := s.ctx, s.err != nil
		s.mu.Unlock()
		var err error
		if !failed { // else the op is failing: drop its remaining sends
			err = job.link.Send(ctx, job.p)
		}
		s.mu.Lock()
		s.completed++
		if err != nil && s.err == nil {
			s.err = err
			s.cancel(err) // unblocks the op's receives
		}
		if s.want != 0 && (s.completed >= s.want || s.err != nil) {
			s.want = 0
			signal(s.progress)
		}
		s.mu.Unlock()
	}
}
