package scaling

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"runtime"
	"runtime/debug"
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
	ranks, tensors     int
	cached, flat       bool
	rootWork, rankWork time.Duration // rank 0's own work; the median other rank's
	critical           time.Duration // per segment between exchanges, the longest rank's own work, summed (median cycle)
	hops               float64       // network hops on the cycle's critical path
	hopBytes           float64       // the largest message of each hop, summed
	rootIn, rootOut    int64         // bytes through rank 0
	bitBytes           int64         // per rank
	gathers            float64       // request gathers per cycle
	responses          int
	soloRoot, soloRank time.Duration // steady state: own work per cycle with a warm state (solo)
}

// cycleTime is the cycle's critical path over links like l: the ranks'
// own work, segment by segment, plus the exchange's hops.
func (c cycleCost) cycleTime(l Link) time.Duration {
	return c.critical + time.Duration(c.hops*float64(l.Alpha)) + time.Duration(c.hopBytes/l.Beta*1e9)
}

// measure runs a warm-up cycle then cycles cycles in which every rank
// submits the same tensors 4 KiB float32 allreduces, with the response
// cache on (cached: steady state, the bit-vector fast path) or off (every
// cycle sends requests to rank 0 and responses back: up and down a tree,
// or with flat gathered at rank 0 and sent to every rank). The ranks run
// one at a time (coordinatortest.NewSerialLockstep), so each rank's own
// time is its work alone.
func measure(t testing.TB, n, tensors, cycles int, cached, flat bool) cycleCost {
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
	var responses int
	run := func(l *coordinatortest.Lockstep) {
		var wg sync.WaitGroup
		for r := range ctrls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l.Start(r)
				defer l.Done(r)
				rl, err := ctrls[r].Cycle(context.Background(), l.Rank(r), time.Unix(0, 0), reqs, false)
				if err != nil {
					t.Error(err)
					return
				}
				if r == 0 {
					responses = len(rl.Responses)
				}
			}()
		}
		wg.Wait()
	}
	warm := coordinatortest.NewSerialLockstep(n)
	warm.Flat = flat
	run(warm) // the first cycle fills the response cache
	l := coordinatortest.NewSerialLockstep(n)
	l.Flat = flat
	// No collection during the measured cycles: a collection's pauses and
	// assists would land on whichever rank holds the turn, and its work
	// scales with every rank's heap in this process, not with one rank's.
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for range cycles {
		run(l)
	}
	c := summarize(l, cycleCost{ranks: n, tensors: tensors, cached: cached, flat: flat, responses: responses}, cycles)
	if cached {
		c.soloRoot = solo(t, ctrls[0], identity{0, n}, reqs, 200)
		c.soloRank = solo(t, ctrls[n-1], identity{n - 1, n}, reqs, 200)
	}
	return c
}

// solo is a rank's own work per steady-state cycle with its state warm, as
// on a machine of its own: the controller, taken from the world after the
// measured cycles, runs cycles back to back on one goroutine. Every rank
// submits the same cached tensors, so the bit-vector AND of all ranks is
// this rank's own vector and the exchange can return it unchanged.
func solo(t testing.TB, c *coordinator.Controller, x identity, reqs []coordinator.Request, cycles int) time.Duration {
	var total time.Duration
	for i := range cycles + 1 {
		start := time.Now()
		rl, err := c.Cycle(context.Background(), x, time.Unix(0, 0), reqs, false)
		if err != nil || len(rl.Responses) != 1 {
			t.Fatalf("solo cycle: %v, %d responses", err, len(rl.Responses))
		}
		if i > 0 { // the first warms the rank's state
			total += time.Since(start)
		}
	}
	return total / time.Duration(cycles)
}

// identity is the exchange of a world whose ranks all send the same bit
// vector: the AND is the vector itself. The steady state needs nothing
// else; a request gather means the cycle was not steady.
type identity struct{ rank, size int }

func (x identity) Rank() int { return x.rank }
func (x identity) Size() int { return x.size }
func (x identity) AllreduceBits(context.Context, []uint64, tensor.ReduceOp) error {
	return nil
}
func (x identity) GatherToRoot(context.Context, []byte) ([][]byte, error) {
	return nil, errors.New("solo: a steady-state cycle gathered requests")
}
func (x identity) BroadcastFromRoot(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("solo: a steady-state cycle broadcast responses")
}

// summarize turns the exchange's counters into per-cycle costs.
func summarize(l *coordinatortest.Lockstep, c cycleCost, cycles int) cycleCost {
	per := func(d time.Duration) time.Duration { return d / time.Duration(cycles) }
	c.rootWork = per(l.Own[0])
	others := slices.Clone(l.Own[1:])
	slices.Sort(others)
	c.rankWork = per(others[len(others)/2])
	// The median cycle: the longest rank of a segment is the one a
	// preemption (another process on the machine) hit, if any.
	crit := slices.Clone(l.CycleCritical)
	slices.Sort(crit)
	c.critical = crit[len(crit)/2]
	c.hops = float64(l.Hops) / float64(cycles)
	c.hopBytes = float64(l.HopBytes) / float64(cycles)
	c.rootIn, c.rootOut = l.RootIn/int64(cycles), l.RootOut/int64(cycles)
	c.bitBytes = l.BitBytes / int64(cycles)
	c.gathers = float64(l.Gathers) / float64(cycles)
	return c
}

// TestSteadyStateNeedsNoRequests: with every tensor cached, cycles go by
// the bit-vector exchange alone; nothing is gathered at rank 0, whatever
// the number of ranks; without the cache every cycle gathers, and up the
// tree rank 0 receives a fraction of what the flat gather brings it.
func TestSteadyStateNeedsNoRequests(t *testing.T) {
	for _, n := range []int{8, 64} {
		c := measure(t, n, 200, 3, true, false)
		if c.gathers != 0 || c.rootIn != 0 || c.responses != 1 {
			t.Errorf("%d ranks, cached: %.1f gathers, %d bytes into rank 0, %d responses per cycle; want 0, 0, 1 fused", n, c.gathers, c.rootIn, c.responses)
		}
		m := measure(t, n, 200, 2, false, false)
		f := measure(t, n, 200, 2, false, true)
		if m.gathers != 1 || m.rootIn == 0 || f.gathers != 1 {
			t.Errorf("%d ranks, no cache: %.1f gathers, %d bytes into rank 0 per cycle; want 1 and some", n, m.gathers, m.rootIn)
		}
		if levels := int64(bits.Len(uint(n - 1))); m.rootIn*int64(n-1) > f.rootIn*levels*2 {
			t.Errorf("%d ranks, no cache: %d bytes into rank 0 up the tree, %d flat; want about %d/%d of it at most",
				n, m.rootIn, f.rootIn, levels*2, n-1)
		}
		if m.responses != f.responses {
			t.Errorf("%d ranks, no cache: %d responses up the tree, %d flat", n, m.responses, f.responses)
		}
	}
}

// TestNegotiationTable prints the tables of docs/scaling.md (with
// GOROVOD_SCALING=1; 1024 ranks take a while on a small machine).
func TestNegotiationTable(t *testing.T) {
	if os.Getenv("GOROVOD_SCALING") == "" {
		t.Skip("set GOROVOD_SCALING=1 to print the table")
	}
	t.Logf("%5s %5s %5s %10s %10s %10s %6s %10s %10s %8s %10s %10s %8s %8s %8s", "ranks", "cache", "gath",
		"rank0 us", "rank us", "crit us", "hops", "r0 in B", "r0 out B", "bits B", "tcp us", "shm us", "solo0", "soloN", "warmtcp")
	for _, mode := range []struct{ cached, flat bool }{{true, false}, {false, false}, {false, true}} {
		for _, n := range []int{8, 64, 256, 1024} {
			cycles := max(5, 2048/n)
			c := measure(t, n, 200, cycles, mode.cached, mode.flat)
			cache, gather := "hit", "tree"
			if !mode.cached {
				cache = "miss"
			}
			if mode.flat {
				gather = "flat"
			}
			warm := c
			warm.critical = max(c.soloRoot, c.soloRank)
			t.Logf("%5d %5s %5s %10.1f %10.1f %10.1f %6.0f %10d %10d %8d %10.1f %10.1f %8.1f %8.1f %8.1f", n, cache, gather,
				us(c.rootWork), us(c.rankWork), us(c.critical), c.hops, c.rootIn, c.rootOut, c.bitBytes,
				us(c.cycleTime(tcpLink)), us(c.cycleTime(shmLink)), us(c.soloRoot), us(c.soloRank), us(warm.cycleTime(tcpLink)))
		}
	}
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
