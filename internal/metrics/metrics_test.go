package metrics

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

const weirdHost = "node\"1\\a\nb" // a host label value that needs every escape

func testRegistry() (*Registry, *Counter, *Gauge, *Histogram) {
	reg := NewRegistry(Label{"rank", "3"}, Label{"host", weirdHost})
	ops := reg.Counter("gorovod_ops_total", "Backend operations.\nOne per fused op; path C:\\x.")
	ops.Add(41)
	ops.Inc()
	reg.Counter("gorovod_tensors_total", "Tensors by op.", Label{"op", "allreduce"}).Add(7)
	reg.Counter("gorovod_tensors_total", "Tensors by op.", Label{"op", "broadcast"}).Add(2)
	g := reg.Gauge("gorovod_fusion_threshold_bytes", "Current fusion threshold.")
	g.Set(64 << 20)
	h := reg.Histogram("gorovod_cycle_seconds", "Negotiation cycle time.", []float64{0.001, 0.01, 0.1})
	for _, v := range []float64{0.0005, 0.001, 0.002, 0.5} {
		h.Observe(v)
	}
	reg.CounterFunc("gorovod_cache_hits_total", "Cache hits.", func() float64 { return 12 })
	reg.GaugeFunc("gorovod_weird", "Special values.", func() float64 { return math.Inf(1) }, Label{"k", "inf"})
	reg.GaugeFunc("gorovod_weird", "Special values.", func() float64 { return 1.5e-7 }, Label{"k", "small"})
	return reg, ops, g, h
}

// families is a parsed scrape.
type families map[string]*dto.MetricFamily

// find returns the series of family name whose labels are exactly want.
func (fs families) find(t *testing.T, name string, want map[string]string) *dto.Metric {
	t.Helper()
	f := fs[name]
	if f == nil {
		t.Fatalf("no family %s", name)
	}
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return m
		}
	}
	t.Fatalf("family %s has no series %v: %v", name, want, f.GetMetric())
	return nil
}

// labels are the registry's constant labels plus extra name, value pairs.
func labels(extra ...string) map[string]string {
	m := map[string]string{"rank": "3", "host": weirdHost}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	return m
}

type scraper struct {
	t      *testing.T
	url    string
	client *http.Client
}

// get scrapes with the given Accept header and returns the response's
// format and its body (gunzipped if the server compressed it).
func (s scraper) get(accept string) (expfmt.Format, []byte) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("status %s", resp.Status)
	}
	var body io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			s.t.Fatal(err)
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		s.t.Fatal(err)
	}
	return expfmt.ResponseFormat(resp.Header), b
}

// text scrapes the text format and parses it with Prometheus' text parser.
func (s scraper) text() families {
	s.t.Helper()
	format, body := s.get("")
	if format.FormatType() != expfmt.TypeTextPlain {
		s.t.Fatalf("default format %q, want the text format", format)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fs, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		s.t.Fatalf("text parser: %v\n%s", err, body)
	}
	return fs
}

func TestScrapeOverHTTP(t *testing.T) {
	before := runtime.NumGoroutine()
	reg, ops, g, h := testRegistry()
	srv, err := Serve(context.Background(), "127.0.0.1:0", reg)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	s := scraper{t: t, url: srv.URL(), client: client}

	fs := s.text()
	for name, typ := range map[string]dto.MetricType{
		"gorovod_cycle_seconds":          dto.MetricType_HISTOGRAM,
		"gorovod_ops_total":              dto.MetricType_COUNTER,
		"gorovod_fusion_threshold_bytes": dto.MetricType_GAUGE,
		"gorovod_cache_hits_total":       dto.MetricType_COUNTER,
		"gorovod_weird":                  dto.MetricType_GAUGE,
	} {
		if f := fs[name]; f == nil || f.GetType() != typ {
			t.Errorf("%s: %v, want type %v", name, f, typ)
		}
	}
	if got := fs["gorovod_ops_total"].GetHelp(); got != "Backend operations.\nOne per fused op; path C:\\x." {
		t.Errorf("help %q", got)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"gorovod_ops_total", labels(), 42},
		{"gorovod_tensors_total", labels("op", "allreduce"), 7},
		{"gorovod_tensors_total", labels("op", "broadcast"), 2},
		{"gorovod_cache_hits_total", labels(), 12},
	} {
		if got := fs.find(t, c.name, c.labels).GetCounter().GetValue(); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := fs.find(t, "gorovod_fusion_threshold_bytes", labels()).GetGauge().GetValue(); got != 64<<20 {
		t.Errorf("gauge = %v", got)
	}
	if got := fs.find(t, "gorovod_weird", labels("k", "inf")).GetGauge().GetValue(); !math.IsInf(got, 1) {
		t.Errorf("+Inf gauge = %v", got)
	}
	if got := fs.find(t, "gorovod_weird", labels("k", "small")).GetGauge().GetValue(); got != 1.5e-7 {
		t.Errorf("small gauge = %v", got)
	}
	checkHistogram(t, fs.find(t, "gorovod_cycle_seconds", labels()).GetHistogram(), []uint64{2, 3, 3}, 4, 0.5035)

	// The Go runtime and process collectors, with the constant labels.
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total", "process_resident_memory_bytes"} {
		fs.find(t, name, labels())
	}

	// Updates show in the next scrape.
	ops.Add(8)
	g.Add(-1)
	h.ObserveDuration(2 * time.Millisecond)
	fs = s.text()
	if got := fs.find(t, "gorovod_ops_total", labels()).GetCounter().GetValue(); got != 50 {
		t.Errorf("ops after Add: %v", got)
	}
	if got := fs.find(t, "gorovod_fusion_threshold_bytes", labels()).GetGauge().GetValue(); got != 64<<20-1 {
		t.Errorf("gauge after Add: %v", got)
	}
	checkHistogram(t, fs.find(t, "gorovod_cycle_seconds", labels()).GetHistogram(), []uint64{2, 4, 4}, 5, 0.5055)
	if ops.Value() != 50 || g.Value() != 64<<20-1 {
		t.Errorf("Value() = %d, %v", ops.Value(), g.Value())
	}

	checkMethodsAndPaths(t, client, srv)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := client.Get(srv.URL()); err == nil {
		t.Error("scrape after Close succeeded")
	}
	client.CloseIdleConnections()
	checkNoLeak(t, before)
}

func checkHistogram(t *testing.T, h *dto.Histogram, cumulative []uint64, count uint64, sum float64) {
	t.Helper()
	var got []uint64
	for _, b := range h.GetBucket() {
		if !math.IsInf(b.GetUpperBound(), 1) {
			got = append(got, b.GetCumulativeCount())
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(cumulative) || h.GetSampleCount() != count || math.Abs(h.GetSampleSum()-sum) > 1e-12 {
		t.Errorf("histogram buckets %v count %d sum %v, want %v %d %v", got, h.GetSampleCount(), h.GetSampleSum(), cumulative, count, sum)
	}
}

func checkMethodsAndPaths(t *testing.T, client *http.Client, srv *Server) {
	t.Helper()
	resp, err := client.Post(srv.URL(), "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s", resp.Status)
	}
	resp, err = client.Get("http://" + srv.Addr() + "/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /other: %s", resp.Status)
	}
}

// A scraper asking for OpenMetrics gets it, with the same values.
func TestOpenMetricsNegotiation(t *testing.T) {
	reg, _, _, _ := testRegistry()
	srv, err := Serve(context.Background(), "127.0.0.1:0", reg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	s := scraper{t: t, url: srv.URL(), client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}}
	format, body := s.get("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
	if format.FormatType() != expfmt.TypeOpenMetrics {
		t.Fatalf("format %q, want OpenMetrics", format)
	}
	if !strings.HasSuffix(string(body), "# EOF\n") {
		t.Errorf("OpenMetrics body does not end with # EOF:\n%s", body)
	}
	// The Go collector's gauge go_memstats_alloc_bytes and counter
	// go_memstats_alloc_bytes_total both become family go_memstats_alloc_bytes
	// in OpenMetrics 1.0, which common's decoder refuses: a clash inside the
	// Go collector, not of this package's names; leave those two out.
	var kept []string
	for _, line := range strings.SplitAfter(string(body), "\n") {
		if !strings.Contains(line, "go_memstats_alloc_bytes") {
			kept = append(kept, line)
		}
	}
	dec := expfmt.NewDecoder(strings.NewReader(strings.Join(kept, "")), format)
	fs := families{}
	for {
		var f dto.MetricFamily
		err := dec.Decode(&f)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("OpenMetrics decoder: %v\n%s", err, body)
		}
		fs[f.GetName()] = &f
	}
	// OpenMetrics names a counter family without its _total suffix.
	ops := fs["gorovod_ops"]
	if ops == nil {
		ops = fs["gorovod_ops_total"]
	}
	if ops == nil || ops.GetType() != dto.MetricType_COUNTER {
		t.Fatalf("no gorovod_ops counter in %v", fs)
	}
	if got := fs.find(t, ops.GetName(), labels()).GetCounter().GetValue(); got != 42 {
		t.Errorf("ops = %v over OpenMetrics", got)
	}
	checkHistogram(t, fs.find(t, "gorovod_cycle_seconds", labels()).GetHistogram(), []uint64{2, 3, 3}, 4, 0.5035)
}

// client_golang's linter finds nothing to say about the registry,
// including the runtime and process collectors.
func TestLint(t *testing.T) {
	reg, _, _, _ := testRegistry()
	reg.Histogram("gorovod_negotiation_seconds", "Duration of one negotiation cycle.", LatencyBuckets()).Observe(0.001)
	problems, err := testutil.GatherAndLint(reg.Gatherer())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// checkNoLeak waits, boundedly, for the goroutine count to come back.
func checkNoLeak(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond) // polling, not synchronisation
	}
}

// The loop updating while scrapes run: no race, exact final values.
func TestConcurrentUpdatesAndScrapes(t *testing.T) {
	reg := NewRegistry(Label{"rank", "0"})
	c := reg.Counter("c_total", "c")
	h := reg.Histogram("h_seconds", "h", LatencyBuckets())
	g := reg.Gauge("g", "g")
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				c.Inc()
				h.Observe(1e-3)
				g.Add(0.5)
				reg.Counter("lazy_total", "lazy", Label{"w", fmt.Sprint(i % 3)}).Inc()
			}
		}()
	}
	for i := 0; i < 20; i++ {
		if _, err := reg.Gatherer().Gather(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	mfs, err := reg.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	fs := families{}
	for _, f := range mfs {
		fs[f.GetName()] = f
	}
	rank0 := map[string]string{"rank": "0"}
	if got := fs.find(t, "c_total", rank0).GetCounter().GetValue(); got != 4000 {
		t.Errorf("c_total = %v", got)
	}
	if got := fs.find(t, "h_seconds", rank0).GetHistogram().GetSampleCount(); got != 4000 {
		t.Errorf("h_seconds count = %v", got)
	}
	if got := fs.find(t, "g", rank0).GetGauge().GetValue(); got != 2000 {
		t.Errorf("g = %v", got)
	}
	if got := fs.find(t, "lazy_total", map[string]string{"rank": "0", "w": "0"}).GetCounter().GetValue(); got != 1336 {
		t.Errorf("lazy_total{w=0} = %v", got)
	}
	if err := reg.Err(); err != nil {
		t.Error(err)
	}
}

func TestIdempotentRegistration(t *testing.T) {
	reg := NewRegistry()
	a := reg.Counter("x_total", "x", Label{"b", "1"}, Label{"a", "2"})
	b := reg.Counter("x_total", "x", Label{"a", "2"}, Label{"b", "1"}) // label order does not matter
	if a != b {
		t.Error("re-registration made a new counter")
	}
	h1 := reg.Histogram("h", "h", []float64{1})
	if h2 := reg.Histogram("h", "h", []float64{1}); h1 != h2 {
		t.Error("re-registration made a new histogram")
	}
	if reg.Err() != nil {
		t.Error(reg.Err())
	}
}

func TestRegistrationErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(r *Registry)
		want string
	}{
		{"bad metric name", func(r *Registry) { r.Counter("9ops", "h") }, `metric name "9ops"`},
		{"bad metric char", func(r *Registry) { r.Gauge("ops-total", "h") }, `metric name "ops-total"`},
		{"empty name", func(r *Registry) { r.Gauge("", "h") }, "empty metric name"},
		{"bad label", func(r *Registry) { r.Counter("a", "h", Label{"x-y", "1"}) }, `label name "x-y"`},
		{"reserved label", func(r *Registry) { r.Counter("a", "h", Label{"__x", "1"}) }, "reserved"},
		{"duplicate label", func(r *Registry) { r.Counter("a", "h", Label{"x", "1"}, Label{"x", "2"}) }, `label "x" given twice`},
		{"const label clash", func(r *Registry) { r.Counter("a", "h", Label{"rank", "1"}) }, `"rank" is also a constant label`},
		{"kind clash", func(r *Registry) { r.Counter("a", "h"); r.Gauge("a", "h") }, "registered as a counter, now as a gauge"},
		{"help clash", func(r *Registry) { r.Counter("a", "h"); r.Counter("a", "other") }, `help "other" differs`},
		{"label names clash", func(r *Registry) { r.Counter("a", "h", Label{"x", "1"}); r.Counter("a", "h", Label{"y", "1"}) }, "label names [y] differ"},
		{"collector name clash", func(r *Registry) { r.Gauge("go_goroutines", "h") }, "go_goroutines"},
		{"le on histogram", func(r *Registry) { r.Histogram("h", "h", nil, Label{"le", "1"}) }, `"le" is reserved`},
		{"unsorted buckets", func(r *Registry) { r.Histogram("h", "h", []float64{2, 1}) }, "buckets must ascend"},
		{"func twice", func(r *Registry) {
			r.GaugeFunc("f", "h", func() float64 { return 1 })
			r.GaugeFunc("f", "h", func() float64 { return 2 })
		}, "f registered twice"},
		{"nil func", func(r *Registry) { r.CounterFunc("f", "h", nil) }, "nil func"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := NewRegistry(Label{"rank", "0"})
			tc.do(reg)
			err := reg.Err()
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Err() = %v, want ErrInvalid mentioning %q", err, tc.want)
			}
			_, err = Serve(context.Background(), "127.0.0.1:0", reg)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "127.0.0.1:0") {
				t.Errorf("Serve: %v, want ErrInvalid naming the address", err)
			}
		})
	}
	if err := NewRegistry(Label{"bad name", "x"}).Err(); err == nil || !strings.Contains(err.Error(), "constant label") {
		t.Errorf("bad constant label: %v", err)
	}
	if err := NewRegistry(Label{"a", "x"}, Label{"a", "y"}).Err(); err == nil {
		t.Error("duplicate constant label accepted")
	}
}

func TestServeBadAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, addr := range []string{"not-an-address", "127.0.0.1:99999", ln.Addr().String()} {
		_, err := Serve(context.Background(), addr, NewRegistry())
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", addr)) {
			t.Errorf("Serve(%q) = %v, want an error naming the address", addr, err)
		}
	}
	if _, err := Serve(context.Background(), "127.0.0.1:0", nil); err == nil {
		t.Error("nil registry accepted")
	}
}

func TestNilMetrics(t *testing.T) {
	var c *Counter
	var g *Gauge
	var h *Histogram
	var s *Server
	c.Add(1)
	c.Inc()
	g.Set(1)
	g.Add(1)
	h.Observe(1)
	h.ObserveDuration(time.Second)
	if c.Value() != 0 || g.Value() != 0 || s.Close() != nil {
		t.Error("nil metrics are not no-ops")
	}
}

func TestExponentialBuckets(t *testing.T) {
	if got := ExponentialBuckets(1, 2, 4); fmt.Sprint(got) != "[1 2 4 8]" {
		t.Errorf("got %v", got)
	}
	if ExponentialBuckets(0, 2, 4) != nil || ExponentialBuckets(1, 1, 4) != nil || ExponentialBuckets(1, 2, 0) != nil {
		t.Error("invalid arguments accepted")
	}
}

func BenchmarkCounterInc(b *testing.B) {
	c := NewRegistry().Counter("c_total", "c")
	for i := 0; i < b.N; i++ {
		c.Inc()
	}
}

func BenchmarkHistogramObserve(b *testing.B) {
	h := NewRegistry().Histogram("h_seconds", "h", LatencyBuckets())
	for i := 0; i < b.N; i++ {
		h.Observe(0.003)
	}
}

func BenchmarkGather(b *testing.B) {
	reg, _, _, _ := testRegistry()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_, _ = reg.Gatherer().Gather()
	}
}
