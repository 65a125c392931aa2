package coordinator

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
)

// TreeExchange is an Exchange that can also combine payloads up a tree to
// rank 0 and send rank 0's payload down one. When the Exchange has it,
// Cycle's slow path sends each rank's requests up the tree, every inner
// rank merging identical requests of its subtree into one entry with a rank
// set, so rank 0 receives log2(n) messages holding one entry per distinct
// request instead of n lists; the responses go down the tree.
type TreeExchange interface {
	Exchange
	// ReduceToRoot: every rank passes its payload; each inner rank folds a
	// child's (from, the child's rank) into its own with combine, acc
	// always holding the lower ranks; rank 0 gets the combination of all,
	// the others nil.
	ReduceToRoot(ctx context.Context, payload []byte, combine func(acc, child []byte, from int) []byte) ([]byte, error)
	// BroadcastDown: rank 0 passes payload and every rank gets a copy.
	BroadcastDown(ctx context.Context, payload []byte) ([]byte, error)
}

// rankRange is the ranks [first, first+count); in a request group, index
// is the request's position in each of these ranks' lists (so rank 0 can
// read the requests in the order it would read the ranks' lists).
type rankRange struct{ first, count, index int }

// requestGroup is one request that every rank in ranks sent with the same
// parameters; req.Rank is the lowest of them, req.Age the oldest.
type requestGroup struct {
	req   Request
	ranks []rankRange
}

// withdrawalGroup is one withdrawal that every rank in ranks sent.
type withdrawalGroup struct {
	w     Withdrawal
	ranks []rankRange
}

// mergedRequests are the request lists of a set of ranks with identical
// requests merged. Groups are in the order of their lowest rank, then of
// that rank's list: the order in which rank 0 would first meet each
// request reading the lists one rank after another.
type mergedRequests struct {
	err       error  // rank 0: what rank 0 received did not decode (not sent)
	failure   string // a list did not decode: why (the rest is empty)
	shutdown  bool
	groups    []requestGroup
	withdrawn []withdrawalGroup
}

// singleRank is rank's own request list as a merged list.
func singleRank(l *RequestList, rank int) mergedRequests {
	m := mergedRequests{shutdown: l.Shutdown, groups: make([]requestGroup, len(l.Requests))}
	for i := range l.Requests {
		m.groups[i] = requestGroup{req: l.Requests[i], ranks: []rankRange{{rank, 1, i}}}
		m.groups[i].req.Rank = rank
	}
	for _, w := range l.Withdrawn {
		m.withdrawn = append(m.withdrawn, withdrawalGroup{w: w, ranks: []rankRange{{rank, 1, 0}}})
	}
	return m
}

// merge folds o (the lists of ranks above m's) into m: a request with the
// same parameters as one of m's joins its group, the others are appended
// in o's order. The first failure (the lowest ranks') wins.
func (m *mergedRequests) merge(o *mergedRequests) {
	if m.failure != "" {
		return
	}
	if o.failure != "" {
		*m = mergedRequests{failure: o.failure}
		return
	}
	m.shutdown = m.shutdown || o.shutdown
	byKey := make(map[key][]int, len(m.groups))
	for i := range m.groups {
		k := key{m.groups[i].req.ProcessSet, m.groups[i].req.Name}
		byKey[k] = append(byKey[k], i)
	}
	for _, g := range o.groups {
		k := key{g.req.ProcessSet, g.req.Name}
		if i, ok := m.matching(byKey[k], &g.req); ok {
			mg := &m.groups[i]
			mg.ranks = unionRanks(mg.ranks, g.ranks)
			mg.req.Rank = mg.ranks[0].first
			mg.req.Age = max(mg.req.Age, g.req.Age)
			continue
		}
		byKey[k] = append(byKey[k], len(m.groups))
		m.groups = append(m.groups, g)
	}
	for _, w := range o.withdrawn {
		i := 0
		for i < len(m.withdrawn) && m.withdrawn[i].w != w.w {
			i++
		}
		if i < len(m.withdrawn) {
			m.withdrawn[i].ranks = unionRanks(m.withdrawn[i].ranks, w.ranks)
		} else {
			m.withdrawn = append(m.withdrawn, w)
		}
	}
}

// matching returns the group among candidates whose request has r's
// parameters.
func (m *mergedRequests) matching(candidates []int, r *Request) (int, bool) {
	for _, i := range candidates {
		if m.groups[i].req.sameParams(r) {
			return i, true
		}
	}
	return 0, false
}

// unionRanks merges two ascending lists of disjoint ranges, joining
// adjacent ones of the same index (overlaps, which only a malformed peer
// sends, are kept for rank 0 to reject).
func unionRanks(a, b []rankRange) []rankRange {
	out := make([]rankRange, 0, len(a)+len(b))
	add := func(r rankRange) {
		if n := len(out); n > 0 && r.first == out[n-1].first+out[n-1].count && r.index == out[n-1].index {
			out[n-1].count += r.count
			return
		}
		out = append(out, r)
	}
	for len(a) > 0 || len(b) > 0 {
		if len(b) == 0 || (len(a) > 0 && a[0].first <= b[0].first) {
			add(a[0])
			a = a[1:]
		} else {
			add(b[0])
			b = b[1:]
		}
	}
	return out
}

// eachRank calls f for every rank of ranks, ascending.
func eachRank(ranks []rankRange, f func(rank int)) {
	for _, r := range ranks {
		for i := r.first; i < r.first+r.count; i++ {
			f(i)
		}
	}
}

// appendMerged appends the encoding of m (the Merged form of wire.go).
func appendMerged(dst []byte, m *mergedRequests) []byte {
	f := byte(flagMerged)
	if m.failure != "" {
		return appendString(append(dst, wireVersion, f|flagFailure), m.failure)
	}
	f |= flags(m.shutdown)
	if len(m.withdrawn) > 0 {
		f |= flagWithdrawals
	}
	dst = append(dst, wireVersion, f)
	dst = binary.AppendUvarint(dst, uint64(len(m.groups)))
	for i := range m.groups {
		dst = appendRequest(dst, &m.groups[i].req)
		dst = appendRanks(dst, m.groups[i].ranks)
	}
	if len(m.withdrawn) > 0 {
		dst = binary.AppendUvarint(dst, uint64(len(m.withdrawn)))
		for _, w := range m.withdrawn {
			dst = binary.AppendVarint(dst, int64(w.w.ProcessSet))
			dst = appendString(dst, w.w.Name)
			dst = appendRanks(dst, w.ranks)
		}
	}
	return dst
}

func appendRanks(dst []byte, ranks []rankRange) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(ranks)))
	for _, r := range ranks {
		dst = binary.AppendUvarint(dst, uint64(r.first))
		dst = binary.AppendUvarint(dst, uint64(r.count))
		dst = binary.AppendUvarint(dst, uint64(r.index))
	}
	return dst
}

// decodeRequests decodes what a rank sent up the tree or to rank 0: its
// own RequestList (from is its rank) or a merged list of ranks below size.
// It never panics and rejects trailing bytes.
func decodeRequests(b []byte, from, size int) (mergedRequests, error) {
	if len(b) < 2 || b[1]&flagMerged == 0 {
		l, err := DecodeRequestList(b)
		if err != nil {
			return mergedRequests{}, err
		}
		return singleRank(&l, from), nil
	}
	d := decoder{b: b}
	f := d.header(flagShutdown | flagWithdrawals | flagMerged | flagFailure)
	if f&flagFailure != 0 {
		m := mergedRequests{failure: d.string()}
		return m, d.finish("merged request list")
	}
	m := mergedRequests{shutdown: f&flagShutdown != 0}
	n := d.count()
	for i := 0; i < n && d.err == nil; i++ {
		var g requestGroup
		d.request(&g.req)
		g.ranks = d.ranks(size)
		if len(g.ranks) > 0 {
			g.req.Rank = g.ranks[0].first
		}
		m.groups = append(m.groups, g)
	}
	if f&flagWithdrawals != 0 {
		n := d.count()
		for i := 0; i < n && d.err == nil; i++ {
			w := withdrawalGroup{w: Withdrawal{ProcessSet: d.int(), Name: d.string()}}
			w.ranks = d.ranks(size)
			m.withdrawn = append(m.withdrawn, w)
		}
	}
	if err := d.finish("merged request list"); err != nil {
		return mergedRequests{}, err
	}
	return m, nil
}

// ranks reads a rank set: non-empty, ascending, disjoint ranges below
// size, and their indexes.
func (d *decoder) ranks(size int) []rankRange {
	n := d.count()
	if d.err == nil && n == 0 {
		d.fail("empty rank set")
	}
	out := make([]rankRange, 0, n)
	next := 0
	for i := 0; i < n && d.err == nil; i++ {
		first, count, index := d.uvarint(), d.uvarint(), d.uvarint()
		if d.err == nil && (first < uint64(next) || count == 0 || first+count > uint64(size) || first+count < first || index > math.MaxInt32) {
			d.fail("rank set")
		}
		out = append(out, rankRange{int(first), int(count), int(index)})
		next = int(first + count)
	}
	return out
}

// combine is the TreeExchange's fold on an inner rank: own (or what it has
// folded so far) and a child's subtree become one merged list. A child's
// list that does not decode becomes a failure that rank 0 reports.
func (c *Controller) combine(acc, child []byte, from int) []byte {
	m, err := decodeRequests(acc, c.cfg.Rank, c.cfg.Size)
	if err != nil { // our own encoding: cannot happen; report rather than hide
		m = mergedRequests{failure: fmt.Sprintf("request list from rank %d: %v", c.cfg.Rank, err)}
	}
	o, err := decodeRequests(child, from, c.cfg.Size)
	if err != nil {
		o = mergedRequests{failure: fmt.Sprintf("request list from rank %d: %v", from, err)}
	}
	m.merge(&o)
	return appendMerged(nil, &m)
}

// gatherRequests sends this rank's request payload towards rank 0, up the
// tree when x has one; rank 0 returns every rank's requests merged.
func (c *Controller) gatherRequests(ctx context.Context, x Exchange, payload []byte) (*mergedRequests, error) {
	if tx, ok := x.(TreeExchange); ok {
		all, err := tx.ReduceToRoot(ctx, payload, c.combine)
		if err != nil || c.cfg.Rank != 0 {
			return nil, err
		}
		m, err := decodeRequests(all, 0, c.cfg.Size)
		if err != nil {
			m.err = fmt.Errorf("merged request lists: %w", err)
		}
		return &m, nil
	}
	payloads, err := x.GatherToRoot(ctx, payload)
	if err != nil || c.cfg.Rank != 0 {
		return nil, err
	}
	if len(payloads) != c.cfg.Size {
		return &mergedRequests{err: fmt.Errorf("%w: gathered %d request lists for %d ranks", ErrInvalid, len(payloads), c.cfg.Size)}, nil
	}
	return mergePayloads(payloads, c.cfg.Size), nil
}

// mergePayloads merges the payloads of ranks 0, 1, ... in rank order; the
// first that does not decode sets err.
func mergePayloads(payloads [][]byte, size int) *mergedRequests {
	var all mergedRequests
	for r, p := range payloads {
		m, err := decodeRequests(p, r, size)
		if err != nil {
			return &mergedRequests{err: fmt.Errorf("request list from rank %d: %w", r, err)}
		}
		all.merge(&m)
	}
	return &all
}

// broadcastResponses sends rank 0's encoded response list to every rank,
// down the tree when x has one.
func broadcastResponses(ctx context.Context, x Exchange, payload []byte) ([]byte, error) {
	if tx, ok := x.(TreeExchange); ok {
		return tx.BroadcastDown(ctx, payload)
	}
	return x.BroadcastFromRoot(ctx, payload)
}

// readingOrder returns, for each rank r, the groups of r's requests in r's
// submission order: order[start[r]:start[r+1]]. It is the order in which
// rank 0 reads the ranks' lists one after another (ranks ascending), which
// decides the order responses become ready in. A rank set claiming a
// position twice or leaving a gap is malformed.
func readingOrder(groups []requestGroup, size int) (order []int32, start []int, err error) {
	start = make([]int, size+1)
	for gi := range groups {
		for _, rr := range groups[gi].ranks {
			for r := rr.first; r < rr.first+rr.count; r++ {
				start[r+1]++
			}
		}
	}
	for r := range size {
		start[r+1] += start[r]
	}
	order = make([]int32, start[size])
	for i := range order {
		order[i] = -1
	}
	for gi := range groups {
		for _, rr := range groups[gi].ranks {
			for r := rr.first; r < rr.first+rr.count; r++ {
				slot := start[r] + rr.index
				if slot >= start[r+1] || order[slot] != -1 {
					return nil, nil, fmt.Errorf("%w: rank %d's request %q at position %d twice or past its %d requests",
						ErrMalformed, r, groups[gi].req.Name, rr.index, start[r+1]-start[r])
				}
				order[slot] = int32(gi)
			}
		}
	}
	return order, start, nil
}
