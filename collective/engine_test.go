package collective

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
	"github.com/gorovod/gorovod/internal/worker"

	"go.uber.org/zap"

	"github.com/gorovod/gorovod/coordinator"
	"github.com/gorovod/gorovod/internal/config"
	"github.com/gorovod/gorovod/internal/transport/inmem"
)

// world is an in-process job: n engines over the inmem transport, each
// with its own background loop, as n processes would have.
type world struct {
	t       *testing.T
	w       *inmem.World
	engines []*engine
}

func newWorld(t *testing.T, n int, cfg config.Config) *world {
	t.Helper()
	before := runtime.NumGoroutine()
	w := inmem.MustWorld(n)
	wd := &world{t: t, w: w, engines: make([]*engine, n)}
	oracle := worker.NewMemOracle(n)
	for r := 0; r < n; r++ {
		// The real constructor: metrics are served before the loop starts.
		world, err := NewWorld(context.Background(), WithConfig(cfg), WithLogger(zap.NewNop()), withMesh(w.Mesh(r), oracle))
		if err != nil {
			t.Fatal(err)
		}
		wd.engines[r] = world.e
	}
	t.Cleanup(func() {
		wd.shutdown()
		_ = w.Close()
		noLeaks(t, before)
	})
	return wd
}

func (wd *world) shutdown() {
	var wg sync.WaitGroup
	for _, e := range wd.engines {
		wg.Add(1)
		go func(e *engine) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = e.shutdown(ctx)
		}(e)
	}
	wg.Wait()
}

// noLeaks waits (bounded) for the goroutine count to come back down.
func noLeaks(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutines: %d before, %d after shutdown\n%s", before, n, buf[:runtime.Stack(buf, true)])
			return
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

func allreduceReq(name string, n int, op tensor.ReduceOp) coordinator.Request {
	return coordinator.Request{Name: name, Op: coordinator.OpAllreduce, DType: tensor.Float32, Shape: []int64{int64(n)},
		ReduceOp: op, Device: -1, Prescale: 1, Postscale: 1}
}

func wait(t *testing.T, en *entry) error {
	t.Helper()
	select {
	case <-en.done:
		return en.err
	case <-time.After(20 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("%q did not finish\n%s", en.req.Name, buf[:runtime.Stack(buf, true)])
		return nil
	}
}

func TestAllreduceInAnyOrder(t *testing.T) {
	cfg := config.Default()
	cfg.FusionThresholdBytes = 64 << 10
	const n, tensors = 3, 40
	wd := newWorld(t, n, cfg)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for r, e := range wd.engines {
		wg.Add(1)
		go func(r int, e *engine) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(r)))
			for step := 0; step < 3; step++ {
				order := rng.Perm(tensors)
				bufs := make([][]float32, tensors)
				ens := make([]*entry, tensors)
				for _, i := range order {
					bufs[i] = make([]float32, 1+i*37)
					for k := range bufs[i] {
						bufs[i][k] = float32(r + k + i)
					}
					ens[i] = e.submit(context.Background(), allreduceReq(fmt.Sprintf("t%d", i), len(bufs[i]), tensor.Sum), asBytes(bufs[i]), nil)
				}
				for i, en := range ens {
					if err := wait(t, en); err != nil {
						errs <- err
						return
					}
					for k, v := range bufs[i] {
						want := float32(n*(k+i) + n*(n-1)/2)
						if v != want {
							errs <- fmt.Errorf("rank %d step %d tensor %d elem %d = %v, want %v", r, step, i, k, v, want)
							return
						}
					}
				}
			}
		}(r, e)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestMismatchFailsEveryRankAndTheJobGoesOn(t *testing.T) {
	wd := newWorld(t, 3, config.Default())
	ens := make([]*entry, 3)
	for r, e := range wd.engines {
		n := 1024
		if r == 1 {
			n = 1000
		}
		ens[r] = e.submit(context.Background(), allreduceReq("grad/x", n, tensor.Sum), make([]byte, 4*n), nil)
	}
	for r, en := range ens {
		err := wait(t, en)
		if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "rank 1") || !strings.Contains(err.Error(), "1000") || !strings.Contains(err.Error(), "1024") {
			t.Errorf("rank %d: %v; want ErrMismatch naming rank 1, 1000 and 1024", r, err)
		}
	}
	for r, e := range wd.engines {
		ens[r] = e.submit(context.Background(), allreduceReq("grad/y", 4, tensor.Sum), make([]byte, 16), nil)
	}
	for r, en := range ens {
		if err := wait(t, en); err != nil {
			t.Errorf("rank %d: allreduce after mismatch: %v", r, err)
		}
	}
}

func TestLostPeerFailsEveryOtherRankNamingIt(t *testing.T) {
	wd := newWorld(t, 3, config.Default())
	const n = 1 << 20
	ens := make([]*entry, 3)
	for r, e := range wd.engines {
		ens[r] = e.submit(context.Background(), allreduceReq("big", n, tensor.Sum), make([]byte, 4*n), nil)
	}
	wd.w.Kill(2)
	for _, r := range []int{0, 1} {
		err := wait(t, ens[r])
		if err == nil {
			continue // the op may have finished before the kill
		}
		if !errors.Is(err, ErrPeerLost) && !errors.Is(err, ErrShutdown) {
			t.Errorf("rank %d: %v, want ErrPeerLost", r, err)
		}
	}
	// whatever happened to that op, the next one cannot succeed without rank 2
	for _, r := range []int{0, 1} {
		en := wd.engines[r].submit(context.Background(), allreduceReq("after", 4, tensor.Sum), make([]byte, 16), nil)
		err := wait(t, en)
		if !errors.Is(err, ErrPeerLost) || !strings.Contains(err.Error(), "rank 2") {
			t.Errorf("rank %d: %v, want ErrPeerLost naming rank 2", r, err)
		}
	}
}

func TestShutdownOfOneRankStopsAllAndFailsPendingCalls(t *testing.T) {
	wd := newWorld(t, 2, config.Default())
	pending := wd.engines[1].submit(context.Background(), allreduceReq("never", 4, tensor.Sum), make([]byte, 16), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := wd.engines[0].shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, pending); !errors.Is(err, ErrShutdown) {
		t.Fatalf("pending call on rank 1: %v, want ErrShutdown", err)
	}
	late := wd.engines[1].submit(context.Background(), allreduceReq("late", 4, tensor.Sum), make([]byte, 16), nil)
	if err := wait(t, late); !errors.Is(err, ErrShutdown) {
		t.Fatalf("call after shutdown: %v, want ErrShutdown", err)
	}
}

func TestDuplicateNameInFlightIsRefused(t *testing.T) {
	wd := newWorld(t, 2, config.Default())
	a := wd.engines[0].submit(context.Background(), allreduceReq("dup", 4, tensor.Sum), make([]byte, 16), nil)
	b := wd.engines[0].submit(context.Background(), allreduceReq("dup", 4, tensor.Sum), make([]byte, 16), nil)
	if err := wait(t, b); !errors.Is(err, ErrInvalid) {
		t.Fatalf("second call: %v, want ErrInvalid", err)
	}
	c := wd.engines[1].submit(context.Background(), allreduceReq("dup", 4, tensor.Sum), make([]byte, 16), nil)
	if err := wait(t, a); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, c); err != nil {
		t.Fatal(err)
	}
}

func TestSteadyStateUsesTheCacheAndFuses(t *testing.T) {
	cfg := config.Default()
	// A quiet period long enough that each rank's burst of submissions is
	// collected whole even under the race detector on a loaded machine;
	// what is tested is that collected bursts are cached and fused.
	cfg.CycleTime, cfg.BatchWindow = 20*time.Millisecond, 10*time.Millisecond
	wd := newWorld(t, 2, cfg)
	const tensors, steps = 200, 6
	bufs := make([][][]byte, 2)
	for r := range bufs {
		bufs[r] = make([][]byte, tensors)
		for i := range bufs[r] {
			bufs[r][i] = make([]byte, 4096)
		}
	}
	step := func() {
		var wg sync.WaitGroup
		errs := make([]error, len(wd.engines))
		for r, e := range wd.engines { // one submitter per rank, as in separate processes
			wg.Add(1)
			go func(r int, e *engine) {
				defer wg.Done()
				ens := make([]*entry, tensors)
				for i := range ens {
					ens[i] = e.submit(context.Background(), allreduceReq(fmt.Sprintf("g%d", i), 1024, tensor.Average), bufs[r][i], nil)
				}
				for _, en := range ens {
					<-en.done
					if en.err != nil && errs[r] == nil {
						errs[r] = en.err
					}
				}
			}(r, e)
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	step()
	sent := wd.engines[1].met.controller().RequestsSent
	opsBefore := wd.engines[1].met.ops.Load()
	for s := 1; s < steps; s++ {
		step()
	}
	if got := wd.engines[1].met.controller().RequestsSent - sent; got != 0 {
		t.Errorf("%d requests reached rank 0 after the first step", got)
	}
	perStep := float64(wd.engines[1].met.ops.Load()-opsBefore) / float64(steps-1)
	t.Logf("backend ops per step: %.2f", perStep)
	if perStep > 2 {
		t.Errorf("%.2f backend ops per step for %d tensors, want <= 2", perStep, tensors)
	}
}

func TestStallShutdownFailsWithTimeout(t *testing.T) {
	cfg := config.Default()
	cfg.StallWarningTime = 20 * time.Millisecond
	cfg.StallShutdownTime = 50 * time.Millisecond
	wd := newWorld(t, 3, cfg)
	a := wd.engines[0].submit(context.Background(), allreduceReq("grad/x", 4, tensor.Sum), make([]byte, 16), nil)
	b := wd.engines[1].submit(context.Background(), allreduceReq("grad/x", 4, tensor.Sum), make([]byte, 16), nil)
	for _, en := range []*entry{a, b} {
		err := wait(t, en)
		if !errors.Is(err, ErrTimeout) {
			t.Errorf("%v, want ErrTimeout", err)
		}
	}
}

func TestStuckPeerFailsWithTimeoutNamingIt(t *testing.T) {
	cfg := config.Default()
	cfg.ProgressTimeout = 300 * time.Millisecond
	wd := newWorld(t, 3, cfg)
	// Rank 2 is alive but makes no progress: everything it sends is held.
	wd.w.Delay(2, 0, time.Hour)
	wd.w.Delay(2, 1, time.Hour)
	ens := make([]*entry, 3)
	for r, e := range wd.engines {
		ens[r] = e.submit(context.Background(), allreduceReq("x", 4, tensor.Sum), make([]byte, 16), nil)
	}
	for _, r := range []int{0, 1} {
		err := wait(t, ens[r])
		if !errors.Is(err, ErrTimeout) && !errors.Is(err, ErrPeerLost) {
			t.Errorf("rank %d: %v, want ErrTimeout (or ErrPeerLost after a neighbour gave up)", r, err)
		}
	}
	// Each rank names the peer it waited for: rank 2 itself, or a rank that
	// was waiting for rank 2 (a timeout has no first cause to report).
	err := wait(t, ens[0])
	if !strings.Contains(err.Error(), "with rank 1") && !strings.Contains(err.Error(), "with rank 2") {
		t.Errorf("rank 0: %v names no peer", err)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	cfg := config.Default()
	cfg.MetricsAddr = "127.0.0.1:0"
	wd := newWorld(t, 2, cfg)
	e := wd.engines[0]
	ens := []*entry{
		wd.engines[0].submit(context.Background(), allreduceReq("m", 4, tensor.Sum), make([]byte, 16), nil),
		wd.engines[1].submit(context.Background(), allreduceReq("m", 4, tensor.Sum), make([]byte, 16), nil),
	}
	for _, en := range ens {
		if err := wait(t, en); err != nil {
			t.Fatal(err)
		}
	}
	fams := scrapeMetrics(t, e.metricsURL)
	rank0 := map[string]string{"rank": "0", "host": "host0"}
	for name, want := range map[string]float64{
		"gorovod_backend_ops_total":  1,
		"gorovod_bytes_total":        16,
		"gorovod_cache_misses_total": 1,
	} {
		if got := metricValue(t, fams, name, rank0); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	// The histogram counts the cycles since serveMetrics, which negotiated
	// the op. (It is not compared with gorovod_cycles_total: the loop keeps
	// cycling while one scrape collects the two.)
	if n := metricValue(t, fams, "gorovod_negotiation_seconds", rank0); n < 1 {
		t.Errorf("gorovod_negotiation_seconds count %v", n)
	}
	if metricValue(t, fams, "go_goroutines", rank0) == 0 {
		t.Error("go_goroutines is 0")
	}
}

// A lone call on an idle loop is negotiated at once: with a batch window
// (and cycle time) of an hour, calls that waited for it would never end.
func TestLoneCallSkipsBatchWindow(t *testing.T) {
	cfg := config.Default()
	cfg.CycleTime, cfg.BatchWindow = time.Hour, time.Hour
	wd := newWorld(t, 2, cfg)
	for i := range 3 { // the first negotiated through rank 0, the others cached
		ens := make([]*entry, 2)
		for r, e := range wd.engines {
			buf := make([]byte, 16)
			binary.NativeEndian.PutUint32(buf, math.Float32bits(float32(r+1)))
			ens[r] = e.submit(context.Background(), allreduceReq("lone", 4, tensor.Sum), buf, nil)
		}
		for r, en := range ens {
			if err := wait(t, en); err != nil {
				t.Fatalf("call %d, rank %d: %v", i, r, err)
			}
			if got := math.Float32frombits(binary.NativeEndian.Uint32(en.Buf)); got != 3 {
				t.Fatalf("call %d, rank %d: first element %v, want 3", i, r, got)
			}
		}
	}
}
