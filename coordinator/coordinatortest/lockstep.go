// Package coordinatortest holds an in-process coordinator.Exchange for
// tests and benchmarks that drive several ranks' Controllers in one
// process.
package coordinatortest

import (
	"context"
	"sync"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
)

// Lockstep connects n ranks: every exchange call waits for all ranks'
// matching calls and hands each the whole round's contributions. It counts
// the bytes that pass through rank 0 (gathered payloads in, broadcast
// payloads out to each other rank, as the collective loop's exchange sends
// them) and the time each rank spends inside the exchange waiting for the
// others. Read the counters once the ranks' cycles have returned.
type Lockstep struct {
	n       int
	mu      sync.Mutex
	cond    *sync.Cond
	gen     int
	arrived int
	vals    []any
	last    []any

	RootIn, RootOut int64           // bytes through rank 0
	BitBytes        int64           // bit-vector bytes one rank contributed
	Gathers         int             // GatherToRoot rounds with a non-empty payload
	Waited          []time.Duration // by rank: time spent waiting in the exchange
}

// NewLockstep returns the exchange of n ranks.
func NewLockstep(n int) *Lockstep {
	l := &Lockstep{n: n, vals: make([]any, n), Waited: make([]time.Duration, n)}
	l.cond = sync.NewCond(&l.mu)
	return l
}

// Rank returns rank's side of the exchange (a coordinator.Exchange).
func (l *Lockstep) Rank(rank int) Exchange { return Exchange{l: l, rank: rank} }

func (l *Lockstep) round(rank int, v any) []any {
	start := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	gen := l.gen
	l.vals[rank] = v
	l.arrived++
	if l.arrived == l.n {
		l.last, l.vals = l.vals, make([]any, l.n)
		l.arrived = 0
		l.gen++
		l.cond.Broadcast()
	}
	for gen == l.gen {
		l.cond.Wait()
	}
	l.Waited[rank] += time.Since(start)
	return l.last
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

// AllreduceBits ANDs (tensor.BitAnd) or ORs the ranks' bit vectors.
func (x Exchange) AllreduceBits(_ context.Context, bits []uint64, op tensor.ReduceOp) error {
	all := x.l.round(x.rank, append([]uint64(nil), bits...))
	if x.rank == 0 {
		x.l.BitBytes += int64(8 * len(bits))
	}
	for i := range bits {
		for _, v := range all {
			if o := v.([]uint64)[i]; op == tensor.BitAnd {
				bits[i] &= o
			} else {
				bits[i] |= o
			}
		}
	}
	return nil
}

// GatherToRoot hands rank 0 every rank's payload.
func (x Exchange) GatherToRoot(_ context.Context, p []byte) ([][]byte, error) {
	all := x.l.round(x.rank, p)
	if x.rank != 0 {
		return nil, nil
	}
	out := make([][]byte, len(all))
	nonEmpty := false
	for i, v := range all {
		out[i] = v.([]byte)
		if i != 0 {
			x.l.RootIn += int64(len(out[i]))
		}
		nonEmpty = nonEmpty || len(out[i]) > 0
	}
	if nonEmpty {
		x.l.Gathers++
	}
	return out, nil
}

// BroadcastFromRoot hands every rank rank 0's payload.
func (x Exchange) BroadcastFromRoot(_ context.Context, p []byte) ([]byte, error) {
	b := x.l.round(x.rank, p)[0].([]byte)
	if x.rank == 0 {
		x.l.RootOut += int64(len(b)) * int64(x.l.n-1)
	}
	return b, nil
}
