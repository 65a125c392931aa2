// Package metrics exposes a worker's counters to Prometheus through
// github.com/prometheus/client_golang.
//
// A Registry holds metric families (counter, gauge, histogram), each with a
// help text and one or more series told apart by labels; the registry's
// constant labels (rank, host) are added to every series, including those
// of the Go runtime and process collectors every registry carries
// (go_goroutines, go_memstats_*, process_cpu_seconds_total, ...).
// Two ways to feed it:
//
//   - values the loop updates: reg.Counter(name, help).Add(n),
//     reg.Gauge(...).Set(v), reg.Histogram(...).Observe(seconds). Updates
//     are atomic operations, never blocked by a scrape.
//   - values read at scrape time: reg.CounterFunc / reg.GaugeFunc with a
//     func that loads the loop's existing atomic counters. It runs on the
//     scraping goroutine, so it must not block.
//
// Registering the same name and labels again returns the same metric. An
// invalid registration (a name outside [a-zA-Z_:][a-zA-Z0-9_:]*, a name
// reused with another type, help or label names) records an error that
// Registry.Err and Serve report, so a caller registering many metrics
// checks once.
//
// Serve listens on an address and serves GET /metrics from one goroutine
// owned by the Server; Close stops it and waits for it. The handler is
// client_golang's: it answers in the text format 0.0.4, or in OpenMetrics
// 1.0 when the scraper's Accept header asks for it, gzip-compressed when
// the scraper accepts that.
//
//	reg := metrics.NewRegistry(metrics.Label{Name: "rank", Value: "0"}, metrics.Label{Name: "host", Value: host})
//	ops := reg.Counter("gorovod_ops_total", "Backend operations executed.")
//	reg.CounterFunc("gorovod_cache_hits_total", "Requests found in the response cache.",
//		func() float64 { return float64(stats().CacheHits) })
//	srv, err := metrics.Serve(ctx, "127.0.0.1:9090", reg)
//	...
//	ops.Inc()
//	defer srv.Close()
package metrics
