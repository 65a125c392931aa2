package timeline

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorovod/gorovod/coordinator"
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

// OnNegotiateStart implements coordinator.Observer.
func (s *Switch) OnNegotiateStart(now time.Time, name string, op coordinator.OpType) {
	s.Timeline().OnNegotiateStart(now, name, op)
}

// OnRankReady implements coordinator.Observer.
func (s *Switch) OnRankReady(now time.Time, name string, rank int) {
	s.Timeline().OnRankReady(now, name, rank)
}

// OnNegotiateEnd implements coordinator.Observer.
func (s *Switch) OnNegotiateEnd(now time.Time, name string) { s.Timeline().OnNegotiateEnd(now, name) }

// OnCycleStart implements coordinator.CycleObserver.
func (s *Switch) OnCycleStart(now time.Time) { s.Timeline().OnCycleStart(now) }

// OpStart forwards to Timeline.OpStart.
func (s *Switch) OpStart(now time.Time, r *coordinator.Response) { s.Timeline().OpStart(now, r) }

// Activity forwards to Timeline.Activity.
func (s *Switch) Activity(now time.Time, names []string, activity string) {
	s.Timeline().Activity(now, names, activity)
}

// OpEnd forwards to Timeline.OpEnd.
func (s *Switch) OpEnd(now time.Time, names []string, err error) {
	s.Timeline().OpEnd(now, names, err)
}

var (
	_ coordinator.Observer      = (*Timeline)(nil)
	_ coordinator.CycleObserver = (*Timeline)(nil)
	_ coordinator.Observer      = (*Switch)(nil)
	_ coordinator.CycleObserver = (*Switch)(nil)
)
