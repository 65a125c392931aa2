package collective

import (
	"sync/atomic"
	"time"

	"github.com/gorovod/gorovod/coordinator"
)

// metrics are the worker's counters; the loop updates them, Stats reads them.
type metrics struct {
	cycles, cycleNanos atomic.Int64
	ops, opNanos       atomic.Int64
	tensors, fusedOps  atomic.Int64
	ctrl               atomic.Pointer[coordinator.Stats] // snapshot after the last cycle
}

func newMetrics() *metrics { return &metrics{} }

func (m *metrics) cycle(d time.Duration, cs coordinator.Stats) {
	m.cycles.Add(1)
	m.cycleNanos.Add(int64(d))
	m.ctrl.Store(&cs)
}

func (m *metrics) controller() coordinator.Stats {
	if p := m.ctrl.Load(); p != nil {
		return *p
	}
	return coordinator.Stats{}
}

func (m *metrics) op(_ coordinator.OpType, tensors int, d time.Duration) {
	m.ops.Add(1)
	m.tensors.Add(int64(tensors))
	m.opNanos.Add(int64(d))
}

func (m *metrics) fused(int) { m.fusedOps.Add(1) }

// Stats is a snapshot of this worker's counters.
type Stats struct {
	Cycles         int64         // negotiation cycles run
	CycleTime      time.Duration // total time in negotiation
	BackendOps     int64         // data-plane operations executed (a fused op counts once)
	Tensors        int64         // tensors completed
	FusedOps       int64         // backend ops that carried more than one tensor
	OpTime         time.Duration // total time in data-plane operations
	RequestsToRoot int64         // negotiation requests this rank sent to rank 0
	CacheHits      int64
	CacheMisses    int64
}

// GetStats returns this worker's counters (zero before Init).
func GetStats() Stats {
	e, err := current()
	if err != nil {
		return Stats{}
	}
	m := e.met
	s := Stats{
		Cycles: m.cycles.Load(), CycleTime: time.Duration(m.cycleNanos.Load()),
		BackendOps: m.ops.Load(), Tensors: m.tensors.Load(), FusedOps: m.fusedOps.Load(),
		OpTime: time.Duration(m.opNanos.Load()),
	}
	cs := m.controller()
	s.RequestsToRoot, s.CacheHits, s.CacheMisses = cs.RequestsSent, cs.CacheHits, cs.CacheMisses
	return s
}
