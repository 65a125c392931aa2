package ops

import (
	"context"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"

	"github.com/gorovod/gorovod/internal/transport"
)

// Waiting policy of the duplex engine: after a round that moved nothing it
// retries duplexSpins times (over TCP each retry is two nonblocking system
// calls, over shared memory two loads), then yields the core duplexYields
// times, then blocks in the link's Await for at most duplexBlock (so ctx is
// checked that often).
const (
	duplexSpins  = 32
	duplexYields = 64
	duplexBlock  = 5 * time.Millisecond
	duplexNap    = 20 * time.Microsecond
)

// duplex drives both directions of one transport.Duplex link from the
// op's goroutine, as MPI's progress engine does: queued sends go out, in
// order, as the link takes them while receives complete. Against a sender
// goroutine this saves the hand-offs (and over TCP the netpoller's park and
// wake-up) per segment, and keeps one busy thread per worker, which is what
// a worker with one core to itself needs.
type duplex struct {
	tx     transport.Duplex        // sends go here
	rx     transport.Duplex        // receives come from here (often tx)
	rr     transport.DuplexReducer // rx, when it reduces from its own memory
	spins  int                     // idle rounds retried before yielding (Comm.spins)
	q      [][]byte                // pending sends, in order
	sent   int                     // bytes of every push sent so far
	queued int                     // bytes of every push
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
	return d.pumpInto(ctx, dst, sentAtLeast, nil)
}

// pumpReduce is pump reducing the received bytes into dst (d.rr must be
// set): straight from the link's memory, no copy out.
func (d *duplex) pumpReduce(ctx context.Context, dst []byte, dt tensor.DType, op tensor.ReduceOp) error {
	sink := reduceSink{dt: dt, op: op, dst: dst}
	return d.pumpInto(ctx, dst, 0, &sink)
}

func (d *duplex) pumpInto(ctx context.Context, dst []byte, sentAtLeast int, sink *reduceSink) error {
	idle := 0
	for len(dst) > 0 || d.sent < sentAtLeast {
		moved := false
		for len(d.q) > 0 {
			n, err := d.tx.TrySend(d.q[0])
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
			moved = true
			d.sent += n
			if d.q[0] = d.q[0][n:]; len(d.q[0]) == 0 {
				d.q[0] = nil
				d.q = d.q[1:]
			}
		}
		if len(dst) > 0 {
			var n int
			var err error
			if sink != nil {
				n, err = d.rr.TryRecvReduce(dst, sink.fn)
			} else {
				n, err = d.rx.TryRecv(dst)
			}
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
			if idle == d.spins && ctx.Err() != nil {
				// Through the link, which returns at once: the error then
				// names the peer waited on, as every other wait's does.
				return d.await(ctx, len(dst), len(d.q) > 0)
			}
		case idle <= d.spins+duplexYields:
			osYield()
		default:
			if err := d.await(ctx, len(dst), len(d.q) > 0); err != nil {
				return err
			}
		}
	}
	return nil
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
	return &duplex{tx: l, rx: l, rr: rr, spins: c.spins}, true
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
	return &duplex{tx: tx, rx: rx, rr: rr, spins: c.spins}, true
}

// duplexRing is ring for a group of two over a Duplex link: the peer is
// both neighbours. Chunks are indexed by position p (this rank) and q.
// Reduce-scatter sends chunk q and reduces the peer's chunk p into this
// rank's, segment by segment, forwarding each reduced segment at once for
// the allgather, which receives chunk q in place.
func (c *Comm) duplexRing(ctx context.Context, d *duplex, r ringSpec, seg int) error {
	p, q := r.pos, 1-r.pos
	chunk := func(i int) []byte { return r.buf[r.offs[i]:r.offs[i+1]] }
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
