package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Counter is a monotonically increasing count. Its methods are atomic,
// never block, and are no-ops on a nil *Counter.
type Counter struct{ c prometheus.Counter }

// Add adds n.
func (c *Counter) Add(n uint64) {
	if c != nil {
		c.c.Add(float64(n))
	}
}

// Inc adds 1.
func (c *Counter) Inc() { c.Add(1) }

// Value returns the current count.
func (c *Counter) Value() uint64 {
	if c == nil {
		return 0
	}
	return uint64(read(c.c).GetCounter().GetValue())
}

// Gauge is a float64 that goes up and down. Its methods are atomic, never
// block, and are no-ops on a nil *Gauge.
type Gauge struct{ g prometheus.Gauge }

// Set sets the value.
func (g *Gauge) Set(v float64) {
	if g != nil {
		g.g.Set(v)
	}
}

// Add adds d (which may be negative).
func (g *Gauge) Add(d float64) {
	if g != nil {
		g.g.Add(d)
	}
}

// Value returns the current value.
func (g *Gauge) Value() float64 {
	if g == nil {
		return 0
	}
	return read(g.g).GetGauge().GetValue()
}

// read snapshots one metric the way a scrape does.
func read(m prometheus.Metric) *dto.Metric {
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		return &dto.Metric{} // a plain counter or gauge never fails to write
	}
	return &out
}

// Histogram counts observations in cumulative buckets. Observe is
// lock-free and a no-op on a nil *Histogram.
type Histogram struct{ h prometheus.Histogram }

// Observe records v.
func (h *Histogram) Observe(v float64) {
	if h != nil {
		h.h.Observe(v)
	}
}

// ObserveDuration records d in seconds, Prometheus' unit of time.
func (h *Histogram) ObserveDuration(d time.Duration) { h.Observe(d.Seconds()) }

// ExponentialBuckets returns n bucket bounds start, start*factor, ...
// It returns nil unless start > 0, factor > 1 and n > 0 (client_golang's
// version panics instead).
func ExponentialBuckets(start, factor float64, n int) []float64 {
	if start <= 0 || factor <= 1 || n <= 0 {
		return nil
	}
	return prometheus.ExponentialBuckets(start, factor, n)
}

// LatencyBuckets returns bounds that suit the loop's timings: 10 µs to
// ~10 s in factors of 4.
func LatencyBuckets() []float64 { return ExponentialBuckets(10e-6, 4, 11) }
