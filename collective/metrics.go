package collective

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/gorovod/gorovod/coordinator"
	prom "github.com/gorovod/gorovod/internal/metrics"
)

// metrics are the worker's counters; the loop updates them, Stats reads them.
type metrics struct {
	cycles, cycleNanos atomic.Int64
	ops, opNanos       atomic.Int64
	tensors, fusedOps  atomic.Int64
	bytes              atomic.Int64
	cycleHist          atomic.Pointer[prom.Histogram]    // nil unless metrics are served (set while the loop may run)
	ctrl               atomic.Pointer[coordinator.Stats] // snapshot after the last cycle
}

func newMetrics() *metrics { return &metrics{} }

func (m *metrics) cycle(d time.Duration, cs coordinator.Stats) {
	m.cycles.Add(1)
	m.cycleNanos.Add(int64(d))
	m.ctrl.Store(&cs)
	if h := m.cycleHist.Load(); h != nil {
		h.ObserveDuration(d)
	}
}

func (m *metrics) controller() coordinator.Stats {
	if p := m.ctrl.Load(); p != nil {
		return *p
	}
	return coordinator.Stats{}
}

func (m *metrics) op(r *coordinator.Response, tensors int, d time.Duration) {
	m.ops.Add(1)
	m.bytes.Add(r.Bytes())
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
	Bytes          int64         // bytes of the tensors whose collective completed (as gorovod_bytes_total)
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
	return e.stats()
}

func (e *engine) stats() Stats {
	m := e.met
	s := Stats{
		Cycles: m.cycles.Load(), CycleTime: time.Duration(m.cycleNanos.Load()),
		BackendOps: m.ops.Load(), Tensors: m.tensors.Load(), FusedOps: m.fusedOps.Load(),
		OpTime: time.Duration(m.opNanos.Load()), Bytes: m.bytes.Load(),
	}
	cs := m.controller()
	s.RequestsToRoot, s.CacheHits, s.CacheMisses = cs.RequestsSent, cs.CacheHits, cs.CacheMisses
	return s
}

// serveMetrics exposes this worker's counters as Prometheus metrics at
// cfg.MetricsAddr. Workers on one host would collide on one port, so the
// port is offset by the local rank (port 9100 serves local rank 0, 9101
// local rank 1, ...); port 0 picks a free port, logged at info level.
func (e *engine) serveMetrics(ctx context.Context) error {
	if e.cfg.MetricsAddr == "" {
		return nil
	}
	host, portStr, err := net.SplitHostPort(e.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("%w: metrics address %q: %v", ErrInvalid, e.cfg.MetricsAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port+e.topo.LocalRank > 65535 {
		return fmt.Errorf("%w: metrics address %q: bad port", ErrInvalid, e.cfg.MetricsAddr)
	}
	if port != 0 {
		port += e.topo.LocalRank
	}
	m := e.met
	reg := prom.NewRegistry(prom.Label{Name: "rank", Value: strconv.Itoa(e.topo.Rank)}, prom.Label{Name: "host", Value: e.topo.Host})
	count := func(name, help string, f func() int64) {
		reg.CounterFunc(name, help, func() float64 { return float64(f()) })
	}
	count("gorovod_cycles_total", "Negotiation cycles run.", m.cycles.Load)
	count("gorovod_backend_ops_total", "Data-plane operations executed (a fused op counts once).", m.ops.Load)
	count("gorovod_tensors_total", "Tensors whose collective completed.", m.tensors.Load)
	count("gorovod_fused_ops_total", "Data-plane operations that carried more than one tensor.", m.fusedOps.Load)
	count("gorovod_bytes_total", "Bytes of tensors whose collective completed (per rank).", m.bytes.Load)
	count("gorovod_cache_hits_total", "Requests served from the response cache.", func() int64 { return m.controller().CacheHits })
	count("gorovod_cache_misses_total", "Requests not found in the response cache.", func() int64 { return m.controller().CacheMisses })
	count("gorovod_requests_to_root_total", "Negotiation requests this rank sent to rank 0.", func() int64 { return m.controller().RequestsSent })
	reg.CounterFunc("gorovod_cycle_seconds_total", "Time spent in negotiation cycles.", func() float64 { return time.Duration(m.cycleNanos.Load()).Seconds() })
	reg.CounterFunc("gorovod_op_seconds_total", "Time spent in data-plane operations.", func() float64 { return time.Duration(m.opNanos.Load()).Seconds() })
	m.cycleHist.Store(reg.Histogram("gorovod_negotiation_seconds", "Duration of one negotiation cycle (negotiation latency).", prom.LatencyBuckets()))
	srv, err := prom.Serve(ctx, net.JoinHostPort(host, strconv.Itoa(port)), reg)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	e.metricsURL = srv.URL()
	e.log.Info("serving metrics", zap.String("url", srv.URL()))
	e.closers = append(e.closers, srv.Close)
	return nil
}
