package elastic

import (
	"context"
	"fmt"
	"strings"

	"github.com/gorovod/gorovod/collective"
)

// The commit vote: one allreduce (max) of four int64s, so every rank takes
// the same decision from the same numbers:
//
//	[0] the newest epoch this rank was told of by the driver
//	[1] 1 if this rank wants a reset (it was told its epoch is broken)
//	[2] the step being committed, [3] its negation: max and -max(-x) =
//	    min, so the vote also checks that every rank commits the same step
type voteResult struct {
	cur     uint64 // this world's epoch
	told    uint64 // newest epoch any rank was told of
	flag    bool   // some rank asked for a reset
	minStep int64
	maxStep int64
}

func (r voteResult) change() bool { return r.told > r.cur || r.flag }

func (r voteResult) why() string {
	var parts []string
	if r.told > r.cur {
		parts = append(parts, fmt.Sprintf("epoch %d is planned (this world is epoch %d)", r.told, r.cur))
	}
	if r.flag {
		parts = append(parts, "a rank asked for a reset")
	}
	return strings.Join(parts, "; ")
}

// takeVote votes in w, the world of epoch cur.
func takeVote(ctx context.Context, w *collective.World, cur, told uint64, flag bool, step int64) (voteResult, error) {
	f := int64(0)
	if flag {
		f = 1
	}
	buf := []int64{int64(told), f, step, -step}
	if err := collective.Allreduce(ctx, "elastic/commit-vote", buf, collective.Max, collective.InWorld(w)); err != nil {
		return voteResult{}, err
	}
	r := voteResult{cur: cur, told: uint64(buf[0]), flag: buf[1] != 0, maxStep: buf[2], minStep: -buf[3]}
	if r.minStep != r.maxStep {
		return r, fmt.Errorf("%w: ranks commit different steps (%d to %d)", collective.ErrMismatch, r.minStep, r.maxStep)
	}
	return r, nil
}

// syncState makes every rank's state the committed state of the rank with
// the highest step (the lowest such rank on ties): one allreduce to agree
// on the source, one broadcast of its committed copy. It returns the
// source rank and the step.
func syncState(ctx context.Context, w *collective.World, st *State, between func(step int64) error) (int, int64, error) {
	size, rank := int64(w.Size()), int64(w.Rank())
	key := []int64{st.Step()*size + (size - 1 - rank)}
	if err := collective.Allreduce(ctx, "elastic/sync-source", key, collective.Max, collective.InWorld(w)); err != nil {
		return 0, 0, err
	}
	step, src := key[0]/size, int(size-1-key[0]%size)
	if between != nil {
		if err := between(step); err != nil {
			return 0, 0, err
		}
	}
	var blob []byte
	if w.Rank() == src {
		var err error
		if blob, err = st.encodeCommitted(); err != nil {
			return 0, 0, err
		}
	}
	if err := collective.BroadcastObject(ctx, "elastic/sync-state", &blob, src, collective.InWorld(w)); err != nil {
		return 0, 0, err
	}
	if w.Rank() != src {
		if err := st.adopt(blob, step); err != nil {
			return 0, 0, err
		}
	}
	return src, step, nil
}
