package timeline

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/coordinator/coordinatortest"
	"github.com/gorovod/gorovod/internal/tensor"

	"github.com/gorovod/gorovod/coordinator"
)

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
	l := coordinatortest.NewLockstep(n)
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
				rl, err := ctrls[r].Cycle(context.Background(), l.Rank(r), now, reqs, false)
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
