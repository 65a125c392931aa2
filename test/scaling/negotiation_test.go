package scaling

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/coordinator"
	"github.com/gorovod/gorovod/coordinator/coordinatortest"
	"github.com/gorovod/gorovod/internal/tensor"
)

// cycleCost is what one negotiation cycle cost, averaged over the measured
// cycles.
type cycleCost struct {
	ranks, tensors        int
	cached                bool
	rootWork, rankWork    time.Duration // rank 0's own work; the median other rank's
	rootIn, rootOut       int64         // bytes through rank 0
	bitBytes              int64         // per rank
	gathers               float64       // request gathers per cycle
	responses, responses0 int
}

// measure runs warm-up cycles then cycles cycles in which every rank
// submits the same tensors 4 KiB float32 allreduces, with the response
// cache on (cached: steady state, the bit-vector fast path) or off (every
// cycle gathers requests at rank 0 and broadcasts responses).
func measure(t testing.TB, n, tensors, cycles int, cached bool) cycleCost {
	ctrls := make([]*coordinator.Controller, n)
	for r := range ctrls {
		cfg := coordinator.DefaultConfig(r, n)
		cfg.StallWarning = 0
		if !cached {
			cfg.CacheCapacity = 0
		}
		c, err := coordinator.NewController(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctrls[r] = c
	}
	reqs := make([]coordinator.Request, tensors)
	for i := range reqs {
		reqs[i] = coordinator.Request{Name: fmt.Sprintf("grad/%d", i), Op: coordinator.OpAllreduce, DType: tensor.Float32,
			Shape: []int64{1024}, ReduceOp: tensor.Sum, Device: coordinator.CPU, Prescale: 1, Postscale: 1}
	}
	l := coordinatortest.NewLockstep(n)
	work := make([]time.Duration, n)
	var responses int
	run := func(timed bool) {
		var wg sync.WaitGroup
		for r := range ctrls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				rl, err := ctrls[r].Cycle(context.Background(), l.Rank(r), time.Unix(0, 0), reqs, false)
				if err != nil {
					t.Error(err)
					return
				}
				if timed {
					work[r] += time.Since(start)
				}
				if r == 0 {
					responses = len(rl.Responses)
				}
			}()
		}
		wg.Wait()
	}
	run(false)                         // the first cycle fills the response cache
	l = coordinatortest.NewLockstep(n) // count the measured cycles only
	for range cycles {
		run(true)
	}
	c := cycleCost{ranks: n, tensors: tensors, cached: cached, responses: responses}
	own := make([]time.Duration, n)
	for r := range own {
		own[r] = (work[r] - l.Waited[r]) / time.Duration(cycles)
	}
	c.rootWork = own[0]
	others := slices.Clone(own[1:])
	slices.Sort(others)
	c.rankWork = others[len(others)/2]
	c.rootIn, c.rootOut = l.RootIn/int64(cycles), l.RootOut/int64(cycles)
	c.bitBytes = l.BitBytes / int64(cycles)
	c.gathers = float64(l.Gathers) / float64(cycles)
	return c
}

// TestSteadyStateNeedsNoRequests: with every tensor cached, cycles go by
// the bit-vector exchange alone; nothing is gathered at rank 0, whatever
// the number of ranks; without the cache every cycle gathers.
func TestSteadyStateNeedsNoRequests(t *testing.T) {
	for _, n := range []int{8, 64} {
		c := measure(t, n, 200, 3, true)
		if c.gathers != 0 || c.rootIn != 0 || c.responses != 1 {
			t.Errorf("%d ranks, cached: %.1f gathers, %d bytes into rank 0, %d responses per cycle; want 0, 0, 1 fused", n, c.gathers, c.rootIn, c.responses)
		}
		m := measure(t, n, 200, 2, false)
		if m.gathers != 1 || m.rootIn == 0 {
			t.Errorf("%d ranks, no cache: %.1f gathers, %d bytes into rank 0 per cycle; want 1 and some", n, m.gathers, m.rootIn)
		}
	}
}

// TestNegotiationTable prints the table of docs/scaling.md (with
// GOROVOD_SCALING=1; 1024 ranks take a while on a small machine).
func TestNegotiationTable(t *testing.T) {
	if os.Getenv("GOROVOD_SCALING") == "" {
		t.Skip("set GOROVOD_SCALING=1 to print the table")
	}
	t.Logf("%6s %7s %8s %12s %12s %14s %14s %10s", "ranks", "tensors", "cache", "rank0 us", "rank us", "rank0 in B", "rank0 out B", "bits B")
	for _, cached := range []bool{true, false} {
		for _, n := range []int{8, 64, 256, 1024} {
			cycles := max(3, 2048/n)
			c := measure(t, n, 200, cycles, cached)
			mode := "hit"
			if !cached {
				mode = "miss"
			}
			t.Logf("%6d %7d %8s %12.1f %12.1f %14d %14d %10d", n, c.tensors, mode,
				float64(c.rootWork.Nanoseconds())/1e3, float64(c.rankWork.Nanoseconds())/1e3, c.rootIn, c.rootOut, c.bitBytes)
		}
	}
}
