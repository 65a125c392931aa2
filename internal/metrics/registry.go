package metrics

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
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

// Registry holds metric families and renders them. Registration and
// rendering are safe for concurrent use; updating a metric never takes the
// registry's lock.
//
// A registration that is invalid returns a working but unexported metric
// and records the error, which Err and Serve report: callers register many
// metrics and check once.
type Registry struct {
	constLabels []Label

	mu       sync.RWMutex
	families map[string]*family
	err      error
}

type family struct {
	name, help string
	kind       kind
	labelNames []string // the series' own label names, sorted
	series     []*series
}

type series struct {
	own    []Label // the series' own labels, sorted by name
	labels string  // rendered const + own labels, without braces: a="x",b="y"
	value  any     // *Counter, *Gauge, *Histogram or func() float64
}

// NewRegistry returns a registry whose every series carries constLabels
// (say rank and host). Invalid constant labels are reported by Err.
func NewRegistry(constLabels ...Label) *Registry {
	r := &Registry{families: make(map[string]*family)}
	seen := map[string]bool{}
	for _, l := range constLabels {
		if err := checkLabelName(l.Name); err != nil {
			r.fail(fmt.Errorf("constant label: %w", err))
			continue
		}
		if seen[l.Name] {
			r.fail(fmt.Errorf("%w: constant label %q given twice", ErrInvalid, l.Name))
			continue
		}
		seen[l.Name] = true
		r.constLabels = append(r.constLabels, l)
	}
	return r
}

// Counter registers (or returns the already registered) counter name with
// these labels.
func (r *Registry) Counter(name, help string, labels ...Label) *Counter {
	v, _ := r.register(name, help, kindCounter, labels, func() any { return new(Counter) }).(*Counter)
	if v == nil {
		v = new(Counter)
	}
	return v
}

// Gauge registers (or returns the already registered) gauge name with
// these labels.
func (r *Registry) Gauge(name, help string, labels ...Label) *Gauge {
	v, _ := r.register(name, help, kindGauge, labels, func() any { return new(Gauge) }).(*Gauge)
	if v == nil {
		v = new(Gauge)
	}
	return v
}

// Histogram registers (or returns the already registered) histogram name
// with these labels and bucket upper bounds (ascending; +Inf is implied).
func (r *Registry) Histogram(name, help string, buckets []float64, labels ...Label) *Histogram {
	for i, b := range buckets {
		if math.IsNaN(b) || (i > 0 && b <= buckets[i-1]) {
			r.fail(fmt.Errorf("%w: histogram %s: buckets must ascend, got %v", ErrInvalid, name, buckets))
			return newHistogram(nil)
		}
	}
	for _, l := range labels {
		if l.Name == "le" {
			r.fail(fmt.Errorf("%w: histogram %s: label name \"le\" is reserved", ErrInvalid, name))
			return newHistogram(nil)
		}
	}
	v, _ := r.register(name, help, kindHistogram, labels, func() any { return newHistogram(buckets) }).(*Histogram)
	if v == nil {
		v = newHistogram(nil)
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
	v := r.register(name, help, k, labels, func() any { created = true; return f })
	if v != nil && !created {
		r.fail(fmt.Errorf("%w: %s%s registered twice", ErrInvalid, name, formatLabels(labels)))
	}
}

// Err returns the first registration error, if any.
func (r *Registry) Err() error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.err
}

func (r *Registry) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = err
	}
}

// register finds or creates the series; nil if the registration is invalid.
func (r *Registry) register(name, help string, k kind, labels []Label, newValue func() any) any {
	if err := checkMetricName(name); err != nil {
		r.fail(err)
		return nil
	}
	own := slices.Clone(labels)
	sort.Slice(own, func(i, j int) bool { return own[i].Name < own[j].Name })
	names := make([]string, len(own))
	for i, l := range own {
		if err := checkLabelName(l.Name); err != nil {
			r.fail(fmt.Errorf("%s: %w", name, err))
			return nil
		}
		if i > 0 && l.Name == own[i-1].Name {
			r.fail(fmt.Errorf("%w: %s: label %q given twice", ErrInvalid, name, l.Name))
			return nil
		}
		for _, c := range r.constLabels {
			if c.Name == l.Name {
				r.fail(fmt.Errorf("%w: %s: label %q is also a constant label of the registry", ErrInvalid, name, l.Name))
				return nil
			}
		}
		names[i] = l.Name
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.families[name]
	if f == nil {
		f = &family{name: name, help: help, kind: k, labelNames: names}
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
		if r.err == nil {
			r.err = fmt.Errorf("%w: %s: %s", ErrInvalid, name, bad)
		}
		return nil
	}
	for _, s := range f.series {
		if slices.Equal(s.own, own) {
			return s.value
		}
	}
	s := &series{own: own, labels: renderLabels(r.constLabels, own), value: newValue()}
	f.series = append(f.series, s)
	return s.value
}

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
