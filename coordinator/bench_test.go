package coordinator

import (
	"fmt"
	"testing"
	"time"
)

// benchSteps measures one training step of tensors 4 KiB gradients on n
// ranks, the controllers driven in lock-step (the cost is the sum over
// ranks; divide by n for one rank's negotiation time).
func benchSteps(b *testing.B, n, tensors, capacity int) {
	ctrls := make([]*Controller, n)
	for r := range ctrls {
		cfg := DefaultConfig(r, n)
		cfg.CacheCapacity = capacity
		c, err := NewController(cfg)
		if err != nil {
			b.Fatal(err)
		}
		ctrls[r] = c
	}
	reqs := make([][]Request, n)
	names := make([]string, tensors)
	for i := range names {
		names[i] = fmt.Sprintf("grad/%d", i)
	}
	step := func() {
		for r := range reqs {
			reqs[r] = reqs[r][:0]
			for _, name := range names {
				reqs[r] = append(reqs[r], allreduceReq(name, 1024))
			}
		}
		out, err := lockstepChecked(ctrls, time.Unix(0, 0), reqs, make([]bool, n))
		if err != nil {
			b.Fatal(err)
		}
		if got := len(out[0].Responses); got != 1 {
			b.Fatalf("%d responses, want 1", got)
		}
	}
	step()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		step()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n)/1000, "us/rank-step")
}

func BenchmarkStepFastPath4x200(b *testing.B) { benchSteps(b, 4, 200, 1024) }
func BenchmarkStepSlowPath4x200(b *testing.B) { benchSteps(b, 4, 200, 0) }
