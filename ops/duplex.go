package ops

import (
	"context"
	"runtime"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"

	"github.com/gorovod/gorovod/internal/transport"
)

// Waiting policy of the duplex engine: after a round that moved nothing it
// retries duplexSpins times (over TCP each retry is two nonblocking system
// calls), then yields the core duplexYields times, then blocks in the
// link's Await for at most duplexBlock (so ctx is checked that often).
// Over shared memory a retry is a few loads and the peer's next segment is
// microseconds away: it retries shmSpins times (some 50 µs) and yields
// shmYields times first, since a thread woken from a block (or a sleep)
// comes back tens of microseconds late, with its cache cold. Spinning and
// yielding, it lets the other goroutines of the process run every
// duplexGosched rounds (runtime.Gosched): with GOMAXPROCS=1, as gorun sets
// for one rank per core, another goroutine that became runnable would
// otherwise wait for the runtime's preemption signal (measured 10-40%
// slower at 1-64 MiB).
const (
	duplexGosched = 512
	duplexSpins   = 32
	duplexYields  = 64
	shmSpins      = 2000
	shmYields     = 1000
	duplexBlock   = 5 * time.Millisecond
	duplexNap     = 20 * time.Microsecond
)

// duplex drives both directions of one transport.Duplex link from the
// op's goroutine, as MPI's progress engine does: queued sends go out, in
// order, as the link takes them while receives complete. Against a sender
// goroutine this saves the hand-offs (and over TCP the netpoller's park and
// wake-up) per segment, and keeps one busy thread per worker, which is what
// a worker with one core to itself needs.
type duplex struct {
	tx     transport.Duplex          // sends go here
	rx     transport.Duplex          // receives come from here (often tx)
	rr     transport.DuplexReducer   // rx, when it reduces from its own memory
	fw     transport.DuplexForwarder // rx == tx, when it also sends what it reduces
	spins  int                       // idle rounds retried before yielding
	yields int                       // idle rounds yielded before blocking
	q      [][]byte                  // pending sends, in order
	sent   int                       // bytes of every push sent so far
	queued int                       // bytes of every push
}

// push queues p to be sent after everything queued before it. p must not
// change until sent covers it.
func (d *duplex) push(p []byte) {
	if len(p) > 0 {
		d.q = append(d.q, p)
		d.queued += len(p)
	}
}

// pump moves bytes both ways until dst is full and at least sentAtLeast
// bytes of the pushes were sent; sends may go on past that.
func (d *duplex) pump(ctx context.Context, dst []byte, sentAtLeast int) error {
	return d.pumpInto(ctx, dst, sentAtLeast, nil, nil)
}

// pumpReduce is pump reducing the received bytes into dst (d.rr must be
// set): straight from the link's memory, no copy out.
func (d *duplex) pumpReduce(ctx context.Context, dst []byte, dt tensor.DType, op tensor.ReduceOp) error {
	sink := reduceSink{dt: dt, op: op, dst: dst}
	return d.pumpInto(ctx, dst, 0, &sink, nil)
}

// pumpReduceSend is pumpReduce that also sends dst, reduced, after
// everything queued before (d.fw must be set): while nothing else waits to
// be sent, the link writes each reduced piece straight into its outgoing
// memory in the same pass (reduceOut); from the first piece it cannot
// (no free slot), the rest is reduced in place and queued.
func (d *duplex) pumpReduceSend(ctx context.Context, dst []byte, dt tensor.DType, op tensor.ReduceOp) error {
	sink := reduceSink{dt: dt, op: op, dst: dst}
	f := forwarding{fusing: true, fn: func(dst, src, out []byte) { reduceOut(dt, op, dst, src, out) }}
	if err := d.pumpInto(ctx, dst, 0, &sink, &f); err != nil {
		return err
	}
	d.push(dst[f.fused:])
	return nil
}

// forwarding is the state of a pumpReduceSend.
type forwarding struct {
	fusing bool // no piece went the slow way yet
	fused  int  // bytes of dst reduced and sent in one pass
	fn     func(dst, src, out []byte)
}

func (d *duplex) pumpInto(ctx context.Context, dst []byte, sentAtLeast int, sink *reduceSink, f *forwarding) error {
	idle := 0
	for len(dst) > 0 || d.sent < sentAtLeast {
		moved, err := d.sendQueued()
		if err != nil {
			return err
		}
		if len(dst) > 0 {
			n, err := d.recvSome(dst, sink, f)
			if err != nil {
				return err
			}
			if n > 0 {
				moved = true
				dst = dst[n:]
			}
		}
		if moved {
			idle = 0
			continue
		}
		idle++
		switch {
		case idle <= d.spins:
			if idle%duplexGosched == 0 {
				runtime.Gosched()
			}
			if idle == d.spins && ctx.Err() != nil {
				// Through the link, which returns at once: the error then
				// names the peer waited on, as every other wait's does.
				return d.await(ctx, len(dst), len(d.q) > 0)
			}
		case idle <= d.spins+d.yields:
			runtime.Gosched()
			osYield()
		default:
			if err := d.await(ctx, len(dst), len(d.q) > 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// sendQueued hands the queued sends to the link, in order, as far as it
// takes them now.
func (d *duplex) sendQueued() (bool, error) {
	moved := false
	for len(d.q) > 0 {
		n, err := d.tx.TrySend(d.q[0])
		if err != nil || n == 0 {
			return moved, err
		}
		moved = true
		d.sent += n
		if d.q[0] = d.q[0][n:]; len(d.q[0]) == 0 {
			d.q[0] = nil
			d.q = d.q[1:]
		}
	}
	return moved, nil
}

// recvSome receives what has arrived into dst: copied (sink nil), reduced
// (sink), or reduced and forwarded (f) while that keeps the order of the
// sends (nothing queued).
func (d *duplex) recvSome(dst []byte, sink *reduceSink, f *forwarding) (int, error) {
	switch {
	case sink == nil:
		return d.rx.TryRecv(dst)
	case f == nil:
		return d.rr.TryRecvReduce(dst, sink.fn)
	}
	if f.fusing && len(d.q) == 0 {
		n, err := d.fw.TryRecvReduceSend(dst, sink.dt.Size(), f.fn)
		f.fused += n
		sink.off += n
		d.sent += n
		d.queued += n
		if n > 0 || err != nil {
			return n, err
		}
	}
	n, err := d.rr.TryRecvReduce(dst, sink.fn)
	if n > 0 {
		f.fusing = false
	}
	return n, err
}

// await blocks until the wanted directions may move. On one link that is
// the link's Await; on two links (a ring of more than two ranks: send
// right, receive left) a thread can block on one only, so with both
// directions wanted it naps briefly (yielding the core) and looks again.
func (d *duplex) await(ctx context.Context, recvBytes int, send bool) error {
	switch {
	case d.tx == d.rx:
		return d.tx.Await(ctx, recvBytes, send, duplexBlock)
	case !send:
		return d.rx.Await(ctx, recvBytes, false, duplexBlock)
	case recvBytes == 0:
		return d.tx.Await(ctx, 0, true, duplexBlock)
	}
	if ctx.Err() != nil { // through the link, so the error names the peer
		return d.rx.Await(ctx, recvBytes, false, duplexBlock)
	}
	osNap(duplexNap)
	return nil
}

// flush sends everything queued.
func (d *duplex) flush(ctx context.Context) error { return d.pump(ctx, nil, d.queued) }

// duplexTo returns a duplex engine on peer's link, if it is a
// transport.Duplex.
func (c *Comm) duplexTo(peer int) (*duplex, bool) {
	l, ok := c.links[peer].(transport.Duplex)
	if !ok {
		return nil, false
	}
	rr, _ := l.(transport.DuplexReducer)
	fw, _ := l.(transport.DuplexForwarder)
	return c.withWaits(&duplex{tx: l, rx: l, rr: rr, fw: fw}), true
}

// duplexPair returns a duplex engine sending to right and receiving from
// left, if both links are transport.Duplex.
func (c *Comm) duplexPair(right, left int) (*duplex, bool) {
	tx, ok1 := c.links[right].(transport.Duplex)
	rx, ok2 := c.links[left].(transport.Duplex)
	if !ok1 || !ok2 {
		return nil, false
	}
	rr, _ := rx.(transport.DuplexReducer)
	return c.withWaits(&duplex{tx: tx, rx: rx, rr: rr}), true
}

// withWaits sets d's waiting policy: the Comm's (no spinning when ranks
// outnumber cores, short spins while the host is busy, see setSpins),
// longer over shared memory while the cores are free.
func (c *Comm) withWaits(d *duplex) *duplex {
	d.spins, d.yields = c.spins, duplexYields
	if d.rr != nil {
		d.yields = shmYields
		if c.spins >= memorySpins {
			d.spins = shmSpins
		}
	}
	return d
}

// sendBufferSizer is a link whose kernel send buffer can be resized (TCP)
// and that knows whether its peer is on this host.
type sendBufferSizer interface {
	SetSendBuffer(n int) (prev int, err error)
	LocalPeer() bool
}

// duplexSendBuffer is the send buffer of a TCP link to a peer on this host
// while an allreduce of at least duplexSendBufferMin bytes runs on it as a
// ring of two. Fewer bytes in flight keep the kernel's copies in cache:
// against the 512 KiB of tcp.SocketBufferBytes, 64 KiB measured 1.5x
// faster at 16 MiB and 1.4x at 64 MiB on loopback (3 alternated rounds).
// Not at connection time: rings of three (over two links) lost 15% with
// it; nor across hosts, where the buffer must cover the network's
// bandwidth-delay product.
const (
	duplexSendBuffer    = 64 << 10
	duplexSendBufferMin = 1 << 20
)

// sizerOf finds the sendBufferSizer under l's wrappers (tracked links).
func sizerOf(l any) (sendBufferSizer, bool) {
	for {
		if s, ok := l.(sendBufferSizer); ok {
			return s, true
		}
		u, ok := l.(interface{ Unwrap() transport.Link })
		if !ok {
			return nil, false
		}
		l = u.Unwrap()
	}
}

// narrowSend shrinks the send buffer of d's link to duplexSendBuffer for a
// ring of two over n bytes, returning what puts it back. Best effort: a
// link that cannot resize runs as it is.
func narrowSend(d *duplex, n int) func() {
	sz, ok := sizerOf(d.tx)
	if !ok || n < duplexSendBufferMin || !sz.LocalPeer() {
		return func() {}
	}
	prev, err := sz.SetSendBuffer(duplexSendBuffer)
	if err != nil {
		return func() {}
	}
	return func() { _, _ = sz.SetSendBuffer(prev) }
}

// duplexRing is ring for a group of two over a Duplex link: the peer is
// both neighbours. Chunks are indexed by position p (this rank) and q.
// Reduce-scatter sends chunk q and reduces the peer's chunk p into this
// rank's, segment by segment, forwarding each reduced segment at once for
// the allgather, which receives chunk q in place.
func (c *Comm) duplexRing(ctx context.Context, d *duplex, r ringSpec, seg int) error {
	p, q := r.pos, 1-r.pos
	chunk := func(i int) []byte { return r.buf[r.offs[i]:r.offs[i+1]] }
	if r.rs && r.ag {
		defer narrowSend(d, len(r.buf))()
	}
	if r.rs {
		d.push(chunk(q))
		mine := chunk(p)
		var tmp []byte
		if d.rr == nil {
			tmp = c.buffer(min(seg, len(mine)))
		}
		for off := 0; off < len(mine); {
			s := mine[off:min(off+seg, len(mine))]
			if d.rr != nil {
				if err := d.pumpReduce(ctx, s, r.dt, r.op); err != nil {
					return err
				}
			} else {
				if err := d.pump(ctx, tmp[:len(s)], 0); err != nil {
					return err
				}
				reduce(r.dt, r.op, s, tmp[:len(s)])
			}
			if r.finish != nil {
				r.finish(s)
			}
			if r.ag {
				d.push(s)
			}
			off += len(s)
		}
	} else {
		d.push(chunk(p))
	}
	if r.ag {
		if r.rs {
			// The peer's reduced chunk q lands where this rank's
			// contribution to it came from: all of that must have left
			// first (by causality it has, segment by segment, but the
			// program does not rely on the network for that).
			if err := d.pump(ctx, nil, len(chunk(q))); err != nil {
				return err
			}
		}
		if err := d.pump(ctx, chunk(q), 0); err != nil {
			return err
		}
	}
	return d.flush(ctx)
}

// duplexAhead is how many segments' contributions the allreduce of two
// sends before it waits for the peer's reduced half of the first: enough
// to keep both directions busy, few enough to stay in the cache and the
// link's slots.
const duplexAhead = 1

// duplexAllreduce2 is the allreduce of a group of two over one Duplex link
// that reduces from its own memory (shared memory), cut per segment: each
// segment's halves are the two ranks' chunks, and all three passes over a
// segment (send the peer's half; reduce this rank's half and forward it,
// in one pass where the link can; receive the peer's reduced half) run
// while it is in cache. The stream each way is the contributions of the
// first duplexAhead segments, then per segment g the reduced half of g and
// the contribution of g+duplexAhead.
func (c *Comm) duplexAllreduce2(ctx context.Context, d *duplex, r ringSpec, seg int) error {
	esz := r.dt.Size()
	segs := (len(r.buf) + seg - 1) / seg
	half := func(g, i int) []byte {
		lo, hi := g*seg, min((g+1)*seg, len(r.buf))
		mid := lo + (hi-lo)/esz/2*esz
		if i == 0 {
			return r.buf[lo:mid]
		}
		return r.buf[mid:hi]
	}
	p, q := r.pos, 1-r.pos
	// sentBy[g%len]: d.queued once the contribution of segment g is queued;
	// its half is overwritten by the peer's result only after that is sent.
	var sentBy [2*duplexAhead + 2]int
	contribute := func(g int) {
		d.push(half(g, q))
		sentBy[g%len(sentBy)] = d.queued
	}
	receive := func(g int) error {
		if err := d.pump(ctx, nil, sentBy[g%len(sentBy)]); err != nil {
			return err
		}
		return d.pump(ctx, half(g, q), 0)
	}
	for g := range min(duplexAhead, segs) {
		contribute(g)
	}
	for g := range segs {
		if g >= duplexAhead {
			if err := receive(g - duplexAhead); err != nil {
				return err
			}
		}
		if err := c.reduceForward(ctx, d, r, half(g, p)); err != nil {
			return err
		}
		if g+duplexAhead < segs {
			contribute(g + duplexAhead)
		}
	}
	for g := max(segs-duplexAhead, 0); g < segs; g++ {
		if err := receive(g); err != nil {
			return err
		}
	}
	return d.flush(ctx)
}

// reduceForward receives the peer's contribution to s, reduces it into s,
// finishes s and queues it to be sent back: in one pass over s when the
// link can and there is no finishing step.
func (c *Comm) reduceForward(ctx context.Context, d *duplex, r ringSpec, s []byte) error {
	if d.fw != nil && r.finish == nil {
		return d.pumpReduceSend(ctx, s, r.dt, r.op)
	}
	if err := d.pumpReduce(ctx, s, r.dt, r.op); err != nil {
		return err
	}
	if r.finish != nil {
		r.finish(s)
	}
	d.push(s)
	return nil
}

// duplexRingN is ring for a group of more than two over Duplex links, on
// the op's goroutine alone: one engine sends right and receives left. Each
// received segment is reduced (reduce-scatter: straight from the slot over
// shared memory) and queued for the right neighbour at once. Before the
// allgather overwrites a chunk, the bytes queued from it must have left.
func (c *Comm) duplexRingN(ctx context.Context, d *duplex, r ringSpec, seg, first int, steps []ringStep) error {
	chunk := func(i int) []byte { return r.buf[r.offs[i]:r.offs[i+1]] }
	// queuedUpTo[i]: d.queued after the last push of chunk i.
	queuedUpTo := make([]int, len(r.offs)-1)
	d.push(chunk(first))
	queuedUpTo[first] = d.queued
	var tmp []byte
	for t, st := range steps {
		last := t == len(steps)-1
		mine := st.reduce && st.chunk == r.pos
		if !st.reduce && queuedUpTo[st.chunk] > d.sent {
			if err := d.pump(ctx, nil, queuedUpTo[st.chunk]); err != nil {
				return err
			}
		}
		for b := chunk(st.chunk); len(b) > 0; {
			p := b[:min(seg, len(b))]
			b = b[len(p):]
			var err error
			switch {
			case !st.reduce:
				err = d.pump(ctx, p, 0)
			case d.rr != nil:
				err = d.pumpReduce(ctx, p, r.dt, r.op)
			default:
				if tmp == nil {
					tmp = c.buffer(seg)
				}
				if err = d.pump(ctx, tmp[:len(p)], 0); err == nil {
					reduce(r.dt, r.op, p, tmp[:len(p)])
				}
			}
			if err != nil {
				return err
			}
			if mine && r.finish != nil {
				r.finish(p)
			}
			if !last {
				d.push(p)
				queuedUpTo[st.chunk] = d.queued
			}
		}
	}
	return d.flush(ctx)
}
