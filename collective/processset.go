package collective

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/ops"
)

// ProcessSet is a subset of the job's ranks that runs collectives among
// itself. Create it with NewProcessSet on every rank (members or not), in
// the same order on every rank; pass it to a collective with InProcessSet.
type ProcessSet struct {
	e     *engine // the world the set belongs to
	id    int
	ranks []int // global ranks, ascending
	index int   // this rank's index in ranks, -1 when not a member
}

// ID is the set's identifier (0 is the global set).
func (ps *ProcessSet) ID() int { return ps.id }

// Ranks returns the global ranks of the members, ascending.
func (ps *ProcessSet) Ranks() []int { return slices.Clone(ps.ranks) }

// Size is the number of members.
func (ps *ProcessSet) Size() int { return len(ps.ranks) }

// Rank is this process's index within the set, -1 when it is not a member.
func (ps *ProcessSet) Rank() int { return ps.index }

// Included reports whether this process is a member.
func (ps *ProcessSet) Included() bool { return ps.index >= 0 }

// setState is the loop's side of a process set: its communicator.
type setState struct {
	comm    *ops.Comm // nil when this rank is not a member
	members []int
}

// NewProcessSet registers a process set of the given global ranks. Every
// rank of the job must call it with the same ranks, in the same order
// relative to other NewProcessSet calls; it is negotiated like a barrier.
func NewProcessSet(ctx context.Context, ranks []int, opts ...CallOption) (*ProcessSet, error) {
	co := callOpts(opts)
	co.set = nil
	e, err := co.engine()
	if err != nil {
		return nil, err
	}
	rs := slices.Clone(ranks)
	slices.Sort(rs)
	if len(rs) == 0 {
		return nil, fmt.Errorf("%w: process set with no ranks", ErrInvalid)
	}
	for i, r := range rs {
		if r < 0 || r >= e.topo.Size {
			return nil, fmt.Errorf("%w: process set rank %d out of range [0,%d)", ErrInvalid, r, e.topo.Size)
		}
		if i > 0 && rs[i-1] == r {
			return nil, fmt.Errorf("%w: process set lists rank %d twice", ErrInvalid, r)
		}
	}
	e.mu.Lock()
	e.nextSet++
	id := e.nextSet
	e.mu.Unlock()
	ps := &ProcessSet{e: e, id: id, ranks: rs, index: slices.Index(rs, e.topo.Rank)}
	strs := make([]string, len(rs))
	for i, r := range rs {
		strs[i] = strconv.Itoa(r)
	}
	// The ranks are part of the name: ranks that disagree on the members
	// negotiate different names, which the stall inspector reports.
	name := fmt.Sprintf("processset/%d/%s", id, strings.Join(strs, ","))
	err = RunExclusive(ctx, name, func(ctx context.Context, _ *ops.Comm) error {
		return e.addProcessSet(id, rs, ps.index)
	}, inEngine(e))
	if err != nil {
		return nil, err
	}
	return ps, nil
}

// addProcessSet runs on the loop goroutine, at the same point on every rank.
func (e *engine) addProcessSet(id int, members []int, index int) error {
	if err := e.ctrl.AddProcessSet(id, members); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	st := &setState{members: members}
	if index >= 0 {
		comm, err := ops.NewComm(&subMesh{parent: e.mesh, members: members, me: index}, e.opsConfig())
		if err != nil {
			return err
		}
		st.comm = comm
	}
	e.sets[id] = st
	return nil
}

// commFor returns the communicator of a process set (0: the global one).
func (e *engine) commFor(set int) (*ops.Comm, error) {
	if set == 0 {
		return e.comm, nil
	}
	st := e.sets[set]
	if st == nil || st.comm == nil {
		return nil, fmt.Errorf("%w: response for process set %d, which this rank is not a member of", ErrInvalid, set)
	}
	return st.comm, nil
}

// subMesh is the view of a process set's members on the job's mesh: member
// index i is global rank members[i].
type subMesh struct {
	parent  transport.Mesh
	members []int
	me      int
}

func (m *subMesh) Rank() int { return m.me }
func (m *subMesh) Size() int { return len(m.members) }
func (m *subMesh) Link(i int) transport.Link {
	if i == m.me {
		return nil
	}
	return m.parent.Link(m.members[i])
}
func (m *subMesh) Host(i int) string { return m.parent.Host(m.members[i]) }

// Close is the algorithms' fail-stop: a failed op in a set breaks the
// byte streams it shares with the job, so the whole mesh goes.
func (m *subMesh) Close() error { return m.parent.Close() }

// InProcessSet runs a collective within ps instead of the whole job. Only
// members may call it; roots are global ranks.
func InProcessSet(ps *ProcessSet) CallOption { return func(o *callOptions) { o.set = ps } }
