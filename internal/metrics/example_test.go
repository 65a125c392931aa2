package metrics_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorovod/gorovod/internal/metrics"
)

func Example() {
	var cycles atomic.Int64 // a counter the loop already keeps

	reg := metrics.NewRegistry(metrics.Label{Name: "rank", Value: "0"})
	reg.CounterFunc("gorovod_cycles_total", "Negotiation cycles run.",
		func() float64 { return float64(cycles.Load()) })
	ops := reg.Counter("gorovod_ops_total", "Backend operations executed.")
	cycleTime := reg.Histogram("gorovod_cycle_seconds", "Negotiation cycle time.", []float64{0.001, 0.01})

	srv, err := metrics.Serve(context.Background(), "127.0.0.1:0", reg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	// The loop:
	cycles.Add(1)
	cycleTime.ObserveDuration(2 * time.Millisecond)
	ops.Inc()

	resp, err := http.Get(srv.URL())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	// Print this example's own families; the Go runtime and process
	// collectors (go_*, process_*) follow them.
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "gorovod_") {
			fmt.Println(sc.Text())
		}
	}
	// Output:
	// # HELP gorovod_cycle_seconds Negotiation cycle time.
	// # TYPE gorovod_cycle_seconds histogram
	// gorovod_cycle_seconds_bucket{rank="0",le="0.001"} 0
	// gorovod_cycle_seconds_bucket{rank="0",le="0.01"} 1
	// gorovod_cycle_seconds_bucket{rank="0",le="+Inf"} 1
	// gorovod_cycle_seconds_sum{rank="0"} 0.002
	// gorovod_cycle_seconds_count{rank="0"} 1
	// # HELP gorovod_cycles_total Negotiation cycles run.
	// # TYPE gorovod_cycles_total counter
	// gorovod_cycles_total{rank="0"} 1
	// # HELP gorovod_ops_total Backend operations executed.
	// # TYPE gorovod_ops_total counter
	// gorovod_ops_total{rank="0"} 1
}
