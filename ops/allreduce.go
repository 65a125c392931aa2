package ops

import (
	"context"
	"fmt"
	"math/bits"

	"github.com/gorovod/gorovod/internal/tensor"
)

// Allreduce reduces buf elementwise over all ranks, in place: afterwards
// every rank holds op over every rank's (prescaled) buf, times postscale.
// Average is Sum divided by Size (integer dtypes: truncating division, then
// postscale). prescale/postscale of 1 cost nothing. All ranks get
// bit-identical results, whatever the algorithm.
func (c *Comm) Allreduce(ctx context.Context, buf []byte, dt tensor.DType, op tensor.ReduceOp, prescale, postscale float64) error {
	if err := checkReduce(dt, op); err != nil {
		return fmt.Errorf("ops: allreduce: %w", err)
	}
	if len(buf)%dt.Size() != 0 {
		return fmt.Errorf("%w: allreduce %s: %d bytes is not a whole number of %d-byte elements", tensor.ErrInvalid, dt, len(buf), dt.Size())
	}
	if prescale != 1 {
		scale(dt, buf, prescale)
	}
	finish := c.finisher(dt, op, postscale)
	rop := op
	if op == tensor.Average {
		rop = tensor.Sum
	}
	if c.size == 1 || len(buf) == 0 {
		if finish != nil {
			finish(buf)
		}
		return nil
	}
	algo := c.choose(len(buf))
	return c.run(ctx, "allreduce", func(ctx context.Context) error {
		if c.cfg.Algorithm == Auto {
			if done, err := c.onShared(ctx, len(buf), buf, sameLen(buf), func(views [][]byte) error {
				return c.sharedAllreduce(ctx, views, dt, rop, finish)
			}); done || err != nil {
				return err
			}
		}
		if algo == SingleCopy {
			use, err := c.useSingleCopy(ctx, len(buf), c.cfg.Algorithm == SingleCopy)
			if err != nil {
				return err
			}
			if use {
				return c.singleCopyAllreduce(ctx, buf, dt, rop, finish)
			}
			algo = Ring
		}
		switch algo {
		case RecursiveDoubling:
			if err := c.recursiveDoubling(ctx, all(c.size), c.rank, buf, dt, rop); err != nil {
				return err
			}
			if finish != nil {
				finish(buf)
			}
			return nil
		case Hierarchical:
			return c.hierarchical(ctx, buf, dt, rop, finish)
		}
		return c.ringAllreduce(ctx, all(c.size), c.rank, buf, dt, rop, finish)
	})
}

// finisher returns the post-reduction step (average, postscale) or nil.
func (c *Comm) finisher(dt tensor.DType, op tensor.ReduceOp, postscale float64) func([]byte) {
	factor := postscale
	divide := 0
	if op == tensor.Average && c.size > 1 {
		if dt.IsFloat() {
			factor /= float64(c.size)
		} else {
			divide = c.size
		}
	}
	if factor == 1 && divide == 0 {
		return nil
	}
	return func(b []byte) {
		if divide > 0 {
			divideInt(dt, b, divide)
		}
		if factor != 1 {
			scale(dt, b, factor)
		}
	}
}

// choose picks the allreduce algorithm for n bytes.
func (c *Comm) choose(n int) Algorithm {
	multiHost := c.hierOK && len(c.cross) > 1
	switch c.cfg.Algorithm {
	case Ring, RecursiveDoubling, SingleCopy:
		return c.cfg.Algorithm
	case Hierarchical:
		if c.hierOK {
			return Hierarchical
		}
		return Ring
	}
	switch {
	case n < c.cfg.SmallBytes:
		return RecursiveDoubling
	case c.cfg.Hierarchical && multiHost:
		return Hierarchical
	case c.wantSingleCopy(n, false):
		return SingleCopy
	}
	return Ring
}

func all(n int) []int {
	g := make([]int, n)
	for i := range g {
		g[i] = i
	}
	return g
}

// chunkOffsets splits n elements of esz bytes into parts as even as
// possible (the first n%parts get one more): byte offsets, len parts+1.
func chunkOffsets(n, esz, parts int) []int {
	offs := make([]int, parts+1)
	q, r := n/parts, n%parts
	for i := range parts {
		k := q
		if i < r {
			k++
		}
		offs[i+1] = offs[i] + k*esz
	}
	return offs
}

func (c *Comm) ringAllreduce(ctx context.Context, group []int, pos int, buf []byte, dt tensor.DType, op tensor.ReduceOp, finish func([]byte)) error {
	n := len(group)
	offs := chunkOffsets(len(buf)/dt.Size(), dt.Size(), n)
	return c.ring(ctx, ringSpec{group: group, pos: pos, buf: buf, offs: offs, rs: true, ag: true, dt: dt, op: op, finish: finish})
}

// ringSpec is one ring pass over buf, cut into len(group) chunks (chunk i
// is buf[offs[i]:offs[i+1]], in bytes).
type ringSpec struct {
	group  []int // ranks in ring order
	pos    int   // this rank's index in group
	buf    []byte
	offs   []int
	rs, ag bool // reduce-scatter phase, allgather phase
	dt     tensor.DType
	op     tensor.ReduceOp
	// finish runs on each segment of this rank's chunk once it is fully
	// reduced, before it is forwarded (postscale on 1/n of the data).
	finish func([]byte)
}

// ring runs reduce-scatter and/or allgather around the ring. With chunks
// indexed by ring position p: reduce-scatter step s sends chunk p-s-1 and
// receives (and reduces) chunk p-s-2, leaving chunk p complete after n-1
// steps; allgather step s sends chunk p-s and receives chunk p-s-1. The
// chunk received at one step is the chunk sent at the next, so each
// received segment is forwarded as soon as it is reduced: sending (by the
// sender goroutine), receiving and reducing overlap across segments.
func (c *Comm) ring(ctx context.Context, r ringSpec) error {
	n := len(r.group)
	mod := func(i int) int { return ((i % n) + n) % n }
	if n == 1 {
		if r.rs && r.finish != nil {
			r.finish(r.buf[r.offs[0]:r.offs[1]])
		}
		return nil
	}
	right, left := r.group[mod(r.pos+1)], r.group[mod(r.pos-1)]
	esz := 1
	if r.rs {
		esz = r.dt.Size()
	}
	seg := max(c.cfg.SegmentBytes/esz*esz, esz)
	if n == 2 {
		if d, ok := c.duplexTo(right); ok {
			if r.rs && r.ag && d.rr != nil {
				return c.duplexAllreduce2(ctx, d, r, seg)
			}
			return c.duplexRing(ctx, d, r, seg)
		}
	}

	first, steps := ringSteps(r)
	if d, ok := c.duplexPair(right, left); ok {
		return c.duplexRingN(ctx, d, r, seg, first, steps)
	}
	return c.senderRing(ctx, r, seg, right, left, first, steps)
}

// senderRing runs the ring's steps with sends queued to the Comm's sender
// goroutine (links without the Duplex capability): each received segment
// is forwarded as soon as it is reduced.
func (c *Comm) senderRing(ctx context.Context, r ringSpec, seg, right, left, first int, steps []ringStep) error {
	n := len(r.group)
	chunk := func(i int) []byte { return r.buf[r.offs[i]:r.offs[i+1]] }
	segments := func(b []byte) int { return (len(b) + seg - 1) / seg }
	total, sends := len(chunk(first)), segments(chunk(first))
	for _, st := range steps[:len(steps)-1] {
		total += len(chunk(st.chunk))
		sends += segments(chunk(st.chunk))
	}
	o := c.toN(right, total, sends)
	// sent[i] is the sequence number of the last queued send of chunk i:
	// the allgather phase overwrites chunks the reduce-scatter phase sent
	// and waits for those sends first (by causality they finished long
	// ago, since the reduced data includes them, but the program must not
	// rely on the network for its memory ordering).
	sent := make([]uint64, n)
	for b := chunk(first); len(b) > 0; {
		k := min(seg, len(b))
		seq, err := o.send(ctx, b[:k])
		if err != nil {
			return err
		}
		sent[first] = seq
		b = b[k:]
	}
	for t, st := range steps {
		last := t == len(steps)-1
		mine := st.reduce && st.chunk == r.pos
		if !st.reduce && sent[st.chunk] != 0 {
			if err := c.snd.waitFor(sent[st.chunk]); err != nil {
				return err
			}
		}
		for b := chunk(st.chunk); len(b) > 0; {
			p := b[:min(seg, len(b))]
			b = b[len(p):]
			var err error
			if st.reduce {
				err = c.recvReduce(ctx, left, p, r.dt, r.op)
			} else {
				err = c.recv(ctx, left, p)
			}
			if err != nil {
				return err
			}
			if mine && r.finish != nil {
				r.finish(p)
			}
			if !last {
				seq, err := o.send(ctx, p)
				if err != nil {
					return err
				}
				sent[st.chunk] = seq // forwarded at the next step
			}
		}
	}
	if !o.inline {
		return c.snd.wait()
	}
	return nil
}

// ringStep is one step of a ring pass: receive chunk (reducing it in the
// reduce-scatter phase), then forward it at the next step.
type ringStep struct {
	chunk  int
	reduce bool
}

// ringSteps plans a ring pass for the rank at r.pos: first is the chunk it
// sends before receiving anything.
func ringSteps(r ringSpec) (first int, steps []ringStep) {
	n := len(r.group)
	mod := func(i int) int { return ((i % n) + n) % n }
	first = r.pos
	if r.rs {
		first = mod(r.pos - 1)
		for s := range n - 1 {
			steps = append(steps, ringStep{mod(r.pos - s - 2), true})
		}
	}
	if r.ag {
		for s := range n - 1 {
			steps = append(steps, ringStep{mod(r.pos - s - 1), false})
		}
	}
	return first, steps
}

// exchange sends p to peer and receives len(q) bytes from it into q,
// concurrently: inline when the link buffers p, else through the sender.
// On return p may be reused.
func (c *Comm) exchange(ctx context.Context, peer int, p, q []byte) error {
	if d, ok := c.duplexTo(peer); ok {
		d.push(p)
		if err := d.pump(ctx, q, 0); err != nil {
			return err
		}
		return d.flush(ctx)
	}
	o := c.to(peer, len(p))
	if _, err := o.send(ctx, p); err != nil {
		return err
	}
	if err := c.recv(ctx, peer, q); err != nil {
		return err
	}
	if !o.inline {
		return c.snd.wait()
	}
	return nil
}

// recursiveDoubling allreduces buf over group (this rank at index pos).
// With p the largest power of two <= n and rem = n-p, the first 2*rem
// members pair up and the even one hands its data to the odd one (which
// takes part for both); the p remaining members exchange whole buffers with
// partners at distance 1, 2, 4, ...; finally the odd ones hand the result
// back. Each exchange computes lower-index data op higher-index data on both
// sides, so all ranks agree bit for bit even where Min/Max meet a NaN.
func (c *Comm) recursiveDoubling(ctx context.Context, group []int, pos int, buf []byte, dt tensor.DType, op tensor.ReduceOp) error {
	n, r := len(group), pos
	if n == 1 {
		return nil
	}
	p := 1 << (bits.Len(uint(n)) - 1)
	rem := n - p
	tmp := c.buffer(len(buf))

	vr := r - rem // index among the p that exchange
	if r < 2*rem {
		if r%2 == 0 {
			if err := c.to(group[r+1], len(buf)).sendSync(ctx, buf); err != nil {
				return err
			}
			return c.recv(ctx, group[r+1], buf)
		}
		if err := c.recv(ctx, group[r-1], tmp); err != nil {
			return err
		}
		reduce(dt, op, tmp, buf) // lower index on the left
		copy(buf, tmp)
		vr = r / 2
	}
	member := func(v int) int {
		if v < rem {
			return 2*v + 1
		}
		return v + rem
	}
	for mask := 1; mask < p; mask <<= 1 {
		peer := member(vr ^ mask)
		if err := c.exchange(ctx, group[peer], buf, tmp); err != nil {
			return err
		}
		if peer > r {
			reduce(dt, op, buf, tmp)
		} else {
			reduce(dt, op, tmp, buf)
			copy(buf, tmp)
		}
	}
	if r < 2*rem {
		return c.to(group[r-1], len(buf)).sendSync(ctx, buf)
	}
	return nil
}

// sendSync sends p and returns once it was handed to the link.
func (o out) sendSync(ctx context.Context, p []byte) error {
	if _, err := o.send(ctx, p); err != nil {
		return err
	}
	if !o.inline && len(p) > 0 {
		return o.c.snd.wait()
	}
	return nil
}

// hierarchical: reduce-scatter among the ranks of this host, allreduce of
// this rank's chunk across hosts among the ranks with the same local index,
// then allgather within the host. Cross-host traffic is 1/localSize of the
// flat ring's.
func (c *Comm) hierarchical(ctx context.Context, buf []byte, dt tensor.DType, op tensor.ReduceOp, finish func([]byte)) error {
	L := len(c.local)
	lpos := 0
	for i, r := range c.local {
		if r == c.rank {
			lpos = i
		}
	}
	offs := chunkOffsets(len(buf)/dt.Size(), dt.Size(), L)
	if err := c.ring(ctx, ringSpec{group: c.local, pos: lpos, buf: buf, offs: offs, rs: true, dt: dt, op: op}); err != nil {
		return err
	}
	mine := buf[offs[lpos]:offs[lpos+1]]
	cpos := 0
	for i, r := range c.cross {
		if r == c.rank {
			cpos = i
		}
	}
	switch {
	case len(c.cross) > 1 && len(mine) >= c.cfg.SmallBytes:
		if err := c.ringAllreduce(ctx, c.cross, cpos, mine, dt, op, finish); err != nil {
			return err
		}
	case len(c.cross) > 1 && len(mine) > 0:
		if err := c.recursiveDoubling(ctx, c.cross, cpos, mine, dt, op); err != nil {
			return err
		}
		fallthrough
	default:
		if finish != nil {
			finish(mine)
		}
	}
	return c.ring(ctx, ringSpec{group: c.local, pos: lpos, buf: buf, offs: offs, ag: true})
}
