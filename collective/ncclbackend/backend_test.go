//go:build cgo

package ncclbackend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/collectivetest"
	"github.com/gorovod/gorovod/collective/internal/worldhook"
	"github.com/gorovod/gorovod/collective/ncclbackend/devicecheck"
	"github.com/gorovod/gorovod/internal/tensor"
	"github.com/gorovod/gorovod/internal/tensor/tensortest"
	"github.com/gorovod/gorovod/internal/transport/inmem"
	"github.com/gorovod/gorovod/nccl"
	"github.com/gorovod/gorovod/nccl/fakenccl"
	"github.com/gorovod/gorovod/ops"
)

// The ranks of these tests are worlds in one process (collectivetest) whose
// device tensors live in the NCCL test double's "GPU memory" and whose
// device responses run on this backend over the double's communicators.

var double struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	os.Setenv("FAKECUDA_DEVICES", "4")
	os.Setenv("FAKENCCL_CHUNK", "4096") // several exchange steps per tensor
	code := m.Run()
	if double.dir != "" {
		os.RemoveAll(double.dir)
	}
	os.Exit(code)
}

func loadDouble(t *testing.T) *nccl.Library {
	t.Helper()
	double.once.Do(func() {
		double.dir, double.err = os.MkdirTemp("", "ncclbackend-")
		if double.err == nil {
			double.err = fakenccl.Build(context.Background(), double.dir, fakenccl.Options{})
		}
	})
	if errors.Is(double.err, fakenccl.ErrNoCompiler) {
		t.Skip(double.err)
	}
	if double.err != nil {
		t.Fatal(double.err)
	}
	lib, err := nccl.LoadFrom([]string{filepath.Join(double.dir, fakenccl.NCCLName)}, []string{filepath.Join(double.dir, fakenccl.CUDARTName)})
	if err != nil {
		t.Fatal(err)
	}
	return lib
}

// run runs fn on n in-process ranks whose device backend is b; rank r
// uses GPU r of the double.
func run(t *testing.T, n int, b *Backend, fn func(ctx context.Context, r *devicecheck.Rig) error, opts ...collective.Option) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts = append(opts, collective.WithDeviceBackend(b))
	return collectivetest.Run(ctx, n, func(ctx context.Context, w *collective.World) error {
		r := devicecheck.NewRig(w, b.lib, w.Rank()%4)
		defer r.Close()
		return fn(ctx, r)
	}, opts...)
}

// TestDeviceMatrix: every dtype NCCL has x every op x every collective,
// odd lengths, device tensors on each rank's own GPU, np 2 and 4.
func TestDeviceMatrix(t *testing.T) {
	lib := loadDouble(t)
	for _, np := range []int{2, 4} {
		t.Run(fmt.Sprintf("np%d", np), func(t *testing.T) {
			b := New(lib, 0)
			defer b.Close()
			err := run(t, np, b, func(ctx context.Context, r *devicecheck.Rig) error {
				n, err := r.Matrix(ctx)
				if err == nil && n < 9*3*9 {
					err = fmt.Errorf("only %d checks ran", n)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestMixedHostAndDevice: host and device tensors in one step, each on its
// own backend.
func TestMixedHostAndDevice(t *testing.T) {
	checkNoLeak(t)
	lib := loadDouble(t)
	b := New(lib, 0)
	defer b.Close()
	if err := run(t, 2, b, func(ctx context.Context, r *devicecheck.Rig) error { return r.Mixed(ctx) }); err != nil {
		t.Fatal(err)
	}
	if b.Calls() == 0 {
		t.Error("the device tensor did not go through NCCL")
	}
}

// TestFusion200: 200 small device tensors in one step take at most 2 NCCL
// calls per rank.
func TestFusion200(t *testing.T) {
	lib := loadDouble(t)
	b := New(lib, 0)
	defer b.Close()
	const np = 2
	// A batch window longer than a submission gap on a loaded machine: the
	// 200 submissions of a step meet in one or two cycles.
	cfg := collective.DefaultConfig()
	cfg.CycleTime, cfg.BatchWindow = 20*time.Millisecond, 5*time.Millisecond
	if err := run(t, np, b, func(ctx context.Context, r *devicecheck.Rig) error { return r.Fusion(ctx, 200) }, collective.WithConfig(cfg)); err != nil {
		t.Fatal(err)
	}
	// Every rank makes the same calls; the backend counts all ranks'.
	if c := b.Calls(); c%np != 0 || c/np > 2 || c == 0 {
		t.Errorf("200 small tensors took %d NCCL calls on %d ranks; want at most 2 per rank", c, np)
	}
}

// TestFaults: an injected async error and a hung collective end every
// rank's waiting call with a named error within the progress deadline.
func TestFaults(t *testing.T) {
	lib := loadDouble(t)
	for _, tc := range []struct {
		name, fault string
		want        *regexp.Regexp
		kinds       []error
	}{
		{"async-error", "error:1:2", regexp.MustCompile(`rank 1|injected async error on rank 1`), []error{collective.ErrPeerLost}},
		{"hang", "hang:1:2", regexp.MustCompile(`rank [01]`), []error{collective.ErrPeerLost, collective.ErrTimeout}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			t.Setenv("FAKENCCL_FAULT", tc.fault)
			b := New(lib, 0, nccl.WithWatchdogInterval(5*time.Millisecond))
			defer b.Close()
			cfg := collective.DefaultConfig()
			cfg.ProgressTimeout = 2 * time.Second
			var mu sync.Mutex
			errs := map[int]error{}
			err := run(t, 2, b, func(ctx context.Context, r *devicecheck.Rig) error {
				err := r.UntilFailure(ctx, 5)
				if err == nil {
					return errors.New("no collective failed")
				}
				mu.Lock()
				errs[r.Rank] = err
				mu.Unlock()
				return nil
			}, collective.WithConfig(cfg))
			if err != nil {
				t.Fatal(err)
			}
			for rank := 0; rank < 2; rank++ {
				e := errs[rank]
				ok := false
				for _, k := range tc.kinds {
					ok = ok || errors.Is(e, k)
				}
				if !ok || !tc.want.MatchString(e.Error()) {
					t.Errorf("rank %d: %v; want one of %v matching %q", rank, e, tc.kinds, tc.want)
				}
			}
		})
	}
}

// TestNewWorldNewCommunicator: the same ranks in a second world (a new
// epoch) get a new communicator; closing a world destroys its
// communicators (World.Close calls CloseWorld), and the backend stays
// usable for the next world.
func TestNewWorldNewCommunicator(t *testing.T) {
	checkNoLeak(t)
	lib := loadDouble(t)
	b := New(lib, 0)
	defer b.Close()
	for world := 1; world <= 2; world++ {
		if err := run(t, 2, b, func(ctx context.Context, r *devicecheck.Rig) error { return r.Mixed(ctx) }); err != nil {
			t.Fatalf("world %d: %v", world, err)
		}
		if got := b.made.Load(); got != int64(2*world) {
			t.Errorf("after world %d: %d communicators made, want %d (one per rank and world)", world, got, 2*world)
		}
		b.mu.Lock()
		n := len(b.groups)
		b.mu.Unlock()
		if n != 0 {
			t.Errorf("after world %d closed: %d communicators kept, want 0", world, n)
		}
	}
}

// TestCloseWorldKeepsOtherWorlds: CloseWorld destroys only the
// communicators bootstrapped over the closing world's host planes.
func TestCloseWorldKeepsOtherWorlds(t *testing.T) {
	lib := loadDouble(t)
	b := New(lib, 0)
	defer b.Close()
	mine, other := &ops.Comm{}, &ops.Comm{}
	b.groups["a"] = &group{host: mine}
	b.groups["b"] = &group{host: other}
	if err := b.CloseWorld([]*ops.Comm{mine}); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.groups["a"]; ok {
		t.Error("the closing world's group is still there")
	}
	if _, ok := b.groups["b"]; !ok {
		t.Error("another world's group was dropped")
	}
}

// checkNoLeak fails t if goroutines started during the test (the loops,
// the communicators' watchdogs) are still running once it is over and the
// backend closed.
func checkNoLeak(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for runtime.NumGoroutine() > before && ctx.Err() == nil {
			runtime.Gosched()
			time.Sleep(5 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutines leaked: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
	})
}

// TestFaultFailsEveryWaitingHandle: when the first device collective of a
// step fails, every handle still waiting on that rank (device and host
// tensors alike) ends with an error instead of hanging.
func TestFaultFailsEveryWaitingHandle(t *testing.T) {
	checkNoLeak(t)
	lib := loadDouble(t)
	t.Setenv("FAKENCCL_FAULT", "error:1:1")
	b := New(lib, 0, nccl.WithWatchdogInterval(5*time.Millisecond))
	defer b.Close()
	cfg := collective.DefaultConfig()
	cfg.ProgressTimeout = 2 * time.Second
	err := run(t, 2, b, func(ctx context.Context, r *devicecheck.Rig) error {
		var hs []*collective.Handle
		for i := 0; i < 3; i++ {
			x, err := r.Tensor(tensor.Float64, tensortest.Values(tensor.Float64, r.Rank, 0, 5))
			if err != nil {
				return err
			}
			y, err := r.Tensor(tensor.Int32, tensortest.Values(tensor.Int32, r.Rank, 0, 5))
			if err != nil {
				return err
			}
			hs = append(hs,
				collective.AllreduceDeviceAsync(ctx, fmt.Sprintf("x%d", i), x, collective.Sum, r.In),
				collective.AllreduceDeviceAsync(ctx, fmt.Sprintf("y%d", i), y, collective.Max, r.In),
				collective.AllreduceAsync(ctx, fmt.Sprintf("h%d", i), []float32{1, 2}, collective.Sum, r.In))
		}
		failed := 0
		for _, h := range hs {
			if err := h.Wait(ctx); err != nil {
				failed++
				if !errors.Is(err, collective.ErrPeerLost) && !errors.Is(err, collective.ErrTimeout) && !errors.Is(err, collective.ErrShutdown) {
					return fmt.Errorf("handle failed with %v, want a named kind", err)
				}
			}
		}
		if failed == 0 {
			return errors.New("no handle failed")
		}
		return nil
	}, collective.WithConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
}

func TestBlamed(t *testing.T) {
	g := collective.Group{Rank: 0, Members: []int{2, 5, 7}}
	for _, tc := range []struct {
		text string
		want int
		ok   bool
	}{
		{"nccl: async error: remote error (ncclRemoteError): fakenccl: rank 1 aborted its communicator", 5, true},
		{"watchdog on rank 0: fakenccl: rank 2 aborted its communicator; first failure: rank 1: process 9 is gone", 5, true},
		{"fakenccl: rank 2 (pid 77) is gone", 7, true},
		{"nccl: communicator aborted: stream not done on rank 0: context deadline exceeded", 0, false},
		{"rank 9 is not in the group", 0, false},
	} {
		got, ok := blamed(errors.New(tc.text), g)
		if got != tc.want || ok != tc.ok {
			t.Errorf("blamed(%q) = %d, %v; want %d, %v", tc.text, got, ok, tc.want, tc.ok)
		}
	}
}

// TestHierarchicalAllreduce: 2 hosts x 2 ranks with
// HierarchicalAllreduce set: device allreduces run as NCCL reduce-scatter
// and allgather within each host around a host-plane step across hosts
// (two NCCL calls each), element by element right for every dtype and op.
func TestHierarchicalAllreduce(t *testing.T) {
	// Known issue (2026-12-07): about one run in ten hangs inside the test
	// double (a rank's intra-host allgather waits for a peer that has
	// returned; see docs/gpu.md). Run it on purpose until that is found.
	if os.Getenv("GOROVOD_TEST_DEVICE_HIERARCHICAL") != "1" {
		t.Skip("hierarchical device allreduce hangs intermittently against the test double; set GOROVOD_TEST_DEVICE_HIERARCHICAL=1 to run it")
	}
	checkNoLeak(t)
	lib := loadDouble(t)
	b := New(lib, 0)
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const np = 4
	mem, err := inmem.NewWorld(np, inmem.WithPipeBytes(1<<20), inmem.WithHosts("a", "a", "b", "b"))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	cfg := collective.DefaultConfig()
	cfg.HierarchicalAllreduce = true
	oracle := worldhook.NewOracle(np)
	worlds := make([]*collective.World, np)
	var wg sync.WaitGroup
	errs := make([]error, np)
	for r := range np {
		wg.Add(1)
		go func() { // NewWorld returns once every rank has joined
			defer wg.Done()
			worlds[r], errs[r] = collective.NewWorld(ctx, collective.WithConfig(cfg), collective.WithDeviceBackend(b),
				worldhook.WithMesh(mem.Mesh(r), oracle).(collective.Option))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for r, w := range worlds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer w.Close(ctx)
			rig := devicecheck.NewRig(w, lib, r)
			defer rig.Close()
			for _, dt := range devicecheck.DTypes {
				for _, op := range devicecheck.Ops {
					n := 1031 // not a multiple of the 2 ranks of a host: padded
					x, err := rig.Tensor(dt, tensortest.Values(dt, r, 0, n))
					if err != nil {
						errs[r] = err
						return
					}
					name := fmt.Sprintf("h/%v/%v", dt, op)
					if err := collective.AllreduceDevice(ctx, name, x, op, rig.In); err != nil {
						errs[r] = fmt.Errorf("rank %d: %s: %w", r, name, err)
						return
					}
					want := make([]float64, n)
					for i := range want {
						want[i] = tensortest.Reduced(dt, op, np, i)
					}
					if err := rig.Check(name, x, want); err != nil {
						errs[r] = err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	want := int64(np * 2 * len(devicecheck.DTypes) * len(devicecheck.Ops))
	if c := b.Calls(); c != want {
		t.Errorf("%d NCCL calls, want %d (a reduce-scatter and an allgather per allreduce and rank)", c, want)
	}
}

// TestLoopOverlapsDeviceOps: the loop does not wait for a device allreduce
// it has enqueued. Rank 1's first NCCL collective hangs in the double;
// once both ranks have enqueued it, a host allreduce (a later negotiation
// cycle and op) completes while the device handle is still waiting, and
// the device handle then ends at the progress deadline with a named error.
func TestLoopOverlapsDeviceOps(t *testing.T) {
	checkNoLeak(t)
	lib := loadDouble(t)
	t.Setenv("FAKENCCL_FAULT", "hang:1:1")
	b := New(lib, 0, nccl.WithWatchdogInterval(5*time.Millisecond))
	defer b.Close()
	cfg := collective.DefaultConfig()
	cfg.ProgressTimeout = 3 * time.Second
	err := run(t, 2, b, func(ctx context.Context, r *devicecheck.Rig) error {
		x, err := r.Tensor(tensor.Float32, tensortest.Values(tensor.Float32, r.Rank, 0, 33))
		if err != nil {
			return err
		}
		dev := collective.AllreduceDeviceAsync(ctx, "dev", x, collective.Sum, r.In)
		if err := enqueuedBy(ctx, b, 2); err != nil {
			return err
		}
		host := []float32{float32(r.Rank + 1)}
		if err := collective.Allreduce(ctx, "host", host, collective.Sum, r.In); err != nil {
			return fmt.Errorf("rank %d: host allreduce while the device one runs: %w", r.Rank, err)
		}
		if host[0] != 3 {
			return fmt.Errorf("rank %d: host allreduce gave %v, want 3", r.Rank, host[0])
		}
		select {
		case <-dev.Done():
			return fmt.Errorf("rank %d: the hung device allreduce ended before the host one: %v", r.Rank, dev.Wait(ctx))
		default:
		}
		err = dev.Wait(ctx)
		if !errors.Is(err, collective.ErrTimeout) && !errors.Is(err, collective.ErrPeerLost) {
			return fmt.Errorf("rank %d: device allreduce ended with %v, want ErrTimeout or ErrPeerLost", r.Rank, err)
		}
		return nil
	}, collective.WithConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
}

// enqueuedBy waits (bounded by ctx) until b has enqueued n NCCL calls.
func enqueuedBy(ctx context.Context, b *Backend, n int64) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for b.Calls() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d NCCL calls enqueued, waiting for %d: %w", b.Calls(), n, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}
