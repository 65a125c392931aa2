package coordinator

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
)

// memWorld is an in-memory Exchange for n ranks in one process: each
// collective is a rendezvous of all ranks, the last to arrive computes the
// result.
type memWorld struct {
	n   int
	mu  sync.Mutex
	cur *round
}

type round struct {
	inputs []any
	count  int
	out    any
	done   chan struct{}
}

func (w *memWorld) do(ctx context.Context, rank int, in any, combine func([]any) any) (any, error) {
	w.mu.Lock()
	if w.cur == nil {
		w.cur = &round{inputs: make([]any, w.n), done: make(chan struct{})}
	}
	r := w.cur
	r.inputs[rank] = in
	r.count++
	if r.count == w.n {
		r.out = combine(r.inputs)
		w.cur = nil
		close(r.done)
	}
	w.mu.Unlock()
	select {
	case <-r.done:
		return r.out, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type memExchange struct {
	w    *memWorld
	rank int
}

func (x *memExchange) Rank() int { return x.rank }
func (x *memExchange) Size() int { return x.w.n }

func (x *memExchange) AllreduceBits(ctx context.Context, bits []uint64, op tensor.ReduceOp) error {
	in := append([]uint64(nil), bits...)
	out, err := x.w.do(ctx, x.rank, in, func(all []any) any {
		res := append([]uint64(nil), all[0].([]uint64)...)
		for _, a := range all[1:] {
			for i, v := range a.([]uint64) {
				if op == tensor.BitAnd {
					res[i] &= v
				} else {
					res[i] |= v
				}
			}
		}
		return res
	})
	if err != nil {
		return err
	}
	copy(bits, out.([]uint64))
	return nil
}

func (x *memExchange) GatherToRoot(ctx context.Context, payload []byte) ([][]byte, error) {
	out, err := x.w.do(ctx, x.rank, append([]byte(nil), payload...), func(all []any) any {
		res := make([][]byte, len(all))
		for i, a := range all {
			res[i] = a.([]byte)
		}
		return res
	})
	if err != nil || x.rank != 0 {
		return nil, err
	}
	return out.([][]byte), nil
}

func (x *memExchange) BroadcastFromRoot(ctx context.Context, payload []byte) ([]byte, error) {
	out, err := x.w.do(ctx, x.rank, append([]byte(nil), payload...), func(all []any) any { return all[0] })
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), out.([]byte)...), nil
}

// runConcurrent runs one Cycle on every rank at once through memWorld.
func runConcurrent(t *testing.T, ctrls []*Controller, w *memWorld, now time.Time, reqs [][]Request, shutdown []bool) []ResponseList {
	t.Helper()
	out := make([]ResponseList, len(ctrls))
	errs := make([]error, len(ctrls))
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for r := range ctrls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rq []Request
			if reqs != nil {
				rq = reqs[r]
			}
			sd := shutdown != nil && shutdown[r]
			out[r], errs[r] = ctrls[r].Cycle(ctx, &memExchange{w: w, rank: r}, now, rq, sd)
		}()
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: Cycle: %v", r, err)
		}
	}
	return out
}

func newCluster(t *testing.T, n int, mod func(*Config)) []*Controller {
	t.Helper()
	ctrls := make([]*Controller, n)
	for r := range ctrls {
		cfg := DefaultConfig(r, n)
		if mod != nil {
			mod(&cfg)
		}
		c, err := NewController(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctrls[r] = c
	}
	return ctrls
}

func allreduceReq(name string, count int64) Request {
	return Request{Name: name, Op: OpAllreduce, DType: tensor.Float32, Shape: []int64{count},
		ReduceOp: tensor.Sum, Device: CPU, Prescale: 1, Postscale: 1}
}

func checkNoLeak(t *testing.T, before int) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if runtime.NumGoroutine() <= before {
			return
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond) // waiting for exiting goroutines, not synchronising
	}
	t.Errorf("goroutines leaked: %d before, %d after", before, runtime.NumGoroutine())
}

// TestCycleConcurrent drives the real Cycle over an in-memory exchange:
// the slow path on the first step, the fast path after it, a mismatch and
// shutdown, and checks every rank got the same responses.
func TestCycleConcurrent(t *testing.T) {
	before := runtime.NumGoroutine()
	const n = 4
	ctrls := newCluster(t, n, nil)
	w := &memWorld{n: n}
	now := time.Unix(1000, 0)
	step := func() [][]Request {
		reqs := make([][]Request, n)
		for r := range reqs {
			for i := 0; i < 10; i++ {
				// Each rank submits in a different order.
				j := (i + r*3) % 10
				reqs[r] = append(reqs[r], allreduceReq("grad/"+string(rune('a'+j)), 256))
			}
		}
		return reqs
	}
	for s := 0; s < 3; s++ {
		out := runConcurrent(t, ctrls, w, now, step(), nil)
		for r := 1; r < n; r++ {
			if got, want := respString(out[r]), respString(out[0]); got != want {
				t.Fatalf("step %d: rank %d got %s, rank 0 got %s", s, r, got, want)
			}
		}
		if len(out[0].Responses) != 1 || len(out[0].Responses[0].Names) != 10 {
			t.Fatalf("step %d: want one fused response of 10 names, got %s", s, respString(out[0]))
		}
	}
	st := ctrls[1].Stats()
	if st.RequestsSent != 10 || st.CacheHits != 20 || st.FastPathCycles != 2 {
		t.Errorf("rank 1 stats %+v: want 10 requests sent, 20 hits, 2 fast cycles", st)
	}
	reqs := make([][]Request, n)
	for r := range reqs {
		reqs[r] = []Request{allreduceReq("bad", int64(100+r))}
	}
	out := runConcurrent(t, ctrls, w, now, reqs, nil)
	if len(out[2].Responses) != 1 || out[2].Responses[0].ErrorKind != ErrorMismatch {
		t.Fatalf("want a mismatch error, got %s", respString(out[2]))
	}
	sd := []bool{false, false, true, false}
	out = runConcurrent(t, ctrls, w, now, nil, sd)
	for r := range out {
		if !out[r].Shutdown {
			t.Errorf("rank %d: Shutdown not set", r)
		}
	}
	checkNoLeak(t, before)
}

func respString(rl ResponseList) string {
	s := ""
	for i := range rl.Responses {
		s += "[" + rl.Responses[i].String() + "]"
	}
	if rl.Shutdown {
		s += " shutdown"
	}
	return s
}
