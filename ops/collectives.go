package ops

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/gorovod/gorovod/internal/tensor"

	"github.com/gorovod/gorovod/internal/transport"
)

func checkCounts(what string, counts []int, n int) (int, error) {
	if len(counts) != n {
		return 0, fmt.Errorf("%w: %s: %d counts for %d ranks", tensor.ErrInvalid, what, len(counts), n)
	}
	total := 0
	for r, k := range counts {
		if k < 0 {
			return 0, fmt.Errorf("%w: %s: count %d for rank %d is negative", tensor.ErrInvalid, what, k, r)
		}
		total += k
	}
	return total, nil
}

func prefix(counts []int, unit int) []int {
	offs := make([]int, len(counts)+1)
	for i, k := range counts {
		offs[i+1] = offs[i] + k*unit
	}
	return offs
}

// Allgatherv gathers every rank's send into recv, in rank order:
// counts[r] is the number of bytes rank r contributes (counts may differ
// and be zero), len(send) == counts[Rank()] and len(recv) == sum(counts).
// It runs the allgather half of the ring, forwarding segments as they
// arrive.
func (c *Comm) Allgatherv(ctx context.Context, send, recv []byte, counts []int) error {
	total, err := checkCounts("allgatherv", counts, c.size)
	if err != nil {
		return err
	}
	if len(send) != counts[c.rank] || len(recv) != total {
		return fmt.Errorf("%w: allgatherv on rank %d: send has %d bytes (count %d), recv %d (counts sum to %d)",
			tensor.ErrInvalid, c.rank, len(send), counts[c.rank], len(recv), total)
	}
	offs := prefix(counts, 1)
	copy(recv[offs[c.rank]:], send)
	if c.size == 1 || total == 0 {
		return nil
	}
	return c.run(ctx, "allgatherv", func(ctx context.Context) error {
		if done, err := c.onShared(ctx, total, recv, sameLen(recv), func(views [][]byte) error {
			return c.sharedAllgatherv(ctx, views, send, offs)
		}); done || err != nil {
			return err
		}
		if use, err := c.useSingleCopyMove(ctx, total, 0); err != nil || use {
			if err != nil {
				return err
			}
			return c.singleCopyAllgatherv(ctx, send, recv, counts, offs)
		}
		return c.ring(ctx, ringSpec{group: all(c.size), pos: c.rank, buf: recv, offs: offs, ag: true})
	})
}

// ReduceScatter reduces buf over all ranks and leaves rank r with the r-th
// part: counts[r] elements of dt (sum(counts) elements in buf). The result
// is computed in place; mine aliases buf. Average divides by Size
// (truncating for integers).
func (c *Comm) ReduceScatter(ctx context.Context, buf []byte, counts []int, dt tensor.DType, op tensor.ReduceOp) ([]byte, error) {
	if err := checkReduce(dt, op); err != nil {
		return nil, fmt.Errorf("ops: reducescatter: %w", err)
	}
	total, err := checkCounts("reducescatter", counts, c.size)
	if err != nil {
		return nil, err
	}
	if len(buf) != total*dt.Size() {
		return nil, fmt.Errorf("%w: reducescatter %s on rank %d: buffer has %d bytes, counts sum to %d elements (%d bytes)",
			tensor.ErrInvalid, dt, c.rank, len(buf), total, total*dt.Size())
	}
	offs := prefix(counts, dt.Size())
	mine := buf[offs[c.rank]:offs[c.rank+1]]
	finish := c.finisher(dt, op, 1)
	rop := op
	if op == tensor.Average {
		rop = tensor.Sum
	}
	if c.size == 1 || total == 0 {
		if finish != nil {
			finish(mine)
		}
		return mine, nil
	}
	err = c.run(ctx, "reducescatter", func(ctx context.Context) error {
		if done, err := c.onShared(ctx, len(buf), buf, sameLen(buf), func(views [][]byte) error {
			return c.sharedReduceScatter(ctx, views, offs, dt, rop, finish)
		}); done || err != nil {
			return err
		}
		if use, err := c.useSingleCopy(ctx, len(buf), false); err != nil || use {
			if err != nil {
				return err
			}
			return c.singleCopyReduceScatter(ctx, buf, offs, dt, rop, finish)
		}
		return c.ring(ctx, ringSpec{group: all(c.size), pos: c.rank, buf: buf, offs: offs, rs: true, dt: dt, op: rop, finish: finish})
	})
	if err != nil {
		return nil, err
	}
	return mine, nil
}

// Broadcast copies root's buf to every rank's buf (same length
// everywhere). Below SmallBytes it uses a binomial tree (log2 n steps);
// larger buffers flow down a chain starting at root in segments, each rank
// forwarding a segment while it receives the next.
func (c *Comm) Broadcast(ctx context.Context, buf []byte, root int) error {
	if root < 0 || root >= c.size {
		return fmt.Errorf("%w: broadcast: root %d out of range for %d ranks", tensor.ErrInvalid, root, c.size)
	}
	if c.size == 1 || len(buf) == 0 {
		return nil
	}
	n := c.size
	v := (c.rank - root + n) % n // position relative to root
	real := func(v int) int { return (v + root) % n }
	small := len(buf) < c.cfg.SmallBytes
	return c.run(ctx, "broadcast", func(ctx context.Context) error {
		if done, err := c.onShared(ctx, len(buf), buf, sameLen(buf), func(views [][]byte) error {
			return c.sharedBroadcast(ctx, views, root)
		}); done || err != nil {
			return err
		}
		if use, err := c.useSingleCopyMove(ctx, len(buf), singleCopyBroadcastMax); err != nil || use {
			if err != nil {
				return err
			}
			return c.singleCopyBroadcast(ctx, buf, root)
		}
		if small {
			// Binomial tree: receive from the parent, then send to the
			// children, largest subtree first. Children only wait on us,
			// so blocking sends cannot deadlock.
			mask := 1
			for ; mask < n; mask <<= 1 {
				if v&mask != 0 {
					if err := c.recv(ctx, real(v-mask), buf); err != nil {
						return err
					}
					break
				}
			}
			for mask >>= 1; mask > 0; mask >>= 1 {
				if v+mask < n {
					if err := c.links[real(v+mask)].Send(ctx, buf); err != nil {
						return err
					}
				}
			}
			return nil
		}
		seg := c.cfg.SegmentBytes
		if v == 0 {
			// Root only sends: blocking sends on this goroutine.
			if err := c.links[real(1)].Send(ctx, buf); err != nil {
				return err
			}
			return c.chainDone(ctx, real(n-1), false)
		}
		if v == n-1 {
			if err := c.recv(ctx, real(v-1), buf); err != nil {
				return err
			}
			return c.chainDone(ctx, root, true)
		}
		o := c.toN(real(v+1), len(buf), (len(buf)+seg-1)/seg)
		for b := buf; len(b) > 0; {
			p := b[:min(seg, len(b))]
			b = b[len(p):]
			if err := c.recv(ctx, real(v-1), p); err != nil {
				return err
			}
			if _, err := o.send(ctx, p); err != nil {
				return err
			}
		}
		if !o.inline {
			return c.snd.wait()
		}
		return nil
	})
}

// chainDone ends a chain broadcast on the root and the last rank together:
// the last rank tells the root it has everything. Otherwise the root ends
// a whole copy early, and through the API it then waits out the last
// rank's copy in the next negotiation, long enough to fall asleep there.
func (c *Comm) chainDone(ctx context.Context, peer int, last bool) error {
	const tok = 0xbd
	if last {
		return c.links[peer].Send(ctx, []byte{tok})
	}
	var in [1]byte
	if err := c.recv(ctx, peer, in[:]); err != nil {
		return err
	}
	if in[0] != tok {
		return fmt.Errorf("%w: broadcast: rank %d sent %#x, not the end-of-chain token (operations out of step?)", transport.ErrMalformed, peer, in[0])
	}
	return nil
}

// Alltoallv sends send[off_r : off_r+sendCounts[r]] to every rank r (offsets
// in rank order) and returns what every rank sent to this one,
// concatenated in rank order, with the byte count from each rank. The
// receive counts are exchanged first, so they need not be known.
func (c *Comm) Alltoallv(ctx context.Context, send []byte, sendCounts []int) ([]byte, []int, error) {
	return c.AlltoallvInto(ctx, send, sendCounts, nil)
}

// AlltoallvInto is Alltoallv receiving into dst[:n] when cap(dst) holds
// the n bytes received (dst must not overlap send), into a new slice
// otherwise. On one host with the single copy on, every rank reads its
// parts straight from the peers' send buffers; else a pairwise exchange.
func (c *Comm) AlltoallvInto(ctx context.Context, send []byte, sendCounts []int, dst []byte) ([]byte, []int, error) {
	total, err := checkCounts("alltoallv", sendCounts, c.size)
	if err != nil {
		return nil, nil, err
	}
	if total != len(send) {
		return nil, nil, fmt.Errorf("%w: alltoallv on rank %d: send counts sum to %d bytes, send has %d", tensor.ErrInvalid, c.rank, total, len(send))
	}
	soffs := prefix(sendCounts, 1)
	recvCounts := make([]int, c.size)
	recvCounts[c.rank] = sendCounts[c.rank]
	if c.size == 1 {
		recv := grow(dst, len(send))
		copy(recv, send)
		return recv, recvCounts, nil
	}
	var recv []byte
	err = c.run(ctx, "alltoallv", func(ctx context.Context) error {
		hdrs, err := c.alltoallHeaders(ctx, len(send), sendCounts, soffs)
		if err != nil {
			return err
		}
		largest := len(send)
		for q, h := range hdrs {
			if q != c.rank {
				recvCounts[q], largest = h.count, max(largest, h.total)
			}
		}
		roffs := prefix(recvCounts, 1)
		recv = grow(dst, roffs[c.size])
		mine := func() { copy(recv[roffs[c.rank]:], send[soffs[c.rank]:soffs[c.rank+1]]) }
		if done, err := c.onShared(ctx, largest, send, func(q int) int { return hdrs[q].total }, func(views [][]byte) error {
			return c.sharedAlltoallv(ctx, views, recv, roffs, hdrs, mine)
		}); done || err != nil {
			return err
		}
		if use, err := c.useSingleCopy(ctx, largest, false); err != nil || use {
			if err != nil {
				return err
			}
			return c.singleCopyAlltoallv(ctx, send, recv, roffs, hdrs, mine)
		}
		mine()
		n, r := c.size, c.rank
		for s := 1; s < n; s++ {
			to, from := (r+s)%n, (r-s+n)%n
			if err := c.shift(ctx, to, send[soffs[to]:soffs[to+1]], from, recv[roffs[from]:roffs[from+1]]); err != nil {
				return err
			}
		}
		return c.snd.wait()
	})
	if err != nil {
		return nil, nil, err
	}
	return recv, recvCounts, nil
}

// a2aHeader is what a rank tells each peer before an alltoallv: the bytes
// it sends that peer, where they start in its send buffer (the single copy
// reads them there) and its whole send size (the path is chosen by the
// largest, the same on every rank).
type a2aHeader struct{ count, off, total int }

const a2aHeaderBytes = 24

// alltoallHeaders exchanges the headers (pairwise schedule: at step s send
// to r+s, receive from r-s) and returns the one from each peer.
func (c *Comm) alltoallHeaders(ctx context.Context, total int, sendCounts, soffs []int) ([]a2aHeader, error) {
	n, r := c.size, c.rank
	le := binary.LittleEndian
	// Separate send and receive headers: a queued send must not be
	// overwritten by a later receive.
	shdr, rhdr := make([]byte, a2aHeaderBytes*n), make([]byte, a2aHeaderBytes*n)
	hdrs := make([]a2aHeader, n)
	for s := 1; s < n; s++ {
		to, from := (r+s)%n, (r-s+n)%n
		out, in := shdr[a2aHeaderBytes*to:a2aHeaderBytes*(to+1)], rhdr[a2aHeaderBytes*from:a2aHeaderBytes*(from+1)]
		le.PutUint64(out, uint64(sendCounts[to]))
		le.PutUint64(out[8:], uint64(soffs[to]))
		le.PutUint64(out[16:], uint64(total))
		if err := c.shift(ctx, to, out, from, in); err != nil {
			return nil, err
		}
		k, off, tot := le.Uint64(in), le.Uint64(in[8:]), le.Uint64(in[16:])
		if tot > 1<<40 || k > tot || off > tot-k {
			return nil, fmt.Errorf("%w: alltoallv: rank %d announced %d bytes at %d of %d", tensor.ErrInvalid, from, k, off, tot)
		}
		hdrs[from] = a2aHeader{count: int(k), off: int(off), total: int(tot)}
	}
	return hdrs, c.snd.wait()
}

// singleCopyAlltoallv reads every peer's part for this rank from its send
// buffer straight into recv, then copies its own part (mine) while the
// peers may still be reading.
func (c *Comm) singleCopyAlltoallv(ctx context.Context, send, recv []byte, roffs []int, hdrs []a2aHeader, mine func()) error {
	addrs, err := c.publish(ctx, send, func(q int) int { return hdrs[q].total })
	if err != nil {
		return err
	}
	for q := range c.size {
		if q == c.rank {
			continue
		}
		if err := c.readPeer(ctx, q, recv[roffs[q]:roffs[q+1]], addrs[q]+uint64(hdrs[q].off)); err != nil {
			return err
		}
	}
	mine()
	return c.signalAll(ctx, tagDone)
}

// shift is one step of a pairwise or dissemination schedule: it sends p to
// rank to while receiving len(q) bytes from rank from. Over Duplex links
// it runs on this goroutine and p has left on return; otherwise p is sent
// inline when it fits the link or queued on the sender, and the op must
// wait for the sender (c.snd.wait) before p changes.
func (c *Comm) shift(ctx context.Context, to int, p []byte, from int, q []byte) error {
	if to == from {
		if d, ok := c.duplexTo(to); ok {
			d.push(p)
			if err := d.pump(ctx, q, 0); err != nil {
				return err
			}
			return d.flush(ctx)
		}
	} else if d, ok := c.duplexPair(to, from); ok {
		d.push(p)
		if err := d.pump(ctx, q, 0); err != nil {
			return err
		}
		return d.flush(ctx)
	}
	if _, err := c.to(to, len(p)).send(ctx, p); err != nil {
		return err
	}
	return c.recv(ctx, from, q)
}

// Barrier returns once every rank has entered it (dissemination barrier:
// ceil(log2 n) rounds of one byte to rank+2^k and from rank-2^k).
func (c *Comm) Barrier(ctx context.Context) error {
	if c.size == 1 {
		return nil
	}
	return c.run(ctx, "barrier", func(ctx context.Context) error {
		n, r := c.size, c.rank
		tok := []byte{0xb7}
		var in [1]byte
		for k := 1; k < n; k <<= 1 {
			to, from := (r+k)%n, (r-k+n)%n
			if err := c.shift(ctx, to, tok, from, in[:]); err != nil {
				return err
			}
			if in[0] != tok[0] {
				return fmt.Errorf("%w: barrier: rank %d sent %#x, not the barrier token (operations out of step?)", transport.ErrMalformed, from, in[0])
			}
		}
		return c.snd.wait()
	})
}

// grow returns dst[:n] when dst has the capacity, else a new slice.
func grow(dst []byte, n int) []byte {
	if cap(dst) >= n {
		return dst[:n]
	}
	return make([]byte, n)
}
