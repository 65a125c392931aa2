package metrics

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ErrInvalid marks a registration that cannot be exported (bad name,
// conflicting type, help or labels).
var ErrInvalid = errors.New("metrics: invalid registration")

// Label is one name="value" pair of a series.
type Label struct{ Name, Value string }

// kind is a metric family's type, as the TYPE line shows it.
type kind uint8

const (
	kindCounter kind = iota + 1
	kindGauge
	kindHistogram
)

func (k kind) String() string {
	switch k {
	case kindCounter:
		return "counter"
	case kindGauge:
		return "gauge"
	case kindHistogram:
		return "histogram"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Registry holds metric families and serves them. Registration and
// gathering are safe for concurrent use; updating a metric never takes the
// registry's lock.
//
// A registration that is invalid returns a working but unexported metric
// and records the error, which Err and Serve report: callers register many
// metrics and check once.
type Registry struct {
	prom        *prometheus.Registry
	reg         prometheus.Registerer // prom, adding the constant labels
	constLabels map[string]bool

	mu       sync.Mutex
	families map[string]*family
	err      error
}

// family is what the first registration of a name fixed. client_golang
// checks help and label names too, but a type clash only at gather time:
// this catches all three at registration, with the name in the message.
type family struct {
	help       string
	kind       kind
	labelNames []string          // the series' own label names, sorted
	series     map[string]series // by rendered own labels
}

type series struct {
	value any // *Counter, *Gauge, *Histogram or nil for a func
}

// NewRegistry returns a registry with the Go runtime and process
// collectors, whose every series carries constLabels (say rank and host).
// Invalid constant labels are reported by Err.
func NewRegistry(constLabels ...Label) *Registry {
	r := &Registry{prom: prometheus.NewRegistry(), families: make(map[string]*family), constLabels: map[string]bool{}}
	consts := prometheus.Labels{}
	for _, l := range constLabels {
		if err := checkLabelName(l.Name); err != nil {
			r.fail(fmt.Errorf("constant label: %w", err))
			continue
		}
		if r.constLabels[l.Name] {
			r.fail(fmt.Errorf("%w: constant label %q given twice", ErrInvalid, l.Name))
			continue
		}
		r.constLabels[l.Name] = true
		consts[l.Name] = l.Value
	}
	r.reg = prometheus.WrapRegistererWith(consts, r.prom)
	r.collect("go collector", collectors.NewGoCollector())
	r.collect("process collector", collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Gatherer returns the registry as client_golang sees it (for
// testutil.GatherAndLint and friends).
func (r *Registry) Gatherer() prometheus.Gatherer { return r.prom }

// Handler serves the registry on GET and HEAD with client_golang's
// handler: text format, or OpenMetrics when the scraper asks for it.
func (r *Registry) Handler() http.Handler {
	h := promhttp.HandlerFor(r.prom, promhttp.HandlerOpts{EnableOpenMetrics: true})
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method "+req.Method+" not allowed", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, req)
	})
}

// Counter registers (or returns the already registered) counter name with
// these labels.
func (r *Registry) Counter(name, help string, labels ...Label) *Counter {
	v, _ := r.register(name, help, kindCounter, labels, func(o prometheus.Opts) (prometheus.Collector, any) {
		c := prometheus.NewCounter(prometheus.CounterOpts(o))
		return c, &Counter{c: c}
	}).(*Counter)
	if v == nil {
		v = &Counter{c: prometheus.NewCounter(prometheus.CounterOpts{Name: "unregistered"})}
	}
	return v
}

// Gauge registers (or returns the already registered) gauge name with
// these labels.
func (r *Registry) Gauge(name, help string, labels ...Label) *Gauge {
	v, _ := r.register(name, help, kindGauge, labels, func(o prometheus.Opts) (prometheus.Collector, any) {
		g := prometheus.NewGauge(prometheus.GaugeOpts(o))
		return g, &Gauge{g: g}
	}).(*Gauge)
	if v == nil {
		v = &Gauge{g: prometheus.NewGauge(prometheus.GaugeOpts{Name: "unregistered"})}
	}
	return v
}

// Histogram registers (or returns the already registered) histogram name
// with these labels and bucket upper bounds (ascending; +Inf is implied).
func (r *Registry) Histogram(name, help string, buckets []float64, labels ...Label) *Histogram {
	unregistered := func() *Histogram {
		return &Histogram{h: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "unregistered"})}
	}
	for i, b := range buckets {
		if math.IsNaN(b) || (i > 0 && b <= buckets[i-1]) { // client_golang would panic
			r.fail(fmt.Errorf("%w: histogram %s: buckets must ascend, got %v", ErrInvalid, name, buckets))
			return unregistered()
		}
	}
	for _, l := range labels {
		if l.Name == "le" {
			r.fail(fmt.Errorf("%w: histogram %s: label name \"le\" is reserved", ErrInvalid, name))
			return unregistered()
		}
	}
	v, _ := r.register(name, help, kindHistogram, labels, func(o prometheus.Opts) (prometheus.Collector, any) {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: o.Name, Help: o.Help, ConstLabels: o.ConstLabels, Buckets: buckets})
		return h, &Histogram{h: h}
	}).(*Histogram)
	if v == nil {
		return unregistered()
	}
	return v
}

// CounterFunc registers a counter whose value f returns at scrape time.
// f runs on the scraping goroutine: it must be quick and must not block
// (read atomics the loop updates).
func (r *Registry) CounterFunc(name, help string, f func() float64, labels ...Label) {
	r.registerFunc(name, help, kindCounter, f, labels)
}

// GaugeFunc registers a gauge whose value f returns at scrape time (same
// rules as CounterFunc).
func (r *Registry) GaugeFunc(name, help string, f func() float64, labels ...Label) {
	r.registerFunc(name, help, kindGauge, f, labels)
}

func (r *Registry) registerFunc(name, help string, k kind, f func() float64, labels []Label) {
	if f == nil {
		r.fail(fmt.Errorf("%w: %s: nil func", ErrInvalid, name))
		return
	}
	created := false
	r.register(name, help, k, labels, func(o prometheus.Opts) (prometheus.Collector, any) {
		created = true
		if k == kindCounter {
			return prometheus.NewCounterFunc(prometheus.CounterOpts(o), f), nil
		}
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts(o), f), nil
	})
	if !created && r.Err() == nil {
		r.fail(fmt.Errorf("%w: %s%s registered twice", ErrInvalid, name, formatLabels(labels)))
	}
}

// Err returns the first registration error, if any.
func (r *Registry) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *Registry) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failLocked(err)
}

func (r *Registry) failLocked(err error) {
	if r.err == nil {
		r.err = err
	}
}

// collect registers a collector of the registry itself.
func (r *Registry) collect(what string, c prometheus.Collector) {
	if err := r.reg.Register(c); err != nil {
		r.fail(fmt.Errorf("%w: %s: %w", ErrInvalid, what, err))
	}
}

// register finds the series, or makes it with newMetric and registers it;
// the value is nil if the registration is invalid.
func (r *Registry) register(name, help string, k kind, labels []Label, newMetric func(prometheus.Opts) (prometheus.Collector, any)) any {
	own, names, err := r.checkSeries(name, labels)
	if err != nil {
		r.fail(err)
		return nil
	}
	key := formatLabels(own)

	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.families[name]
	if f == nil {
		f = &family{help: help, kind: k, labelNames: names, series: map[string]series{}}
		r.families[name] = f
	}
	var bad string
	switch {
	case f.kind != k:
		bad = fmt.Sprintf("registered as a %s, now as a %s", f.kind, k)
	case f.help != help:
		bad = fmt.Sprintf("help %q differs from the first registration's %q", help, f.help)
	case !slices.Equal(f.labelNames, names):
		bad = fmt.Sprintf("label names %v differ from the first registration's %v", names, f.labelNames)
	}
	if bad != "" {
		r.failLocked(fmt.Errorf("%w: %s: %s", ErrInvalid, name, bad))
		return nil
	}
	if s, ok := f.series[key]; ok {
		return s.value
	}
	consts := prometheus.Labels{}
	for _, l := range own {
		consts[l.Name] = l.Value
	}
	c, v := newMetric(prometheus.Opts{Name: name, Help: help, ConstLabels: consts})
	if err := r.reg.Register(c); err != nil {
		r.failLocked(fmt.Errorf("%w: %s%s: %w", ErrInvalid, name, key, err))
		return nil
	}
	f.series[key] = series{value: v}
	return v
}

// checkSeries validates a registration's names and returns its own labels
// sorted by name, and their names.
func (r *Registry) checkSeries(name string, labels []Label) (own []Label, names []string, err error) {
	if err := checkMetricName(name); err != nil {
		return nil, nil, err
	}
	own = slices.Clone(labels)
	sort.Slice(own, func(i, j int) bool { return own[i].Name < own[j].Name })
	names = make([]string, len(own))
	for i, l := range own {
		if err := checkLabelName(l.Name); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		if i > 0 && l.Name == own[i-1].Name {
			return nil, nil, fmt.Errorf("%w: %s: label %q given twice", ErrInvalid, name, l.Name)
		}
		if r.constLabels[l.Name] {
			return nil, nil, fmt.Errorf("%w: %s: label %q is also a constant label of the registry", ErrInvalid, name, l.Name)
		}
		names[i] = l.Name
	}
	return own, names, nil
}

func formatLabels(ls []Label) string {
	if len(ls) == 0 {
		return ""
	}
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = fmt.Sprintf("%s=%q", l.Name, l.Value)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// checkMetricName keeps names to the classic character set, which every
// exposition format and every Prometheus version accepts unquoted.
func checkMetricName(n string) error {
	for i, c := range n {
		if c == '_' || c == ':' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || (i > 0 && '0' <= c && c <= '9') {
			continue
		}
		return fmt.Errorf("%w: metric name %q: character %q at %d (want [a-zA-Z_:][a-zA-Z0-9_:]*)", ErrInvalid, n, c, i)
	}
	if n == "" {
		return fmt.Errorf("%w: empty metric name", ErrInvalid)
	}
	return nil
}

func checkLabelName(n string) error {
	for i, c := range n {
		if c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || (i > 0 && '0' <= c && c <= '9') {
			continue
		}
		return fmt.Errorf("%w: label name %q: character %q at %d (want [a-zA-Z_][a-zA-Z0-9_]*)", ErrInvalid, n, c, i)
	}
	switch {
	case n == "":
		return fmt.Errorf("%w: empty label name", ErrInvalid)
	case strings.HasPrefix(n, "__"):
		return fmt.Errorf("%w: label name %q: names starting with __ are reserved", ErrInvalid, n)
	}
	return nil
}
