package coordinator

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
)

// TestRandomNegotiation drives random workloads through differently
// configured worlds in lock-step and checks the invariants every rank relies
// on: identical response lists, identical cache bit layouts, successful
// responses only for tensors every rank submitted with matching parameters,
// and every tensor eventually answered once every rank has submitted it.
func TestRandomNegotiation(t *testing.T) {
	seeds := 120
	if testing.Short() {
		seeds = 30
	}
	for seed := 0; seed < seeds; seed++ {
		if err := randomNegotiation(uint64(seed)); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}

func FuzzRandomNegotiation(f *testing.F) {
	for s := uint64(0); s < 8; s++ {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		if err := randomNegotiation(seed); err != nil {
			t.Fatal(err)
		}
	})
}

var debugRandom = false

func randomNegotiation(seed uint64) (err error) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	n := 2 + rng.IntN(3)
	capacity := []int{0, 2, 5, 1024}[rng.IntN(4)]
	threshold := []int64{0, 256, 128 << 20}[rng.IntN(3)]
	var stallWarn, stallShutdown time.Duration
	if rng.IntN(2) == 0 {
		stallWarn, stallShutdown = 5*time.Millisecond, 20*time.Millisecond
	}
	ctrls := make([]*Controller, n)
	for r := range ctrls {
		cfg := DefaultConfig(r, n)
		cfg.CacheCapacity, cfg.FusionThresholdBytes = capacity, threshold
		cfg.StallWarning, cfg.StallShutdown = stallWarn, stallShutdown
		c, err := NewController(cfg)
		if err != nil {
			return err
		}
		ctrls[r] = c
	}
	const names = 10
	type spec struct {
		op    OpType
		dt    tensor.DType
		count int64
	}
	tensors := make([]spec, names)
	for i := range tensors {
		tensors[i] = spec{
			op:    []OpType{OpAllreduce, OpAllreduce, OpAllgather, OpBroadcast, OpAlltoall}[rng.IntN(5)],
			dt:    []tensor.DType{tensor.Float32, tensor.Float16, tensor.Int64}[rng.IntN(3)],
			count: int64(1 + rng.IntN(40)),
		}
	}
	joined := make([]bool, n)
	pending := make([]map[string]Request, n)
	for r := range pending {
		pending[r] = map[string]Request{}
	}
	mkReq := func(i int, wrong bool) Request {
		tt := tensors[i]
		req := Request{Name: fmt.Sprintf("t%d", i), Op: tt.op, DType: tt.dt, Shape: []int64{tt.count},
			ReduceOp: tensor.Sum, Device: CPU, Prescale: 1, Postscale: 1}
		if tt.op == OpAllgather || tt.op == OpAlltoall {
			req.Shape = []int64{int64(rng.IntN(4)), tt.count}
		}
		if wrong {
			switch rng.IntN(3) {
			case 0:
				req.Shape[len(req.Shape)-1]++
			case 1:
				req.DType = tensor.Float64
			case 2:
				req.Op = OpBroadcast
			}
		}
		return req
	}
	now := time.Unix(0, 0)
	cycle := func(reqs [][]Request) error {
		out, err := lockstepChecked(ctrls, now, reqs, make([]bool, n))
		if err != nil {
			return err
		}
		for r := 1; r < n; r++ {
			if a, b := respString(out[r]), respString(out[0]); a != b {
				return fmt.Errorf("rank %d got %s, rank 0 got %s", r, a, b)
			}
		}
		for i := range out[0].Responses {
			resp := &out[0].Responses[i]
			for _, name := range resp.Names {
				if resp.Op == OpJoin {
					if resp.Error != "" || !joined[resp.LastJoined] {
						return fmt.Errorf("join response %s, last joined rank %d has not joined", resp, resp.LastJoined)
					}
					for r := range joined {
						if !joined[r] {
							return fmt.Errorf("join response %s while rank %d has not joined", resp, r)
						}
						joined[r] = false
					}
					continue
				}
				for _, j := range resp.JoinedRanks {
					if !joined[j] {
						return fmt.Errorf("response %s lists rank %d as joined", resp, j)
					}
				}
				if resp.Error == "" {
					var first *Request
					for r := range pending {
						p, ok := pending[r][name]
						if !ok && joined[r] && slices.Contains(resp.JoinedRanks, r) {
							continue
						}
						if !ok {
							return fmt.Errorf("response %s names %q, which rank %d has not submitted", resp, name, r)
						}
						if first == nil {
							first = &p
						} else if p.Op != first.Op || p.DType != first.DType || !slices.Equal(p.Shape[1:], first.Shape[1:]) ||
							(p.Op != OpAllgather && p.Op != OpAlltoall && p.Shape[0] != first.Shape[0]) {
							return fmt.Errorf("response %s for %q: ranks submitted %+v and %+v", resp, name, *first, p)
						}
					}
				}
				for r := range pending {
					delete(pending[r], name)
				}
			}
		}
		for r, c := range ctrls {
			inFlight := len(c.pending)
			if _, ok := c.pending[joinKey]; ok {
				inFlight--
			}
			if c.selfJoined != joined[r] {
				return fmt.Errorf("rank %d: controller joined=%v, model %v", r, c.selfJoined, joined[r])
			}
			if inFlight != len(pending[r]) {
				return fmt.Errorf("rank %d: controller has %d requests in flight, model %d", r, len(c.pending), len(pending[r]))
			}
			if c.cache.len() != ctrls[0].cache.len() {
				return fmt.Errorf("rank %d: cache has %d entries, rank 0 %d", r, c.cache.len(), ctrls[0].cache.len())
			}
			for bit, e := range c.cache.entries {
				if e.key != ctrls[0].cache.entries[bit].key {
					return fmt.Errorf("rank %d: cache bit %d is %v, on rank 0 %v", r, bit, e.key, ctrls[0].cache.entries[bit].key)
				}
			}
		}
		now = now.Add(time.Duration(1+rng.IntN(3)) * time.Millisecond)
		return nil
	}
	steps := 10 + rng.IntN(30)
	for s := 0; s < steps; s++ {
		reqs := make([][]Request, n)
		for r := range reqs {
			if joined[r] {
				continue
			}
			if len(pending[r]) == 0 && rng.IntN(12) == 0 {
				joined[r] = true
				reqs[r] = append(reqs[r], Request{Op: OpJoin})
				continue
			}
			for _, i := range rng.Perm(names) {
				name := fmt.Sprintf("t%d", i)
				if _, busy := pending[r][name]; busy || rng.IntN(3) == 0 {
					continue
				}
				req := mkReq(i, rng.IntN(25) == 0)
				reqs[r] = append(reqs[r], req)
				pending[r][name] = req
			}
		}
		if err := cycle(reqs); err != nil {
			return fmt.Errorf("step %d (n=%d cache=%d fusion=%d): %w", s, n, capacity, threshold, err)
		}
	}
	// Drain: every rank submits whatever any rank still waits for.
	for d := 0; d < 4; d++ {
		reqs := make([][]Request, n)
		for r := range reqs {
			for i := 0; i < names; i++ {
				name := fmt.Sprintf("t%d", i)
				if _, busy := pending[r][name]; busy {
					continue
				}
				for o := range pending {
					if _, ok := pending[o][name]; ok {
						req := mkReq(i, false)
						reqs[r] = append(reqs[r], req)
						pending[r][name] = req
						break
					}
				}
			}
		}
		if err := cycle(reqs); err != nil {
			return fmt.Errorf("drain %d: %w", d, err)
		}
	}
	if slices.Contains(joined, true) {
		reqs := make([][]Request, n)
		for r := range reqs {
			if !joined[r] {
				joined[r] = true
				reqs[r] = []Request{{Op: OpJoin}}
			}
		}
		if err := cycle(reqs); err != nil {
			return fmt.Errorf("final join: %w", err)
		}
		if slices.Contains(joined, true) {
			return fmt.Errorf("no join response after every rank joined")
		}
	}
	if debugRandom {
		for r, c := range ctrls {
			for k, q := range c.pending {
				fmt.Printf("rank %d pending %v sent=%v state=%v joined=%v joinMode=%v model=%v\n", r, k, q.sent, q.state, c.selfJoined, c.joinMode, joined[r])
			}
		}
		for k, e := range ctrls[0].table.entries {
			fmt.Printf("table %v count=%d\n", k, e.count)
		}
	}
	for r := range pending {
		if len(pending[r]) > 0 {
			return fmt.Errorf("rank %d still waits for %d tensors after the drain (n=%d cache=%d)", r, len(pending[r]), n, capacity)
		}
	}
	return nil
}

// lockstepChecked is lockstep reporting a broken invariant as an error.
func lockstepChecked(ctrls []*Controller, now time.Time, reqs [][]Request, shutdown []bool) (out []ResponseList, err error) {
	ft := &fakeT{}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(fakeFatal); !ok {
				panic(r)
			}
			err = fmt.Errorf("%s", ft.msg)
		}
	}()
	return lockstep(ft, ctrls, now, reqs, shutdown), nil
}

// fakeT turns lockstep's Fatalf into a panic the caller recovers.
type fakeT struct{ msg string }

type fakeFatal struct{}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(fakeFatal{})
}
