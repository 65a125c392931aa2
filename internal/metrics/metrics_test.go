package metrics

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func testRegistry() (*Registry, *Counter, *Gauge, *Histogram) {
	reg := NewRegistry(Label{"rank", "3"}, Label{"host", "node\"1\\a\nb"})
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

const wantText = `# HELP gorovod_cache_hits_total Cache hits.
# TYPE gorovod_cache_hits_total counter
gorovod_cache_hits_total{rank="3",host="node\"1\\a\nb"} 12
# HELP gorovod_cycle_seconds Negotiation cycle time.
# TYPE gorovod_cycle_seconds histogram
gorovod_cycle_seconds_bucket{rank="3",host="node\"1\\a\nb",le="0.001"} 2
gorovod_cycle_seconds_bucket{rank="3",host="node\"1\\a\nb",le="0.01"} 3
gorovod_cycle_seconds_bucket{rank="3",host="node\"1\\a\nb",le="0.1"} 3
gorovod_cycle_seconds_bucket{rank="3",host="node\"1\\a\nb",le="+Inf"} 4
gorovod_cycle_seconds_sum{rank="3",host="node\"1\\a\nb"} 0.5035
gorovod_cycle_seconds_count{rank="3",host="node\"1\\a\nb"} 4
# HELP gorovod_fusion_threshold_bytes Current fusion threshold.
# TYPE gorovod_fusion_threshold_bytes gauge
gorovod_fusion_threshold_bytes{rank="3",host="node\"1\\a\nb"} 6.7108864e+07
# HELP gorovod_ops_total Backend operations.\nOne per fused op; path C:\\x.
# TYPE gorovod_ops_total counter
gorovod_ops_total{rank="3",host="node\"1\\a\nb"} 42
# HELP gorovod_tensors_total Tensors by op.
# TYPE gorovod_tensors_total counter
gorovod_tensors_total{rank="3",host="node\"1\\a\nb",op="allreduce"} 7
gorovod_tensors_total{rank="3",host="node\"1\\a\nb",op="broadcast"} 2
# HELP gorovod_weird Special values.
# TYPE gorovod_weird gauge
gorovod_weird{rank="3",host="node\"1\\a\nb",k="inf"} +Inf
gorovod_weird{rank="3",host="node\"1\\a\nb",k="small"} 1.5e-07
`

func TestRender(t *testing.T) {
	reg, _, _, _ := testRegistry()
	if err := reg.Err(); err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	if _, err := reg.WriteTo(&sb); err != nil {
		t.Fatal(err)
	}
	if sb.String() != wantText {
		t.Errorf("got:\n%s\nwant:\n%s", sb.String(), wantText)
	}
}

// scraped is a parsed exposition: families' help and type, and samples by
// "name{label=value,...}" with labels in order of appearance, values unescaped.
type scraped struct {
	help, typ map[string]string
	samples   map[string]string
}

func parseText(t *testing.T, r io.Reader) scraped {
	t.Helper()
	s := scraped{help: map[string]string{}, typ: map[string]string{}, samples: map[string]string{}}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# HELP "):
			name, help, _ := strings.Cut(line[len("# HELP "):], " ")
			s.help[name] = strings.NewReplacer(`\\`, `\`, `\n`, "\n").Replace(help)
		case strings.HasPrefix(line, "# TYPE "):
			name, typ, _ := strings.Cut(line[len("# TYPE "):], " ")
			s.typ[name] = typ
		default:
			key, value := parseSample(t, line)
			if _, err := strconv.ParseFloat(value, 64); err != nil {
				t.Errorf("sample %q: value %q: %v", line, value, err)
			}
			s.samples[key] = value
		}
	}
	return s
}

// parseSample decodes one sample line, unescaping label values.
func parseSample(t *testing.T, line string) (key, value string) {
	t.Helper()
	i := strings.IndexAny(line, "{ ")
	if i < 0 {
		t.Fatalf("bad sample %q", line)
	}
	key, rest := line[:i], line[i:]
	if rest[0] == '{' {
		var labels []string
		rest = rest[1:]
		for rest[0] != '}' {
			name, after, ok := strings.Cut(rest, `="`)
			if !ok {
				t.Fatalf("bad labels in %q", line)
			}
			var val strings.Builder
			j := 0
			for ; after[j] != '"'; j++ {
				if after[j] == '\\' {
					j++
					switch after[j] {
					case 'n':
						val.WriteByte('\n')
					case '\\', '"':
						val.WriteByte(after[j])
					default:
						t.Fatalf("bad escape in %q", line)
					}
					continue
				}
				val.WriteByte(after[j])
			}
			labels = append(labels, name+"="+val.String())
			rest = strings.TrimPrefix(after[j+1:], ",")
		}
		key += "{" + strings.Join(labels, ",") + "}"
		rest = rest[1:]
	}
	return key, strings.TrimPrefix(rest, " ")
}

func TestScrapeOverHTTP(t *testing.T) {
	before := runtime.NumGoroutine()
	reg, ops, g, h := testRegistry()
	srv, err := Serve(context.Background(), "127.0.0.1:0", reg)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	scrape := func() scraped {
		t.Helper()
		resp, err := client.Get(srv.URL())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ContentType {
			t.Fatalf("status %s, content type %q", resp.Status, resp.Header.Get("Content-Type"))
		}
		return parseText(t, resp.Body)
	}
	const host = "host=node\"1\\a\nb"
	s := scrape()
	if s.typ["gorovod_cycle_seconds"] != "histogram" || s.typ["gorovod_ops_total"] != "counter" || s.typ["gorovod_fusion_threshold_bytes"] != "gauge" {
		t.Errorf("types %v", s.typ)
	}
	if s.help["gorovod_ops_total"] != "Backend operations.\nOne per fused op; path C:\\x." {
		t.Errorf("help %q", s.help["gorovod_ops_total"])
	}
	for key, want := range map[string]string{
		"gorovod_ops_total{rank=3," + host + "}":                     "42",
		"gorovod_tensors_total{rank=3," + host + ",op=broadcast}":    "2",
		"gorovod_cycle_seconds_bucket{rank=3," + host + ",le=+Inf}":  "4",
		"gorovod_cycle_seconds_count{rank=3," + host + "}":           "4",
		"gorovod_fusion_threshold_bytes{rank=3," + host + "}":        "6.7108864e+07",
		"gorovod_weird{rank=3," + host + ",k=inf}":                   "+Inf",
		"gorovod_cache_hits_total{rank=3," + host + "}":              "12",
		"gorovod_cycle_seconds_bucket{rank=3," + host + ",le=0.001}": "2",
		"gorovod_tensors_total{rank=3," + host + ",op=allreduce}":    "7",
		"gorovod_cycle_seconds_sum{rank=3," + host + "}":             "0.5035",
		"gorovod_weird{rank=3," + host + ",k=small}":                 "1.5e-07",
		"gorovod_cycle_seconds_bucket{rank=3," + host + ",le=0.01}":  "3",
		"gorovod_cycle_seconds_bucket{rank=3," + host + ",le=0.1}":   "3",
	} {
		if got, ok := s.samples[key]; !ok || got != want {
			t.Errorf("%s = %q (present %v), want %q", key, got, ok, want)
		}
	}
	if len(s.samples) != 13 {
		t.Errorf("%d samples, want 13: %v", len(s.samples), s.samples)
	}

	// Updates show in the next scrape.
	ops.Add(8)
	g.Add(-1)
	h.ObserveDuration(2 * time.Millisecond)
	s = scrape()
	if got := s.samples["gorovod_ops_total{rank=3,"+host+"}"]; got != "50" {
		t.Errorf("ops after Add: %s", got)
	}
	if got := s.samples["gorovod_fusion_threshold_bytes{rank=3,"+host+"}"]; got != "6.7108863e+07" {
		t.Errorf("gauge after Add: %s", got)
	}
	if got := s.samples["gorovod_cycle_seconds_bucket{rank=3,"+host+",le=0.01}"]; got != "4" {
		t.Errorf("bucket after Observe: %s", got)
	}

	// Other methods and paths.
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
				reg.Counter("lazy_total", "lazy", Label{"w", strconv.Itoa(i % 3)}).Inc()
			}
		}()
	}
	for i := 0; i < 20; i++ {
		var sb strings.Builder
		_, _ = reg.WriteTo(&sb)
		parseText(t, strings.NewReader(sb.String()))
	}
	wg.Wait()
	var sb strings.Builder
	_, _ = reg.WriteTo(&sb)
	s := parseText(t, strings.NewReader(sb.String()))
	for key, want := range map[string]string{
		"c_total{rank=0}":                  "4000",
		"h_seconds_count{rank=0}":          "4000",
		"h_seconds_sum{rank=0}":            "", // float rounding: only presence
		"g{rank=0}":                        "2000",
		"lazy_total{rank=0,w=0}":           "1336",
		"h_seconds_bucket{rank=0,le=+Inf}": "4000",
	} {
		got, ok := s.samples[key]
		if !ok || (want != "" && got != want) {
			t.Errorf("%s = %q (present %v), want %q", key, got, ok, want)
		}
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
	var sb strings.Builder
	_, _ = NewRegistry().WriteTo(&sb)
	if sb.Len() != 0 {
		t.Errorf("empty registry renders %q", sb.String())
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

func BenchmarkScrape(b *testing.B) {
	reg, _, _, _ := testRegistry()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_, _ = reg.WriteTo(io.Discard)
	}
}
