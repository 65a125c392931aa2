// Package metrics exposes a worker's counters to Prometheus in the text
// exposition format (version 0.0.4), without the Prometheus client library.
//
// A Registry holds metric families (counter, gauge, histogram), each with
// HELP and TYPE lines and one or more series told apart by labels; the
// registry's constant labels (rank, host) are added to every series.
// Two ways to feed it:
//
//   - values the loop updates: reg.Counter(name, help).Add(n),
//     reg.Gauge(...).Set(v), reg.Histogram(...).Observe(seconds). Updates
//     are single atomic operations, never blocked by a scrape.
//   - values read at scrape time: reg.CounterFunc / reg.GaugeFunc with a
//     func that loads the loop's existing atomic counters. It runs on the
//     scraping goroutine, so it must not block.
//
// Registering the same name and labels again returns the same metric. An
// invalid registration (bad name, a name reused with another type, help or
// label names) records an error that Registry.Err and Serve report, so a
// caller registering many metrics checks once.
//
// Serve listens on an address and serves GET /metrics from one goroutine
// owned by the Server; Close stops it and waits for it.
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
