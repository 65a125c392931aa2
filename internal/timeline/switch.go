package timeline

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Switch holds the current timeline, if any, so one can be started and
// stopped while the loop runs (collective.StartTimeline / StopTimeline).
// The loop calls its methods, which forward to the current timeline with
// one atomic load; the zero value (and a nil *Switch) records nothing.
type Switch struct {
	mu  sync.Mutex // serialises Start/Stop, never taken by the loop
	cur atomic.Pointer[Timeline]
}

// Start opens a timeline at path and makes it current, closing the
// previous one. Spans already under way when it starts are not shown.
func (s *Switch) Start(path string, opts Options) error {
	t, err := Open(path, opts)
	if err != nil {
		return err
	}
	return s.Set(t)
}

// Set makes t current (nil stops recording) and closes the previous
// timeline, returning its Close error. Calls the loop is making on the
// previous one at that moment finish first or become no-ops.
func (s *Switch) Set(t *Timeline) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.Swap(t).Close()
}

// Stop closes the current timeline, if any; idempotent.
func (s *Switch) Stop() error { return s.Set(nil) }

// Timeline returns the current timeline (nil if none: still a valid receiver).
func (s *Switch) Timeline() *Timeline {
	if s == nil {
		return nil
	}
	return s.cur.Load()
}

// Enabled reports whether a timeline is recording.
func (s *Switch) Enabled() bool { return s.Timeline().Enabled() }

// OnNegotiateStart forwards to Timeline.OnNegotiateStart.
func (s *Switch) OnNegotiateStart(now time.Time, name string, op string) {
	s.Timeline().OnNegotiateStart(now, name, op)
}

// OnRankReady forwards to Timeline.OnRankReady.
func (s *Switch) OnRankReady(now time.Time, name string, rank int) {
	s.Timeline().OnRankReady(now, name, rank)
}

// OnNegotiateEnd forwards to Timeline.OnNegotiateEnd.
func (s *Switch) OnNegotiateEnd(now time.Time, name string) { s.Timeline().OnNegotiateEnd(now, name) }

// OnCycleStart forwards to Timeline.OnCycleStart.
func (s *Switch) OnCycleStart(now time.Time) { s.Timeline().OnCycleStart(now) }

// OpStart forwards to Timeline.OpStart.
func (s *Switch) OpStart(now time.Time, r Op) { s.Timeline().OpStart(now, r) }

// Activity forwards to Timeline.Activity.
func (s *Switch) Activity(now time.Time, names []string, activity string) {
	s.Timeline().Activity(now, names, activity)
}

// OpEnd forwards to Timeline.OpEnd.
func (s *Switch) OpEnd(now time.Time, names []string, err error) {
	s.Timeline().OpEnd(now, names, err)
}

// Observer adapts a Switch to the negotiation hooks of a coordinator whose
// op type names itself (coordinator.Observer and CycleObserver with Op =
// coordinator.OpType), without this package depending on the coordinator.
type Observer[Op fmt.Stringer] struct{ S *Switch }

// OnNegotiateStart forwards to Switch.OnNegotiateStart with the op's name.
func (o Observer[Op]) OnNegotiateStart(now time.Time, name string, op Op) {
	o.S.OnNegotiateStart(now, name, op.String())
}

// OnRankReady forwards to Switch.OnRankReady.
func (o Observer[Op]) OnRankReady(now time.Time, name string, rank int) {
	o.S.OnRankReady(now, name, rank)
}

// OnNegotiateEnd forwards to Switch.OnNegotiateEnd.
func (o Observer[Op]) OnNegotiateEnd(now time.Time, name string) { o.S.OnNegotiateEnd(now, name) }

// OnCycleStart forwards to Switch.OnCycleStart.
func (o Observer[Op]) OnCycleStart(now time.Time) { o.S.OnCycleStart(now) }
