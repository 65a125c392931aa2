package timeline

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"

	"github.com/gorovod/gorovod/coordinator"
)

// lockstep is an in-process coordinator.Exchange: every call waits for all
// ranks' matching calls and hands each the whole round's contributions.
type lockstep struct {
	n       int
	mu      sync.Mutex
	cond    *sync.Cond
	gen     int
	arrived int
	vals    []any
	last    []any
}

func newLockstep(n int) *lockstep {
	l := &lockstep{n: n, vals: make([]any, n)}
	l.cond = sync.NewCond(&l.mu)
	return l
}

func (l *lockstep) round(rank int, v any) []any {
	l.mu.Lock()
	defer l.mu.Unlock()
	gen := l.gen
	l.vals[rank] = v
	l.arrived++
	if l.arrived == l.n {
		l.last, l.vals = l.vals, make([]any, l.n)
		l.arrived = 0
		l.gen++
		l.cond.Broadcast()
	}
	for gen == l.gen {
		l.cond.Wait()
	}
	return l.last
}

type rankExchange struct {
	l    *lockstep
	rank int
}

func (x rankExchange) Rank() int { return x.rank }
func (x rankExchange) Size() int { return x.l.n }

func (x rankExchange) AllreduceBits(_ context.Context, bits []uint64, op tensor.ReduceOp) error {
	all := x.l.round(x.rank, append([]uint64(nil), bits...))
	for i := range bits {
		for _, v := range all {
			o := v.([]uint64)[i]
			if op == tensor.BitAnd {
				bits[i] &= o
			} else {
				bits[i] |= o
			}
		}
	}
	return nil
}

func (x rankExchange) GatherToRoot(_ context.Context, p []byte) ([][]byte, error) {
	all := x.l.round(x.rank, p)
	if x.rank != 0 {
		return nil, nil
	}
	out := make([][]byte, len(all))
	for i, v := range all {
		out[i] = v.([]byte)
	}
	return out, nil
}

func (x rankExchange) BroadcastFromRoot(_ context.Context, p []byte) ([]byte, error) {
	return x.l.round(x.rank, p)[0].([]byte), nil
}

// The timeline as the real coordinator drives it on rank 0 of 2: rank 1
// submits first (rank 0 is late), then a cached repeat.
func TestWithCoordinator(t *testing.T) {
	tl, path := open(t, Options{MarkCycles: true})
	sw := &Switch{}
	sw.Set(tl)
	const n = 2
	ctrls := make([]*coordinator.Controller, n)
	for r := range ctrls {
		cfg := coordinator.DefaultConfig(r, n)
		cfg.StallWarning = 0
		if r == 0 {
			cfg.Observer = Observer[coordinator.OpType]{S: sw}
		}
		c, err := coordinator.NewController(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctrls[r] = c
	}
	l := newLockstep(n)
	req := coordinator.Request{Name: "grad/w", Op: coordinator.OpAllreduce, DType: tensor.Float32,
		Shape: []int64{16}, ReduceOp: tensor.Sum, Device: coordinator.CPU, Prescale: 1, Postscale: 1}
	// submits[cycle][rank]: whether the rank submits grad/w in that cycle.
	submits := [][n]bool{{false, true}, {true, false}, {true, true}}
	for cycle, sub := range submits {
		now := at(1000 * cycle)
		lists := make([]coordinator.ResponseList, n)
		var wg sync.WaitGroup
		for r := range ctrls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var reqs []coordinator.Request
				if sub[r] {
					reqs = []coordinator.Request{req}
				}
				rl, err := ctrls[r].Cycle(context.Background(), rankExchange{l, r}, now, reqs, false)
				if err != nil {
					t.Error(err)
				}
				lists[r] = rl
			}()
		}
		wg.Wait()
		// Rank 0's loop executes its responses.
		for i := range lists[0].Responses {
			r := &lists[0].Responses[i]
			tl.OpStart(now.Add(10*time.Microsecond), Op{Op: r.Op.String(), DType: r.DType.String(), Names: r.Names, Counts: r.Counts, ProcessSet: r.ProcessSet})
		}
		for _, resp := range lists[0].Responses {
			tl.Activity(now.Add(20*time.Microsecond), resp.Names, "CPU_ALLREDUCE")
			tl.OpEnd(now.Add(30*time.Microsecond), resp.Names, nil)
		}
	}
	if err := tl.Close(); err != nil {
		t.Fatal(err)
	}
	evs := parse(t, read(t, path))
	op := []string{"B ALLREDUCE", "B QUEUE", "E QUEUE", "B CPU_ALLREDUCE", "E CPU_ALLREDUCE", "E ALLREDUCE"}
	want := map[string][]string{
		"gorovod": {"i CYCLE_START", "i CYCLE_START", "i CYCLE_START"},
		"grad/w": append(append([]string{"B NEGOTIATE_ALLREDUCE", "X 1", "X 0", "E NEGOTIATE_ALLREDUCE"}, op...),
			append([]string{"B NEGOTIATE_ALLREDUCE", "E NEGOTIATE_ALLREDUCE"}, op...)...),
	}
	if got := rows(t, evs); !reflect.DeepEqual(got, want) {
		t.Errorf("rows:\n got %q\nwant %q", got, want)
	}
	for _, e := range evs {
		if e.Ph == "X" && e.Args["rank"] == 0.0 && e.Ts != 1000 {
			t.Errorf("rank 0 ready at %v µs, want 1000 (one cycle late)", e.Ts)
		}
	}
}
