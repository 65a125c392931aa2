package coordinator

import (
	"fmt"
	"slices"
	"time"
)

// key identifies a tensor: names are unique within a process set.
type key struct {
	set  int
	name string
}

// tableEntry collects the requests rank 0 has received for one tensor.
type tableEntry struct {
	key        key
	seq        uint64     // arrival order of the first request
	reqs       []*Request // by global rank; nil: not submitted yet
	count      int        // non-nil reqs
	lastRank   int        // the rank whose request arrived last
	lastCycle  uint64     // the table cycle in which it arrived
	firstSeen  time.Time
	lastWarned time.Time
	done       bool
}

// messageTable is rank 0's view of everything submitted and not yet
// answered: Horovod's message table plus the stall inspector's clocks.
type messageTable struct {
	size    int
	entries map[key]*tableEntry
	order   []*tableEntry // by seq; done entries are dropped lazily
	seq     uint64
	cycle   uint64 // counts the cycles that brought requests
}

func newMessageTable(size int) *messageTable {
	return &messageTable{size: size, entries: make(map[key]*tableEntry)}
}

var joinKey = key{0, JoinName}

// joined reports whether rank has submitted Join and the Join has not completed.
func (t *messageTable) joined(rank int) bool {
	e := t.entries[joinKey]
	return e != nil && e.reqs[rank] != nil
}

func (t *messageTable) anyJoined() bool { return t.entries[joinKey] != nil }

// add records rank's request req (shared with the other ranks of its
// group; not copied) in e, req's entry if the caller has it (nil: looked
// up); it returns the entry and whether it is new. A second request from
// the same rank for one name is ignored (the controller of that rank never
// sends one).
func (t *messageTable) add(e *tableEntry, req *Request, rank int, now time.Time) (_ *tableEntry, isNew, dup bool) {
	k := key{req.ProcessSet, req.Name}
	if e == nil || e.done {
		e = t.entries[k]
	}
	if e == nil {
		t.seq++
		e = &tableEntry{key: k, seq: t.seq, reqs: make([]*Request, t.size), firstSeen: now}
		t.entries[k] = e
		t.order = append(t.order, e)
		isNew = true
	}
	if e.reqs[rank] != nil {
		return e, isNew, true
	}
	if req.Age > 0 && now.Add(-req.Age).Before(e.firstSeen) {
		e.firstSeen = now.Add(-req.Age)
	}
	e.reqs[rank] = req
	e.count++
	// The last to arrive: within a cycle the highest rank, as if the
	// ranks' lists were read one after another.
	if e.lastCycle != t.cycle || rank > e.lastRank {
		e.lastRank, e.lastCycle = rank, t.cycle
	}
	return e, isNew, false
}

// ready reports whether every member of the entry's set has submitted it
// or joined.
func (t *messageTable) ready(e *tableEntry, members []int) bool {
	if e.count == len(members) {
		return true
	}
	if !t.anyJoined() {
		return false
	}
	for _, m := range members {
		if e.reqs[m] == nil && !t.joined(m) {
			return false
		}
	}
	return true
}

// withdraw forgets rank's request for k, if it has one; an entry nobody
// else submitted goes.
func (t *messageTable) withdraw(rank int, k key) {
	e := t.entries[k]
	if e == nil || rank < 0 || rank >= len(e.reqs) || e.reqs[rank] == nil {
		return
	}
	e.reqs[rank] = nil
	e.count--
	if e.count == 0 {
		t.remove(e)
	}
}

func (t *messageTable) remove(e *tableEntry) {
	e.done = true
	delete(t.entries, e.key)
}

// compact drops answered entries from the ordered list.
func (t *messageTable) compact() {
	kept := t.order[:0]
	for _, e := range t.order {
		if !e.done {
			kept = append(kept, e)
		}
	}
	clear(t.order[len(kept):])
	t.order = kept
}

// buildResponse validates the requests of a ready entry and turns them
// into a response, or an error response naming the ranks and values that
// disagree.
func (t *messageTable) buildResponse(e *tableEntry, members []int) Response {
	first := firstRequest(e, members)
	if first == nil { // only possible for a corrupt table; answer rather than hang
		return Response{Op: OpBarrier, Names: []string{e.key.name}, ProcessSet: e.key.set, Device: CPU,
			Error: fmt.Sprintf("%q has no submitting rank", e.key.name), ErrorKind: ErrorInvalid}
	}
	resp := Response{
		Op: first.Op, Names: []string{e.key.name}, DType: first.DType, ReduceOp: first.ReduceOp,
		Root: first.Root, Device: first.Device, Prescale: first.Prescale, Postscale: first.Postscale,
		ProcessSet: e.key.set,
	}
	if first.Op == OpJoin {
		resp.LastJoined = e.lastRank
		resp.Device = CPU
		return resp
	}
	resp.JoinedRanks = joinedRanks(e, members)
	if r := checkRequests(e, members, first, resp.JoinedRanks); r != nil {
		resp.Error, resp.ErrorKind = r.msg, r.kind
		resp.JoinedRanks = nil
		return resp
	}
	resp.Counts, resp.FirstDims, resp.RowElems = responseSizes(e, members, first)
	return resp
}

// firstRequest is the request of the lowest member that submitted e, the
// one every other request is checked against; nil if none did.
func firstRequest(e *tableEntry, members []int) *Request {
	for _, m := range members {
		if e.reqs[m] != nil {
			return e.reqs[m]
		}
	}
	return nil
}

// joinedRanks are the members that did not submit e (they have joined).
func joinedRanks(e *tableEntry, members []int) []int {
	var joined []int
	for _, m := range members {
		if e.reqs[m] == nil {
			joined = append(joined, m)
		}
	}
	return joined
}

// refusal is why a negotiation fails: the kind and a message naming the
// ranks and values involved.
type refusal struct {
	kind ErrorKind
	msg  string
}

func refuse(kind ErrorKind, format string, args ...any) *refusal {
	return &refusal{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// checkRequests decides whether the requests for e can be answered: each
// request is valid on its own and agrees with first, and a broadcast's
// root can send. It returns nil when they can.
func checkRequests(e *tableEntry, members []int, first *Request, joined []int) *refusal {
	name := e.key.name
	if !first.Op.valid() {
		return refuse(ErrorInvalid, "%q: rank %d sent unknown op %v", name, first.Rank, first.Op)
	}
	var checked *Request // ranks of one merged group share their request
	for _, m := range members {
		if r := e.reqs[m]; r != nil && r != checked {
			if f := checkRequest(name, first, r); f != nil {
				return f
			}
			checked = r
		}
	}
	if first.Op == OpBroadcast {
		if !slices.Contains(members, first.Root) {
			return refuse(ErrorInvalid, "broadcast %q: root %d is not a rank of process set %d (ranks %v)", name, first.Root, e.key.set, members)
		}
		if slices.Contains(joined, first.Root) {
			return refuse(ErrorInvalid, "broadcast %q: root %d has joined and cannot send", name, first.Root)
		}
	}
	return nil
}

// checkRequest checks one request on its own, then against first (the
// lowest submitting rank's).
func checkRequest(name string, first, r *Request) *refusal {
	if r.Op != first.Op {
		return refuse(ErrorMismatch, "mismatched operations for %q: rank %d sent %s, rank %d sent %s",
			name, first.Rank, first.Op, r.Rank, r.Op)
	}
	if r.Op == OpBarrier {
		return nil
	}
	if r.DType.Size() == 0 {
		return refuse(ErrorInvalid, "%s %q: rank %d sent unknown dtype %v", r.Op, name, r.Rank, r.DType)
	}
	if _, err := elementCount(r.Shape); err != nil {
		return refuse(ErrorInvalid, "%s %q: rank %d: %v", r.Op, name, r.Rank, err)
	}
	if r.DType != first.DType {
		return refuse(ErrorMismatch, "mismatched %s %q: rank %d sent dtype %s, rank %d sent dtype %s",
			r.Op, name, first.Rank, first.DType, r.Rank, r.DType)
	}
	// Host and device tensors never meet under one name. GPU ordinals may
	// differ: each rank reduces on its own GPU.
	if (r.Device == CPU) != (first.Device == CPU) {
		return refuse(ErrorMismatch, "mismatched %s %q: rank %d sent device %s, rank %d sent device %s",
			r.Op, name, first.Rank, deviceString(first.Device), r.Rank, deviceString(r.Device))
	}
	if f := checkShape(name, first, r); f != nil {
		return f
	}
	return checkArguments(name, first, r)
}

// checkShape checks that r's shape fits first's as r's op needs: the same
// element count for the reducing ops and broadcast, the same dimensions
// after the first for allgather and alltoall.
func checkShape(name string, first, r *Request) *refusal {
	switch r.Op {
	case OpAllreduce, OpBroadcast, OpReduceScatter:
		c0, _ := elementCount(first.Shape)
		c1, _ := elementCount(r.Shape)
		if c0 != c1 {
			return refuse(ErrorMismatch, "mismatched %s %q: rank %d sent count %d (shape %v), rank %d sent count %d (shape %v)",
				r.Op, name, first.Rank, c0, shapeString(first.Shape), r.Rank, c1, shapeString(r.Shape))
		}
	case OpAllgather, OpAlltoall:
		if len(r.Shape) == 0 {
			return refuse(ErrorInvalid, "%s %q: rank %d sent a scalar; it needs at least one dimension", r.Op, name, r.Rank)
		}
		if len(r.Shape) != len(first.Shape) {
			return refuse(ErrorMismatch, "mismatched %s %q: rank %d sent shape %v (%s), rank %d sent shape %v (%s)",
				r.Op, name, first.Rank, shapeString(first.Shape), dims(len(first.Shape)), r.Rank, shapeString(r.Shape), dims(len(r.Shape)))
		}
		if !slices.Equal(r.Shape[1:], first.Shape[1:]) {
			return refuse(ErrorMismatch, "mismatched %s %q: rank %d sent shape %v, rank %d sent shape %v (dimensions after the first must match)",
				r.Op, name, first.Rank, shapeString(first.Shape), r.Rank, shapeString(r.Shape))
		}
	}
	return nil
}

// checkArguments checks that r's op arguments (reduce op and scales, or
// broadcast root) equal first's.
func checkArguments(name string, first, r *Request) *refusal {
	switch r.Op {
	case OpAllreduce, OpReduceScatter:
		if r.ReduceOp != first.ReduceOp {
			return refuse(ErrorMismatch, "mismatched %s %q: rank %d sent reduce op %s, rank %d sent reduce op %s",
				r.Op, name, first.Rank, first.ReduceOp, r.Rank, r.ReduceOp)
		}
		if r.Prescale != first.Prescale {
			return refuse(ErrorMismatch, "mismatched %s %q: rank %d sent prescale %g, rank %d sent prescale %g",
				r.Op, name, first.Rank, first.Prescale, r.Rank, r.Prescale)
		}
		if r.Postscale != first.Postscale {
			return refuse(ErrorMismatch, "mismatched %s %q: rank %d sent postscale %g, rank %d sent postscale %g",
				r.Op, name, first.Rank, first.Postscale, r.Rank, r.Postscale)
		}
	case OpBroadcast:
		if r.Root != first.Root {
			return refuse(ErrorMismatch, "mismatched broadcast %q: rank %d sent root %d, rank %d sent root %d",
				name, first.Rank, first.Root, r.Rank, r.Root)
		}
	}
	return nil
}

// responseSizes are the element counts of a checked response (see
// Response.Counts), and for allgather each member's first dimension and
// the row size.
func responseSizes(e *tableEntry, members []int, first *Request) (counts []int64, firstDims [][]int64, rowElems []int64) {
	switch first.Op {
	case OpAllreduce, OpBroadcast, OpReduceScatter:
		c, _ := elementCount(first.Shape)
		return []int64{c}, nil, nil
	case OpAllgather:
		row, _ := elementCount(first.Shape[1:])
		dims := make([]int64, len(members))
		var total int64
		for i, m := range members {
			if r := e.reqs[m]; r != nil {
				dims[i] = r.Shape[0]
				total += r.Shape[0]
			}
		}
		return []int64{total * row}, [][]int64{dims}, []int64{row}
	default:
		return []int64{0}, nil, nil
	}
}

// Stall is one tensor that some ranks submitted and others did not, as
// rank 0's stall inspector sees it.
type Stall struct {
	Name           string
	ProcessSet     int
	Op             OpType
	SubmittedRanks []int
	MissingRanks   []int
	Waiting        time.Duration // since the first rank submitted it
}

func (t *messageTable) stall(e *tableEntry, members []int, now time.Time) Stall {
	s := Stall{Name: e.key.name, ProcessSet: e.key.set, Waiting: now.Sub(e.firstSeen)}
	for _, m := range members {
		switch r := e.reqs[m]; {
		case r != nil:
			s.SubmittedRanks = append(s.SubmittedRanks, m)
			s.Op = r.Op
		case t.joined(m):
		default:
			s.MissingRanks = append(s.MissingRanks, m)
		}
	}
	return s
}

// overdue reports whether some tensor has waited at least limit. Joins
// are exempt from the stall inspector: ranks join early by design (uneven
// data) while the others keep working.
func (t *messageTable) overdue(now time.Time, limit time.Duration) bool {
	for _, e := range t.order {
		if !e.done && e.key != joinKey && now.Sub(e.firstSeen) >= limit {
			return true
		}
	}
	return false
}

// inspect returns the tensors that have waited at least warn and were not
// reported in the last warn interval, oldest first.
func (t *messageTable) inspect(now time.Time, warn time.Duration, sets map[int][]int) []Stall {
	var out []Stall
	for _, e := range t.order {
		if e.done || e.key == joinKey || now.Sub(e.firstSeen) < warn {
			continue
		}
		if !e.lastWarned.IsZero() && now.Sub(e.lastWarned) < warn {
			continue
		}
		e.lastWarned = now
		out = append(out, t.stall(e, sets[e.key.set], now))
	}
	return out
}

func dims(n int) string {
	if n == 1 {
		return "1 dim"
	}
	return fmt.Sprintf("%d dims", n)
}
