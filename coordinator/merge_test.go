package coordinator

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
)

// randomLists are n ranks' request lists drawn from a few tensors, each
// rank in its own order, some with other parameters, withdrawals or a
// shutdown.
func randomLists(rng *rand.Rand, n int) []RequestList {
	lists := make([]RequestList, n)
	for r := range lists {
		l := &lists[r]
		for _, i := range rng.Perm(6)[:rng.IntN(7)] {
			req := Request{Name: fmt.Sprintf("t%d", i), Op: OpAllreduce, DType: tensor.Float32, Shape: []int64{int64(4 + i)},
				ReduceOp: tensor.Sum, Device: CPU, Prescale: 1, Postscale: 1, Age: time.Duration(rng.IntN(3)) * time.Millisecond}
			if rng.IntN(5) == 0 {
				req.Shape = []int64{99} // a mismatch: its own group
			}
			l.Requests = append(l.Requests, req)
		}
		if rng.IntN(4) == 0 {
			l.Withdrawn = []Withdrawal{{Name: fmt.Sprintf("t%d", rng.IntN(3))}}
		}
		l.Shutdown = rng.IntN(10) == 0
	}
	return lists
}

// treeFold combines payloads as control.ReduceToRoot's binomial tree does.
func treeFold(payloads [][]byte, combine func(rank int, acc, child []byte, from int) []byte) []byte {
	acc := slices.Clone(payloads)
	for mask := 1; mask < len(acc); mask <<= 1 {
		for r := 0; r+mask < len(acc); r += 2 * mask {
			acc[r] = combine(r, acc[r], acc[r+mask], r+mask)
		}
	}
	return acc[0]
}

// treeCombine folds with the combine of each inner rank's controller.
func treeCombine(t *testing.T, payloads [][]byte) []byte {
	n := len(payloads)
	ctrls := make([]*Controller, n)
	for r := range ctrls {
		c, err := NewController(DefaultConfig(r, n))
		if err != nil {
			t.Fatal(err)
		}
		ctrls[r] = c
	}
	return treeFold(payloads, func(r int, acc, child []byte, from int) []byte { return ctrls[r].combine(acc, child, from) })
}

// TestTreeMergeEqualsFlat: what rank 0 gets up the tree is what it gets
// merging every rank's list in rank order, and its reading order gives
// back every rank's list as sent.
func TestTreeMergeEqualsFlat(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 300 {
		n := 1 + rng.IntN(13)
		lists := randomLists(rng, n)
		payloads := make([][]byte, n)
		for r := range n {
			payloads[r] = AppendRequestList(nil, &lists[r])
		}
		flat := mergePayloads(payloads, n)
		tree, err := decodeRequests(treeCombine(t, payloads), 0, n)
		if err != nil || flat.err != nil {
			t.Fatalf("trial %d: %v, %v", trial, err, flat.err)
		}
		if a, b := appendMerged(nil, flat), appendMerged(nil, &tree); !bytes.Equal(a, b) {
			t.Fatalf("trial %d (%d ranks): tree and flat merges differ", trial, n)
		}
		order, start, err := readingOrder(tree.groups, n)
		if err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		for r := range n {
			var got []string
			for _, gi := range order[start[r]:start[r+1]] {
				got = append(got, tree.groups[gi].req.Name+fmt.Sprint(tree.groups[gi].req.Shape))
			}
			var want []string
			for _, q := range lists[r].Requests {
				want = append(want, q.Name+fmt.Sprint(q.Shape))
			}
			if !slices.Equal(got, want) {
				t.Fatalf("trial %d rank %d: read back %v, sent %v", trial, r, got, want)
			}
		}
	}
}

// TestMergeIdenticalRequests: 64 ranks sending the same list merge into
// one entry per tensor with one rank range.
func TestMergeIdenticalRequests(t *testing.T) {
	const n = 64
	l := RequestList{Requests: []Request{
		{Name: "a", Op: OpAllreduce, DType: tensor.Float32, Shape: []int64{8}, ReduceOp: tensor.Sum, Device: CPU, Prescale: 1, Postscale: 1},
		{Name: "b", Op: OpBroadcast, DType: tensor.Int32, Shape: []int64{2}, Root: 3, Device: CPU, Prescale: 1, Postscale: 1},
	}}
	payloads := make([][]byte, n)
	for r := range payloads {
		payloads[r] = AppendRequestList(nil, &l)
	}
	m, err := decodeRequests(treeCombine(t, payloads), 0, n)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.groups) != 2 {
		t.Fatalf("%d groups, want 2", len(m.groups))
	}
	for _, g := range m.groups {
		if len(g.ranks) != 1 || g.ranks[0].first != 0 || g.ranks[0].count != n {
			t.Errorf("%s: ranks %v, want one range of all %d", g.req.Name, g.ranks, n)
		}
	}
}

// TestCorruptChildFailsAtRoot: a child's list that does not decode makes
// rank 0 fail naming that rank, whatever else the tree merged.
func TestCorruptChildFailsAtRoot(t *testing.T) {
	const n = 6
	c, err := NewController(DefaultConfig(0, n))
	if err != nil {
		t.Fatal(err)
	}
	payloads := make([][]byte, n)
	for r := range payloads {
		payloads[r] = AppendRequestList(nil, &RequestList{})
	}
	payloads[5] = []byte{wireVersion, 0, 5}
	m, err := decodeRequests(treeCombine(t, payloads), 0, n)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.coordinateMerged(&m); err == nil || !bytes.Contains([]byte(err.Error()), []byte("from rank 5")) {
		t.Errorf("coordinate: %v, want a malformed list from rank 5", err)
	}
}
