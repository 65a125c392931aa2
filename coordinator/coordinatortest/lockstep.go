// Package coordinatortest holds an in-process coordinator.Exchange for
// tests and benchmarks that drive several ranks' Controllers in one
// process.
package coordinatortest

import (
	"context"
	"math/bits"
	"sync"
	"time"

	"github.com/gorovod/gorovod/coordinator"
	"github.com/gorovod/gorovod/internal/tensor"
)

// Lockstep connects n ranks: every exchange call waits for all ranks'
// matching calls and hands each the whole round's contributions. It
// implements coordinator.TreeExchange (requests combined up a binomial
// tree, responses sent down one, one lock-step round per tree level) unless
// Flat is set, and counts the bytes that pass through rank 0 (payloads
// received, payloads sent, as the collective loop's exchange moves them).
// Read the counters once the ranks' cycles have returned.
//
// A serial Lockstep (NewSerialLockstep) also measures each rank's own work
// cleanly: one rank at a time holds a token and runs, from its Start (or
// from the end of an exchange call) to its next exchange call (or Done),
// so no other rank's goroutine competes with it for a core. It sums, per
// segment between two rounds, the longest rank's time (Critical) and
// counts the network hops each round would take (Hops, HopBytes), so a
// cycle's critical path is Critical + Hops x latency + HopBytes / bandwidth.
type Lockstep struct {
	n      int
	serial bool
	// Flat: Rank returns an exchange without the tree methods, so the
	// controllers gather every rank's requests at rank 0 (the old path).
	Flat bool

	mu      sync.Mutex
	cond    *sync.Cond
	gen     int
	arrived int
	vals    []any
	last    []any
	out     any // what the round's complete function made of last

	tok    []chan struct{} // serial: rank r runs while it holds tok[r]'s token
	began  []time.Time     // serial: when the rank took the token
	segMax time.Duration

	RootIn, RootOut int64           // bytes through rank 0
	BitBytes        int64           // bit-vector bytes one rank contributed
	Gathers         int             // request gathers (flat or tree)
	Waited          []time.Duration // by rank: time spent waiting in the exchange (concurrent)
	Own             []time.Duration // by rank: time spent holding the token (serial)
	Critical        time.Duration   // serial: sum over segments of the longest rank's
	CycleCritical   []time.Duration // serial: Critical by cycle (from Start to the last Done)
	cycleMark       time.Duration
	Hops            int   // network hops on the critical path
	HopBytes        int64 // the largest message of each hop, summed
}

// NewLockstep returns the exchange of n ranks, all running at once.
func NewLockstep(n int) *Lockstep {
	l := &Lockstep{n: n, vals: make([]any, n), Waited: make([]time.Duration, n), Own: make([]time.Duration, n)}
	l.cond = sync.NewCond(&l.mu)
	return l
}

// NewSerialLockstep returns the exchange of n ranks run one at a time:
// every rank calls Start before its cycle and Done after it.
func NewSerialLockstep(n int) *Lockstep {
	l := NewLockstep(n)
	l.serial = true
	l.tok = make([]chan struct{}, n)
	for r := range l.tok {
		l.tok[r] = make(chan struct{}, 1)
	}
	l.began = make([]time.Time, n)
	return l
}

// Start waits for rank's turn (rank 0 goes first) and starts its clock.
func (l *Lockstep) Start(rank int) {
	if !l.serial {
		return
	}
	if rank != 0 {
		<-l.tok[rank]
	}
	l.began[rank] = time.Now()
}

// Done stops rank's clock and hands the turn on; the last rank's Done ends
// the cycle.
func (l *Lockstep) Done(rank int) {
	if !l.serial {
		return
	}
	l.stopClock(rank)
	if rank == l.n-1 {
		l.endSegment()
		l.CycleCritical = append(l.CycleCritical, l.Critical-l.cycleMark)
		l.cycleMark = l.Critical
		return
	}
	l.tok[rank+1] <- struct{}{}
}

func (l *Lockstep) stopClock(rank int) {
	d := time.Since(l.began[rank])
	l.Own[rank] += d
	l.segMax = max(l.segMax, d)
}

func (l *Lockstep) endSegment() {
	l.Critical += l.segMax
	l.segMax = 0
}

// Rank returns rank's side of the exchange: a coordinator.TreeExchange, or
// with Flat a coordinator.Exchange only.
func (l *Lockstep) Rank(rank int) coordinator.Exchange {
	if l.Flat {
		return FlatExchange{Exchange{l: l, rank: rank}}
	}
	return Exchange{l: l, rank: rank}
}

// round deposits v and returns every rank's contribution and what complete
// (run once, by the last rank to arrive, outside any rank's clock) made of
// them.
func (l *Lockstep) round(rank int, v any, complete func(all []any) any) ([]any, any) {
	if l.serial {
		return l.serialRound(rank, v, complete)
	}
	start := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	gen := l.gen
	l.vals[rank] = v
	l.arrived++
	if l.arrived == l.n {
		l.last, l.vals = l.vals, make([]any, l.n)
		l.out = complete(l.last)
		l.arrived = 0
		l.gen++
		l.cond.Broadcast()
	}
	for gen == l.gen {
		l.cond.Wait()
	}
	l.Waited[rank] += time.Since(start)
	return l.last, l.out
}

func (l *Lockstep) serialRound(rank int, v any, complete func(all []any) any) ([]any, any) {
	l.stopClock(rank)
	l.vals[rank] = v
	if rank == l.n-1 {
		l.last, l.vals = l.vals, make([]any, l.n)
		l.out = complete(l.last)
		l.endSegment()
		l.tok[0] <- struct{}{}
	} else {
		l.tok[rank+1] <- struct{}{}
	}
	<-l.tok[rank]
	l.began[rank] = time.Now()
	return l.last, l.out
}

// hops adds k hops whose largest message is b bytes (called by complete).
func (l *Lockstep) hops(k int, b int64) {
	l.Hops += k
	l.HopBytes += int64(k) * b
}

// Exchange is one rank's side of a Lockstep.
type Exchange struct {
	l    *Lockstep
	rank int
}

// Rank is this side's rank.
func (x Exchange) Rank() int { return x.rank }

// Size is the number of ranks.
func (x Exchange) Size() int { return x.l.n }

// AllreduceBits ANDs (tensor.BitAnd) or ORs the ranks' bit vectors; the
// hops are those of recursive doubling (log2 n exchanges of the vector,
// two more when n is not a power of two), as the mesh runs it.
func (x Exchange) AllreduceBits(_ context.Context, v []uint64, op tensor.ReduceOp) error {
	_, out := x.l.round(x.rank, v, func(all []any) any {
		res := append([]uint64(nil), all[0].([]uint64)...)
		for _, a := range all[1:] {
			for i, w := range a.([]uint64) {
				if op == tensor.BitAnd {
					res[i] &= w
				} else {
					res[i] |= w
				}
			}
		}
		if n := x.l.n; n > 1 {
			k := bits.Len(uint(n)) - 1
			if n&(n-1) != 0 {
				k += 2
			}
			x.l.hops(k, int64(8*len(v)))
		}
		x.l.BitBytes += int64(8 * len(v))
		return res
	})
	copy(v, out.([]uint64))
	return nil
}

// GatherToRoot hands rank 0 every rank's payload (rank 0 receives n-1
// messages, one after another: n-1 hops).
func (x Exchange) GatherToRoot(_ context.Context, p []byte) ([][]byte, error) {
	all, _ := x.l.round(x.rank, p, func(all []any) any {
		for _, v := range all[1:] {
			b := int64(len(v.([]byte)))
			x.l.RootIn += b
			x.l.hops(1, b)
		}
		x.l.Gathers++
		return nil
	})
	if x.rank != 0 {
		return nil, nil
	}
	out := make([][]byte, len(all))
	for i, v := range all {
		out[i] = v.([]byte)
	}
	return out, nil
}

// BroadcastFromRoot hands every rank rank 0's payload (rank 0 sends n-1
// messages: n-1 hops).
func (x Exchange) BroadcastFromRoot(_ context.Context, p []byte) ([]byte, error) {
	all, _ := x.l.round(x.rank, p, func(all []any) any {
		b := int64(len(all[0].([]byte)))
		x.l.RootOut += b * int64(x.l.n-1)
		x.l.hops(x.l.n-1, b)
		return nil
	})
	return all[0].([]byte), nil
}

// ReduceToRoot combines the payloads up control's binomial tree, one
// lock-step round per level: in each, the ranks that send at that level
// deposit their subtree's combination and their parents combine it.
func (x Exchange) ReduceToRoot(_ context.Context, p []byte, combine func(acc, child []byte, from int) []byte) ([]byte, error) {
	acc, sent := p, false
	for mask := 1; mask < x.l.n; mask <<= 1 {
		var v []byte
		if !sent && x.rank&mask != 0 {
			v, sent = acc, true
		}
		all, _ := x.l.round(x.rank, v, func(all []any) any {
			var most int64
			for _, a := range all {
				if b := a.([]byte); b != nil {
					most = max(most, int64(len(b)))
				}
			}
			x.l.RootIn += int64(len(all[mask].([]byte)))
			if mask == 1 {
				x.l.Gathers++
			}
			x.l.hops(1, most)
			return nil
		})
		if child := x.rank | mask; !sent && x.rank&mask == 0 && child < x.l.n {
			acc = combine(acc, all[child].([]byte), child)
		}
	}
	if x.rank != 0 {
		return nil, nil
	}
	return acc, nil
}

// BroadcastDown sends rank 0's payload down control's binomial tree, one
// lock-step round per level.
func (x Exchange) BroadcastDown(_ context.Context, p []byte) ([]byte, error) {
	have := x.rank == 0
	var v []byte
	if have {
		v = p
	}
	top := 1
	for top < x.l.n {
		top <<= 1
	}
	for mask := top >> 1; mask >= 1; mask >>= 1 {
		var send []byte
		if have && x.rank%(2*mask) == 0 && x.rank+mask < x.l.n {
			send = v
		}
		all, _ := x.l.round(x.rank, send, func(all []any) any {
			if b := all[0].([]byte); b != nil {
				x.l.RootOut += int64(len(b))
			}
			for _, a := range all {
				if b := a.([]byte); b != nil {
					x.l.hops(1, int64(len(b)))
					break
				}
			}
			return nil
		})
		if !have && x.rank%(2*mask) == mask {
			v, have = all[x.rank-mask].([]byte), true
		}
	}
	return v, nil
}

// FlatExchange is an Exchange without the tree methods.
type FlatExchange struct{ x Exchange }

// Rank is this side's rank.
func (f FlatExchange) Rank() int { return f.x.rank }

// Size is the number of ranks.
func (f FlatExchange) Size() int { return f.x.l.n }

// AllreduceBits is Exchange.AllreduceBits.
func (f FlatExchange) AllreduceBits(ctx context.Context, v []uint64, op tensor.ReduceOp) error {
	return f.x.AllreduceBits(ctx, v, op)
}

// GatherToRoot is Exchange.GatherToRoot.
func (f FlatExchange) GatherToRoot(ctx context.Context, p []byte) ([][]byte, error) {
	return f.x.GatherToRoot(ctx, p)
}

// BroadcastFromRoot is Exchange.BroadcastFromRoot.
func (f FlatExchange) BroadcastFromRoot(ctx context.Context, p []byte) ([]byte, error) {
	return f.x.BroadcastFromRoot(ctx, p)
}
