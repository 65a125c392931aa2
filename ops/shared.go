package ops

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/gorovod/gorovod/internal/tensor"
	"github.com/gorovod/gorovod/internal/transport/shm"
)

// Shared buffers: memory from Alloc lives in a shared-memory region that
// the other workers of the host can map (like MPI_Alloc_mem or NCCL's
// registered buffers). When every rank of an op on one host passes such a
// buffer, the op runs on the buffers themselves, with no staging slots and
// no system call per copy: for an allreduce, rank r reduces chunk r reading
// every peer's buffer and writes the result into every peer's buffer, then
// the ranks signal that they are done (two synchronisations per op, each
// byte read from a peer once). Ranks learn whether all buffers are shared in
// a header exchange at the start of every op of at least sharedMinBytes
// (a single swap of 64 bytes); if one is not, the op goes the usual way.

// ErrNotShared: Free was given memory that Alloc did not return.
var ErrNotShared = errors.New("ops: not memory from Alloc")

// sharedMinBytes is the smallest op that exchanges the header: below it
// the latency paths win and the exchange would cost more than it saves.
const sharedMinBytes = 64 << 10

// sharedKeep is how many regions of each peer a Comm keeps mapped (least
// recently used dropped first; a rank mirrors its peers' lists of its own
// regions, so every rank knows when a peer maps a region afresh): enough
// for every gradient of a large model allocated apart. A region freed by
// its owner is dropped when its descriptor comes back in a new region.
const sharedKeep = 256

// mapRegion is shm.MapRegion (tests make it fail).
var mapRegion = shm.MapRegion

// regionLRU is a list of regions, most recently used first: a Comm keeps
// one per peer (with the mappings) and one of its own (handles only, the
// mirror of what every peer holds of this rank's regions).
type regionLRU []regionEnt

type regionEnt struct {
	h   shm.RegionHandle
	mem []byte
}

// use moves h to the front, adding it when absent (fresh); it drops an
// entry with h's descriptor but another id (that region was closed) and
// the least recently used beyond sharedKeep, and returns those.
func (l *regionLRU) use(h shm.RegionHandle) (ent *regionEnt, fresh bool, dropped []regionEnt) {
	i := l.index(h)
	e := regionEnt{h: h}
	if i >= 0 {
		e = (*l)[i]
		*l = slices.Delete(*l, i, i+1)
	} else {
		fresh = true
		*l = slices.DeleteFunc(*l, func(x regionEnt) bool {
			if x.h.Fd == h.Fd {
				dropped = append(dropped, x)
				return true
			}
			return false
		})
	}
	*l = slices.Insert(*l, 0, e)
	if len(*l) > sharedKeep {
		dropped = append(dropped, (*l)[sharedKeep:]...)
		*l = (*l)[:sharedKeep]
	}
	return &(*l)[0], fresh, dropped
}

// index is where h is in the list, or -1.
func (l regionLRU) index(h shm.RegionHandle) int {
	return slices.IndexFunc(l, func(e regionEnt) bool { return e.h.ID == h.ID && e.h.Pid == h.Pid })
}

// sharedSkipMax bounds the backoff: after an op whose buffers were not all
// shared, the next 1, 2, 4, ... up to this many eligible ops skip the
// header (so a job that never uses Alloc pays for about one exchange in
// this many ops); one op that was all shared resets it.
const sharedSkipMax = 256

// sharedState is a Comm's view of the peers' regions (under opMu). Every
// rank updates it from what all ranks exchanged, so it is the same on all.
type sharedState struct {
	off   bool        // a mapping failed once: no more shared ops
	ran   int         // ops that ran on shared buffers (tests)
	skip  int         // eligible ops left to skip the header
	wait  int         // the skip set after the next unshared op
	mine  regionLRU   // what the peers hold of this rank's regions
	peers []regionLRU // per rank
}

func unmapAll(ents []regionEnt) {
	for _, e := range ents {
		if e.mem != nil {
			_ = shm.Unmap(e.mem)
		}
	}
}

// closeShared drops every peer mapping (opMu held, no op running).
func (c *Comm) closeShared() {
	for q := range c.shr.peers {
		unmapAll(c.shr.peers[q])
		c.shr.peers[q] = nil
	}
}

// The header: tag, flags, pid, fd, region id, region size, offset, length.
const (
	tagShared    = 0x5c11
	tagSharedOK  = 0x5c12
	tagSharedEnd = 0x5c13
	sharedHdr    = 64
	flagShared   = 1 // this rank's buffer is in a region it can share
	flagFresh    = 2 // the peers have not mapped that region yet
)

// sharedEligible: every rank of an op of n bytes decides the same here
// (the configuration, the size and the mesh's hosts are the same
// everywhere), so either all or none exchange the header.
func (c *Comm) sharedEligible(n int) bool {
	return c.size > 1 && n >= max(sharedMinBytes, c.cfg.SmallBytes) && !c.cfg.SharedBuffersOff && c.oneHost()
}

// onShared runs fn on the peers' buffers (sharedViews) when every
// rank's buffer is shared, and reports whether it ran: the ops' one entry
// to the shared path.
func (c *Comm) onShared(ctx context.Context, n int, buf []byte, want func(q int) int, fn func(views [][]byte) error) (bool, error) {
	views, ok, err := c.sharedViews(ctx, n, buf, want)
	if err != nil || !ok {
		return false, err
	}
	return true, fn(views)
}

// sameLen is want for ops whose buffers have buf's length on every rank.
func sameLen(buf []byte) func(int) int { return func(int) int { return len(buf) } }

// sharedViews exchanges the header and, when every rank's buf is in a
// shared region, returns each peer's buffer mapped here (views[rank] is
// buf); want(q) is the length rank q's buffer must have, and n, the same
// on every rank (buffers may differ in length), decides eligibility.
func (c *Comm) sharedViews(ctx context.Context, n int, buf []byte, want func(q int) int) ([][]byte, bool, error) {
	if !c.sharedEligible(n) || c.shr.off {
		return nil, false, nil
	}
	if c.shr.skip > 0 {
		c.shr.skip--
		return nil, false, nil
	}
	h, off, ok := regionOf(buf)
	ok = ok && c.sharedMemory()
	msg := make([]byte, sharedHdr)
	le := binary.LittleEndian
	le.PutUint64(msg, tagShared)
	if ok {
		flags := uint64(flagShared)
		if c.shr.mine.index(h) < 0 {
			flags |= flagFresh
		}
		for i, v := range []uint64{flags, uint64(h.Pid), uint64(h.Fd), h.ID, h.Size, uint64(off), uint64(len(buf))} {
			le.PutUint64(msg[8+8*i:], v)
		}
	}
	in, err := c.swapAll(ctx, msg)
	if err != nil {
		return nil, false, err
	}
	fresh := false
	for q, m := range in {
		if le.Uint64(m) != tagShared {
			return nil, false, c.outOfStep(q, "shared-buffer header", m)
		}
		flags := le.Uint64(m[8:])
		if flags&flagShared == 0 {
			// Someone's buffer is not shared (all see it): back off.
			c.shr.wait = min(max(2*c.shr.wait, 1), sharedSkipMax)
			c.shr.skip = c.shr.wait
			return nil, false, nil
		}
		fresh = fresh || flags&flagFresh != 0
	}
	c.shr.mine.use(h)
	c.shr.wait = 0
	views, mapErr := c.mapPeers(in, want)
	if fresh {
		// Someone mapped a region afresh: agree on whether every mapping
		// worked. A failure turns shared ops off on every rank.
		var st [8]byte
		if mapErr == nil {
			binary.LittleEndian.PutUint64(st[:], tagSharedOK)
		}
		got, err := c.swapAll(ctx, st[:])
		if err != nil {
			return nil, false, err
		}
		for _, m := range got {
			if le.Uint64(m) != tagSharedOK {
				c.shr.off = true
				c.closeShared()
				return nil, false, nil
			}
		}
	} else if mapErr != nil {
		return nil, false, mapErr
	}
	views[c.rank] = buf
	c.shr.ran++
	return views, true, nil
}

// mapPeers maps (or finds mapped) each peer's region from its header and
// checks the buffer's place in it.
func (c *Comm) mapPeers(in [][]byte, want func(q int) int) ([][]byte, error) {
	le := binary.LittleEndian
	if c.shr.peers == nil {
		c.shr.peers = make([]regionLRU, c.size)
	}
	views := make([][]byte, c.size)
	var firstErr error
	for q, m := range in {
		if q == c.rank {
			continue
		}
		h := shm.RegionHandle{Pid: int(le.Uint64(m[16:])), Fd: int(le.Uint64(m[24:])), ID: le.Uint64(m[32:]), Size: le.Uint64(m[40:])}
		off, n := le.Uint64(m[48:]), le.Uint64(m[56:])
		ent, fresh, dropped := c.shr.peers[q].use(h)
		unmapAll(dropped)
		if fresh {
			mem, err := mapRegion(h)
			if err != nil {
				firstErr = firstOf(firstErr, fmt.Errorf("mapping rank %d's shared buffer: %w", q, err))
				continue
			}
			ent.mem = mem
		}
		if ent.mem == nil || n != uint64(want(q)) || off > uint64(len(ent.mem)) || n > uint64(len(ent.mem))-off {
			firstErr = firstOf(firstErr, c.outOfStep(q, fmt.Sprintf("shared buffer (want %d bytes)", want(q)), m[48:]))
			continue
		}
		views[q] = ent.mem[off : off+n]
	}
	return views, firstErr
}

func firstOf(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// sharedAllreduce: rank r reduces chunk r from every peer's buffer and
// writes it into every peer's buffer (sharedReduce); a final signal tells
// that every chunk is everywhere.
func (c *Comm) sharedAllreduce(ctx context.Context, views [][]byte, dt tensor.DType, op tensor.ReduceOp, finish func([]byte)) error {
	offs := chunkOffsets(len(views[c.rank])/dt.Size(), dt.Size(), c.size)
	if err := c.sharedReduce(ctx, views, offs, dt, op, finish, true); err != nil {
		return err
	}
	return c.signalAll(ctx, tagSharedEnd)
}

// sharedReduce reduces this rank's part (offs[rank]..offs[rank+1]) of its
// buffer with every peer's, segment by segment, peers in rank order, runs
// finish on each segment and, with push, writes the segment into every
// peer's buffer while it is still in cache.
func (c *Comm) sharedReduce(ctx context.Context, views [][]byte, offs []int, dt tensor.DType, op tensor.ReduceOp, finish func([]byte), push bool) error {
	buf := views[c.rank]
	seg := max(c.cfg.SegmentBytes/dt.Size()*dt.Size(), dt.Size())
	for o := offs[c.rank]; o < offs[c.rank+1]; o += seg {
		e := min(o+seg, offs[c.rank+1])
		s := buf[o:e]
		for q := range c.size {
			if q != c.rank {
				reduce(dt, op, s, views[q][o:e])
			}
		}
		if finish != nil {
			finish(s)
		}
		for q := range c.size {
			if q != c.rank && push {
				copy(views[q][o:e], s)
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// sharedBroadcast: rank r copies chunk r of root's buffer into every
// non-root rank's buffer (the root pushes its chunk, the others pull
// theirs and pass it on), then all signal.
func (c *Comm) sharedBroadcast(ctx context.Context, views [][]byte, root int) error {
	offs := chunkOffsets(len(views[root]), 1, c.size)
	lo, hi := offs[c.rank], offs[c.rank+1]
	for q := range c.size {
		if q != root {
			copy(views[q][lo:hi], views[root][lo:hi])
		}
	}
	return c.signalAll(ctx, tagSharedEnd)
}

// sharedAllgatherv: rank r writes its part into every peer's recv buffer
// (its own is in place already), then all signal.
func (c *Comm) sharedAllgatherv(ctx context.Context, views [][]byte, send []byte, offs []int) error {
	for q := range c.size {
		if q != c.rank {
			copy(views[q][offs[c.rank]:offs[c.rank+1]], send)
		}
	}
	return c.signalAll(ctx, tagSharedEnd)
}

// sharedReduceScatter: rank r reduces its part reading every peer's
// buffer (sharedReduce, no push); then all signal (the peers may change
// their buffers once everyone has read them).
func (c *Comm) sharedReduceScatter(ctx context.Context, views [][]byte, offs []int, dt tensor.DType, op tensor.ReduceOp, finish func([]byte)) error {
	if err := c.sharedReduce(ctx, views, offs, dt, op, finish, false); err != nil {
		return err
	}
	return c.signalAll(ctx, tagSharedEnd)
}

// sharedAlltoallv: rank r reads what every peer sends it straight from the
// peer's send buffer into recv, then all signal.
func (c *Comm) sharedAlltoallv(ctx context.Context, views [][]byte, recv []byte, roffs []int, hdrs []a2aHeader, mine func()) error {
	mine()
	for q := range c.size {
		if q != c.rank {
			copy(recv[roffs[q]:roffs[q+1]], views[q][hdrs[q].off:hdrs[q].off+hdrs[q].count])
		}
	}
	return c.signalAll(ctx, tagSharedEnd)
}
