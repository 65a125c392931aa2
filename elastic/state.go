package elastic

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/gob"
	"fmt"
	"math"
	"sync"

	"github.com/gorovod/gorovod/collective"
)

// Item is one named part of a State: a slice of parameters, a counter, an
// optimizer's moments. Make them with Float32s, Float64s or Value.
type Item interface {
	Name() string
	save() ([]byte, error)
	load([]byte) error
}

type sliceItem[T float32 | float64] struct {
	name string
	p    []T
}

func (s *sliceItem[T]) Name() string { return s.name }

// save copies the elements as little-endian IEEE bits: a copy, not an
// encoding pass (Commit runs it every step).
func (s *sliceItem[T]) save() ([]byte, error) {
	var zero T
	switch any(zero).(type) {
	case float32:
		out := make([]byte, 4*len(s.p))
		for i, v := range s.p {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(float32(v)))
		}
		return out, nil
	default:
		out := make([]byte, 8*len(s.p))
		for i, v := range s.p {
			binary.LittleEndian.PutUint64(out[8*i:], math.Float64bits(float64(v)))
		}
		return out, nil
	}
}

func (s *sliceItem[T]) load(b []byte) error {
	var zero T
	size := 8
	if _, ok := any(zero).(float32); ok {
		size = 4
	}
	if len(b) != size*len(s.p) {
		return fmt.Errorf("%w: state %q has %d elements, the saved one %d", ErrInvalid, s.name, len(s.p), len(b)/size)
	}
	for i := range s.p {
		if size == 4 {
			s.p[i] = T(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
		} else {
			s.p[i] = T(math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])))
		}
	}
	return nil
}

// Float32s keeps p (the slice's elements, in place: p is never replaced).
func Float32s(name string, p []float32) Item { return &sliceItem[float32]{name: name, p: p} }

// Float64s keeps p in place.
func Float64s(name string, p []float64) Item { return &sliceItem[float64]{name: name, p: p} }

type valueItem struct {
	name string
	ptr  any
}

func (v *valueItem) Name() string { return v.name }

func (v *valueItem) save() ([]byte, error) {
	var buf bytes.Buffer
	err := gob.NewEncoder(&buf).Encode(v.ptr)
	return buf.Bytes(), err
}

func (v *valueItem) load(b []byte) error { return gob.NewDecoder(bytes.NewReader(b)).Decode(v.ptr) }

// Value keeps the gob-encodable value ptr points to.
func Value(name string, ptr any) Item { return &valueItem{name: name, ptr: ptr} }

// State is what a worker keeps across membership changes: its items'
// last committed copy and the number of commits (the step). Run restores
// the committed copy after a failure and syncs it to ranks that have an
// older one. Use a State from the goroutine running Run's function.
type State struct {
	items   []Item
	onReset []func(ctx context.Context, w *collective.World) error

	mu        sync.Mutex
	committed [][]byte // per item
	step      int64    // commits so far
	world     *collective.World
	vote      func(ctx context.Context, w *collective.World, step int64) (voteResult, error)
	observe   func(step int64) // Run's: the step reaches heartbeats
	lastReset ResetInfo
}

// NewState returns a state of items; its first commit is their current
// value (taken by Run before the function first runs).
func NewState(items ...Item) *State {
	return &State{items: items}
}

// OnReset adds fn to the functions Run calls after joining a new world,
// before the state is synced (e.g. to scale the learning rate with the
// world's size).
func (s *State) OnReset(fn func(ctx context.Context, w *collective.World) error) {
	s.onReset = append(s.onReset, fn)
}

// Step returns the number of commits of the state (after a sync, the
// highest any survivor had).
func (s *State) Step() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.step
}

func (s *State) snapshot() ([][]byte, error) {
	out := make([][]byte, len(s.items))
	for i, it := range s.items {
		b, err := it.save()
		if err != nil {
			return nil, fmt.Errorf("%w: saving state %q: %v", ErrInvalid, it.Name(), err)
		}
		out[i] = b
	}
	return out, nil
}

// Commit copies the state and takes the commit vote with every rank of
// the world: the step is committed on this rank once the vote completed.
// It returns collective.ErrHostsUpdated (after committing) when any rank
// was told of a newer membership: every rank returns it at the same step,
// and the function should return it to Run. Other errors (a peer lost
// during the vote) leave the step uncommitted; Run restores the last
// commit.
func (s *State) Commit(ctx context.Context) error {
	snap, err := s.snapshot()
	if err != nil {
		return err
	}
	s.mu.Lock()
	w, vote, step := s.world, s.vote, s.step
	s.mu.Unlock()
	if w == nil || vote == nil {
		return fmt.Errorf("%w: Commit outside elastic.Run", ErrInvalid)
	}
	res, err := vote(ctx, w, step+1)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.committed, s.step = snap, step+1
	obs := s.observe
	s.mu.Unlock()
	if obs != nil {
		obs(step + 1)
	}
	if res.change() {
		return fmt.Errorf("%w: %s (at step %d)", collective.ErrHostsUpdated, res.why(), step+1)
	}
	return nil
}

// restore puts the last committed copy back into the items.
func (s *State) restore() error {
	s.mu.Lock()
	committed := s.committed
	s.mu.Unlock()
	for i, it := range s.items {
		if committed == nil || committed[i] == nil {
			continue
		}
		if err := it.load(committed[i]); err != nil {
			return fmt.Errorf("restoring state %q: %w", it.Name(), err)
		}
	}
	return nil
}

// encodeCommitted returns the committed copy as one blob (for the sync).
func (s *State) encodeCommitted() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(s.committed); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// adopt loads a blob from encodeCommitted as this rank's items and commit.
func (s *State) adopt(blob []byte, step int64) error {
	var committed [][]byte
	if err := gob.NewDecoder(bytes.NewReader(blob)).Decode(&committed); err != nil {
		return fmt.Errorf("%w: synced state: %v", ErrInvalid, err)
	}
	if len(committed) != len(s.items) {
		return fmt.Errorf("%w: synced state has %d items, this rank %d", ErrInvalid, len(committed), len(s.items))
	}
	s.mu.Lock()
	s.committed, s.step = committed, step
	s.mu.Unlock()
	return s.restore()
}
