package ops

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"

	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/inmem"
)

// checkGoroutines fails t if goroutines started during the test are still
// running at the end (after a bounded wait for ones on their way out).
func checkGoroutines(t *testing.T) func() {
	before := runtime.NumGoroutine()
	return func() {
		t.Helper()
		n := 0
		for range 300 {
			if n = runtime.NumGoroutine(); n <= before {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines running, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// world is n Comms over an inmem world.
type world struct {
	w     *inmem.World
	comms []*Comm
}

func newWorld(t *testing.T, n int, cfg Config, opts ...inmem.Option) *world {
	t.Helper()
	w, err := inmem.NewWorld(n, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ws := &world{w: w}
	for r := range n {
		c, err := NewComm(w.Mesh(r), cfg)
		if err != nil {
			t.Fatal(err)
		}
		// The real calibration times 4 MiB allreduces, which tiny test
		// segments and pipes make slow: tests say the slots won, unless
		// they install their own (TestSingleCopyCalibrationRuns restores
		// the real one).
		c.sc.calibrate = slotsWin
		ws.comms = append(ws.comms, c)
	}
	return ws
}

func slotsWin(context.Context) (time.Duration, time.Duration, error) {
	return 2 * time.Millisecond, time.Millisecond, nil
}

func (ws *world) close() {
	for _, c := range ws.comms {
		_ = c.Close()
	}
	_ = ws.w.Close()
}

// each runs fn on every rank concurrently and returns the errors by rank.
func (ws *world) each(fn func(r int, c *Comm) error) []error {
	errs := make([]error, len(ws.comms))
	var wg sync.WaitGroup
	for r, c := range ws.comms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = fn(r, c)
		}()
	}
	wg.Wait()
	return errs
}

func (ws *world) mustEach(t *testing.T, fn func(r int, c *Comm) error) {
	t.Helper()
	for r, err := range ws.each(fn) {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// floatInput makes values whose reductions stay in range: products near 1.
func floatInput(r *rand.Rand, dt tensor.DType, op tensor.ReduceOp, n int) []byte {
	b := make([]byte, n*dt.Size())
	for i := range n {
		var v float64
		if op == tensor.Product {
			v = 0.5 + 1.5*r.Float64()
			if r.IntN(4) == 0 {
				v = -v
			}
		} else {
			v = (r.Float64() - 0.5) * 20
		}
		setFloat(dt, b, i, v)
	}
	return b
}

func setFloat(dt tensor.DType, b []byte, i int, v float64) {
	switch dt {
	case tensor.Float32:
		as[float32](b)[i] = float32(v)
	case tensor.Float64:
		as[float64](b)[i] = v
	case tensor.Float16:
		as[tensor.F16](b)[i] = tensor.F16FromFloat32(float32(v))
	case tensor.BFloat16:
		as[tensor.BF16](b)[i] = tensor.BF16FromFloat32(float32(v))
	}
}

func getFloat(dt tensor.DType, b []byte, i int) float64 {
	switch dt {
	case tensor.Float32:
		return float64(as[float32](b)[i])
	case tensor.Float64:
		return as[float64](b)[i]
	case tensor.Float16:
		return float64(as[tensor.F16](b)[i].Float32())
	case tensor.BFloat16:
		return float64(as[tensor.BF16](b)[i].Float32())
	}
	panic(dt)
}

func epsilon(dt tensor.DType) float64 {
	switch dt {
	case tensor.Float64:
		return 0x1p-52
	case tensor.Float32:
		return 0x1p-23
	case tensor.Float16:
		return 0x1p-10
	}
	return 0x1p-7
}

// checkAllreduce compares the result of every rank with the reference and
// with each other (all ranks must agree bit for bit).
func checkAllreduce(t *testing.T, desc string, dt tensor.DType, op tensor.ReduceOp, n int, pre, post float64, inputs, outputs [][]byte) {
	t.Helper()
	for r := 1; r < n; r++ {
		if !bytes.Equal(outputs[r], outputs[0]) {
			t.Fatalf("%s: rank %d and rank 0 disagree", desc, r)
		}
	}
	got := outputs[0]
	count := len(got) / dt.Size()
	if !dt.IsFloat() {
		want := append([]byte(nil), inputs[0]...)
		for r := 1; r < n; r++ {
			want = refReduce(dt, op, want, inputs[r])
		}
		if op == tensor.Average {
			divideInt(dt, want, n)
		}
		if !bytes.Equal(got, want) {
			i, _ := sameValues(dt, got, want)
			t.Fatalf("%s: element %d of %d differs: got % x want % x", desc, i, count,
				got[i*dt.Size():(i+1)*dt.Size()], want[i*dt.Size():(i+1)*dt.Size()])
		}
		return
	}
	eps := epsilon(dt)
	for i := range count {
		var want, mag float64
		for r := range n {
			in := append([]byte(nil), inputs[r][i*dt.Size():(i+1)*dt.Size()]...)
			_ = Scale(dt, in, pre)
			x := getFloat(dt, in, 0)
			switch {
			case r == 0:
				want, mag = x, math.Abs(x)
			case op == tensor.Sum || op == tensor.Average:
				want += x
				mag += math.Abs(x)
			case op == tensor.Product:
				want *= x
				mag *= math.Abs(x)
			case op == tensor.Min:
				want = min(want, x)
				mag = math.Abs(want)
			case op == tensor.Max:
				want = max(want, x)
				mag = math.Abs(want)
			}
		}
		f := post
		if op == tensor.Average {
			f /= float64(n)
		}
		want *= f
		mag *= math.Abs(f)
		tol := eps*float64(2*n+4)*mag + 1e-300
		if g := getFloat(dt, got, i); math.Abs(g-want) > tol {
			t.Fatalf("%s: element %d of %d: got %v want %v (tolerance %g)", desc, i, count, g, want, tol)
		}
	}
}

var primes = []int{2, 3, 5, 7, 11, 13, 31, 127, 257, 1021, 4099}

// TestAllreduceMetamorphic runs random allreduces (op, dtype, count, world
// size, algorithm, segment size, pipe size, shared-memory-style links,
// hosts) against a naive reference. Integer results must be bit-identical
// for every configuration; floats within a tolerance of (2n+4) ulps of the
// magnitude of the terms; every rank must agree bit for bit.
func TestAllreduceMetamorphic(t *testing.T) {
	defer checkGoroutines(t)()
	r := rand.New(rand.NewPCG(42, 7))
	iters := 160
	if testing.Short() {
		iters = 40
	}
	for it := range iters {
		n := 1 + r.IntN(6)
		dt := allDTypes[r.IntN(len(allDTypes))]
		op := allOps[r.IntN(len(allOps))]
		if !opValid(dt, op) {
			op = tensor.Sum
		}
		var count int
		switch r.IntN(5) {
		case 0:
			count = []int{0, 1, 2, 3}[r.IntN(4)]
		case 1:
			count = max(0, n-1-r.IntN(2)) // fewer elements than ranks
		case 2:
			count = primes[r.IntN(len(primes))]
		case 3:
			count = r.IntN(3000)
		default:
			count = 10000 + r.IntN(30000)
		}
		cfg := Config{Algorithm: Algorithm(r.IntN(5))}
		if r.IntN(3) > 0 {
			cfg.SegmentBytes = []int{1, 8, 100, 1000, 4096, 65536}[r.IntN(6)]
		}
		if r.IntN(3) == 0 {
			cfg.SmallBytes = 1 + r.IntN(20000)
		}
		cfg.Hierarchical = r.IntN(2) == 0
		cfg.SingleCopyOff = r.IntN(2) == 0
		var opts []inmem.Option
		pipe := []int{3, 64, 1000, 64 << 10}[r.IntN(4)]
		if count*dt.Size() > 4096 {
			pipe = max(pipe, 1000) // tiny pipes make big ops crawl under -race
		}
		opts = append(opts, inmem.WithPipeBytes(pipe))
		links := []string{"plain", "recv-reducer", "duplex", "duplex-reducer"}[r.IntN(4)]
		switch links {
		case "recv-reducer":
			opts = append(opts, inmem.WithRecvReducer())
		case "duplex":
			opts = append(opts, inmem.WithDuplex())
		case "duplex-reducer":
			opts = append(opts, inmem.WithDuplex(), inmem.WithRecvReducer())
		}
		hosts := "one host"
		if k := 1 + r.IntN(3); n%k == 0 || r.IntN(3) == 0 {
			opts = append(opts, inmem.WithRanksPerHost(k))
			hosts = fmt.Sprintf("%d per host", k)
		}
		pre, post := 1.0, 1.0
		if dt.IsFloat() && r.IntN(2) == 0 {
			pre, post = []float64{0.5, 2, 0.25}[r.IntN(3)], []float64{0.5, 3, 1.0 / 3}[r.IntN(3)]
		}
		desc := fmt.Sprintf("iter %d: n=%d %s %s count=%d %+v %s links %s pre=%v post=%v", it, n, dt, op, count, cfg, hosts, links, pre, post)

		inputs := make([][]byte, n)
		for rank := range n {
			if dt.IsFloat() {
				inputs[rank] = floatInput(r, dt, op, count)
			} else {
				inputs[rank] = randBuf(r, dt, count, false)
			}
		}
		outputs := make([][]byte, n)
		ws := newWorld(t, n, cfg, opts...)
		ctx := testCtx(t)
		errs := ws.each(func(rank int, c *Comm) error {
			outputs[rank] = append([]byte(nil), inputs[rank]...)
			return c.Allreduce(ctx, outputs[rank], dt, op, pre, post)
		})
		ws.close()
		for rank, err := range errs {
			if err != nil {
				t.Fatalf("%s: rank %d: %v", desc, rank, err)
			}
		}
		checkAllreduce(t, desc, dt, op, n, pre, post, inputs, outputs)
	}
}

// TestIntegerAlgorithmsAgree runs the same integer allreduce with every
// algorithm and requires identical bytes.
func TestIntegerAlgorithmsAgree(t *testing.T) {
	defer checkGoroutines(t)()
	r := rand.New(rand.NewPCG(5, 5))
	for _, n := range []int{3, 4, 5} {
		for _, dt := range []tensor.DType{tensor.Int8, tensor.Int32, tensor.Int64, tensor.Uint8, tensor.Uint64} {
			count := 997
			inputs := make([][]byte, n)
			for i := range inputs {
				inputs[i] = randBuf(r, dt, count, false)
			}
			var first []byte
			for _, algo := range []Algorithm{Ring, RecursiveDoubling, Hierarchical} {
				ws := newWorld(t, n, Config{Algorithm: algo, SegmentBytes: 64}, inmem.WithRanksPerHost(2))
				ctx := testCtx(t)
				out := make([][]byte, n)
				ws.mustEach(t, func(rank int, c *Comm) error {
					out[rank] = append([]byte(nil), inputs[rank]...)
					return c.Allreduce(ctx, out[rank], dt, tensor.Product, 1, 1)
				})
				ws.close()
				if first == nil {
					first = out[0]
				} else if !bytes.Equal(first, out[0]) {
					t.Fatalf("n=%d %s: %s differs from ring", n, dt, algo)
				}
			}
		}
	}
}

func TestHierarchical(t *testing.T) {
	defer checkGoroutines(t)()
	r := rand.New(rand.NewPCG(9, 9))
	for _, tc := range []struct{ n, perHost int }{{4, 2}, {6, 3}, {6, 2}} {
		t.Run(fmt.Sprintf("%dx%d", tc.n/tc.perHost, tc.perHost), func(t *testing.T) {
			for _, count := range []int{0, 1, 5, 1001, 40000} {
				ws := newWorld(t, tc.n, Config{Algorithm: Hierarchical, SegmentBytes: 512}, inmem.WithRanksPerHost(tc.perHost))
				if !ws.comms[0].hierOK || len(ws.comms[0].cross) != tc.n/tc.perHost {
					t.Fatalf("topology: hierOK %v cross %v", ws.comms[0].hierOK, ws.comms[0].cross)
				}
				inputs := make([][]byte, tc.n)
				out := make([][]byte, tc.n)
				for i := range inputs {
					inputs[i] = randBuf(r, tensor.Int32, count, false)
				}
				ctx := testCtx(t)
				ws.mustEach(t, func(rank int, c *Comm) error {
					out[rank] = append([]byte(nil), inputs[rank]...)
					return c.Allreduce(ctx, out[rank], tensor.Int32, tensor.Average, 1, 1)
				})
				ws.close()
				checkAllreduce(t, fmt.Sprintf("count %d", count), tensor.Int32, tensor.Average, tc.n, 1, 1, inputs, out)
			}
		})
	}
}

func TestAllgatherv(t *testing.T) {
	defer checkGoroutines(t)()
	r := rand.New(rand.NewPCG(11, 3))
	for it := range 40 {
		n := 1 + r.IntN(6)
		counts := make([]int, n)
		for i := range counts {
			switch r.IntN(3) {
			case 0: // zero
			case 1:
				counts[i] = r.IntN(50)
			default:
				counts[i] = r.IntN(30000)
			}
		}
		seg := []int{1, 7, 1000, 0}[r.IntN(4)]
		ws := newWorld(t, n, Config{SegmentBytes: seg}, inmem.WithPipeBytes([]int{5, 4096, 64 << 10}[r.IntN(3)]))
		sends := make([][]byte, n)
		var want []byte
		for i := range n {
			sends[i] = randBuf(r, tensor.Uint8, counts[i], false)
			want = append(want, sends[i]...)
		}
		recvs := make([][]byte, n)
		ctx := testCtx(t)
		ws.mustEach(t, func(rank int, c *Comm) error {
			recvs[rank] = make([]byte, len(want))
			return c.Allgatherv(ctx, sends[rank], recvs[rank], counts)
		})
		ws.close()
		for rank := range n {
			if !bytes.Equal(recvs[rank], want) {
				t.Fatalf("iter %d n=%d counts %v: rank %d got a different gather", it, n, counts, rank)
			}
		}
	}
}

func TestBroadcastEveryRoot(t *testing.T) {
	defer checkGoroutines(t)()
	r := rand.New(rand.NewPCG(12, 3))
	for _, n := range []int{1, 2, 3, 5, 6} {
		for root := range n {
			for _, size := range []int{0, 1, 100, 70000, 300001} {
				ws := newWorld(t, n, Config{SegmentBytes: 4096}, inmem.WithPipeBytes(1000))
				data := randBuf(r, tensor.Uint8, size, false)
				bufs := make([][]byte, n)
				ctx := testCtx(t)
				ws.mustEach(t, func(rank int, c *Comm) error {
					bufs[rank] = make([]byte, size)
					if rank == root {
						copy(bufs[rank], data)
					}
					return c.Broadcast(ctx, bufs[rank], root)
				})
				ws.close()
				for rank := range n {
					if !bytes.Equal(bufs[rank], data) {
						t.Fatalf("n=%d root=%d size=%d: rank %d differs", n, root, size, rank)
					}
				}
			}
		}
	}
}

func TestAlltoallv(t *testing.T) {
	defer checkGoroutines(t)()
	r := rand.New(rand.NewPCG(13, 3))
	for it := range 30 {
		n := 1 + r.IntN(6)
		// splits[i][j]: bytes rank i sends to rank j.
		splits := make([][]int, n)
		sends := make([][]byte, n)
		for i := range n {
			splits[i] = make([]int, n)
			total := 0
			for j := range n {
				if r.IntN(4) > 0 {
					splits[i][j] = r.IntN([]int{10, 5000, 100000}[r.IntN(3)])
				}
				total += splits[i][j]
			}
			sends[i] = randBuf(r, tensor.Uint8, total, false)
		}
		ws := newWorld(t, n, Config{}, inmem.WithPipeBytes([]int{16, 4096, 64 << 10}[r.IntN(3)]))
		recvs := make([][]byte, n)
		rcounts := make([][]int, n)
		ctx := testCtx(t)
		ws.mustEach(t, func(rank int, c *Comm) error {
			var err error
			recvs[rank], rcounts[rank], err = c.Alltoallv(ctx, sends[rank], splits[rank])
			return err
		})
		ws.close()
		for j := range n {
			var want []byte
			for i := range n {
				off := 0
				for k := range j {
					off += splits[i][k]
				}
				want = append(want, sends[i][off:off+splits[i][j]]...)
				if rcounts[j][i] != splits[i][j] {
					t.Fatalf("iter %d: rank %d got count %d from rank %d, want %d", it, j, rcounts[j][i], i, splits[i][j])
				}
			}
			if !bytes.Equal(recvs[j], want) {
				t.Fatalf("iter %d n=%d: rank %d received different bytes", it, n, j)
			}
		}
	}
}

func TestReduceScatter(t *testing.T) {
	defer checkGoroutines(t)()
	r := rand.New(rand.NewPCG(14, 3))
	for it := range 40 {
		n := 1 + r.IntN(6)
		dt := []tensor.DType{tensor.Int32, tensor.Int64, tensor.Uint8, tensor.Float64}[r.IntN(4)]
		op := []tensor.ReduceOp{tensor.Sum, tensor.Average, tensor.Max, tensor.Min}[r.IntN(4)]
		counts := make([]int, n)
		total := 0
		for i := range counts {
			if r.IntN(4) > 0 {
				counts[i] = r.IntN([]int{3, 1000, 20000}[r.IntN(3)])
			}
			total += counts[i]
		}
		inputs := make([][]byte, n)
		for i := range inputs {
			if dt.IsFloat() {
				inputs[i] = floatInput(r, dt, op, total)
			} else {
				inputs[i] = randBuf(r, dt, total, false)
			}
		}
		cfg := Config{SegmentBytes: []int{8, 1000, 0}[r.IntN(3)]}
		opts := []inmem.Option{inmem.WithPipeBytes([]int{8, 4096}[r.IntN(2)])}
		if r.IntN(2) == 0 {
			opts = append(opts, inmem.WithRecvReducer())
		}
		ws := newWorld(t, n, cfg, opts...)
		mine := make([][]byte, n)
		ctx := testCtx(t)
		ws.mustEach(t, func(rank int, c *Comm) error {
			buf := append([]byte(nil), inputs[rank]...)
			m, err := c.ReduceScatter(ctx, buf, counts, dt, op)
			mine[rank] = m
			return err
		})
		ws.close()
		// The reference: a whole allreduce, cut into the parts.
		full := make([][]byte, n)
		for rank := range n {
			off := 0
			for k := range rank {
				off += counts[k] * dt.Size()
			}
			part := func(b []byte) []byte { return b[off : off+counts[rank]*dt.Size()] }
			for i := range n {
				full[i] = part(inputs[i])
			}
			outs := make([][]byte, n)
			for i := range outs {
				outs[i] = mine[rank]
			}
			checkAllreduce(t, fmt.Sprintf("iter %d rank %d n=%d %s %s counts %v", it, rank, n, dt, op, counts), dt, op, n, 1, 1, full, outs)
		}
	}
}

func TestBarrier(t *testing.T) {
	defer checkGoroutines(t)()
	for _, n := range []int{1, 2, 3, 5, 6} {
		ws := newWorld(t, n, Config{})
		ctx := testCtx(t)
		var entered atomic.Int32
		late := n - 1
		ws.mustEach(t, func(rank int, c *Comm) error {
			for round := range 3 {
				if rank != late {
					entered.Add(1)
				} else {
					// The last rank enters only once all others are in:
					// nobody may leave before it arrives.
					for entered.Load() < int32((round+1)*(n-1)) {
						runtime.Gosched()
					}
					entered.Add(1)
				}
				if err := c.Barrier(ctx); err != nil {
					return err
				}
				if got := entered.Load(); got < int32((round+1)*n) {
					return fmt.Errorf("left barrier round %d with only %d entries", round, got)
				}
			}
			return nil
		})
		ws.close()
	}
}

func TestConfigValidation(t *testing.T) {
	w := inmem.MustWorld(2)
	defer w.Close()
	for _, tc := range []struct {
		cfg   Config
		field string
	}{
		{Config{SegmentBytes: -1}, "SegmentBytes"},
		{Config{SegmentBytes: 2 << 20}, "SegmentBytes"},
		{Config{SmallBytes: -5}, "SmallBytes"},
		{Config{Algorithm: 9}, "Algorithm"},
	} {
		_, err := NewComm(w.Mesh(0), tc.cfg)
		if !errors.Is(err, tensor.ErrInvalid) || !bytes.Contains([]byte(err.Error()), []byte(tc.field)) {
			t.Errorf("NewComm(%+v) = %v, want ErrInvalid naming %s", tc.cfg, err, tc.field)
		}
	}
	c, err := NewComm(w.Mesh(0), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.Config(); got != DefaultConfig() {
		t.Errorf("defaults: %+v, want %+v", got, DefaultConfig())
	}
	ctx := context.Background()
	bad := []error{
		c.Allreduce(ctx, make([]byte, 6), tensor.Float32, tensor.Sum, 1, 1),
		c.Allreduce(ctx, make([]byte, 8), tensor.Float32, tensor.BitOr, 1, 1),
		c.Broadcast(ctx, make([]byte, 8), 2),
		c.Allgatherv(ctx, make([]byte, 3), make([]byte, 5), []int{3, 3}),
	}
	_, _, e := c.Alltoallv(ctx, make([]byte, 3), []int{1, 1})
	bad = append(bad, e)
	_, e = c.ReduceScatter(ctx, make([]byte, 12), []int{1, 1}, tensor.Int32, tensor.Sum)
	bad = append(bad, e)
	for i, err := range bad {
		if !errors.Is(err, tensor.ErrInvalid) {
			t.Errorf("bad call %d: %v, want ErrInvalid", i, err)
		}
	}
}

// TestKilledRank kills one rank in the middle of a large allreduce: every
// other rank must fail well before its deadline with ErrPeerLost in a
// *transport.PeerError; the ranks that talk to the dead rank must name it.
// No goroutine may be left behind.
func TestKilledRank(t *testing.T) {
	defer checkGoroutines(t)()
	for _, tc := range []struct {
		n, victim int
		algo      Algorithm
		duplex    bool
	}{{2, 1, Ring, false}, {2, 0, Ring, true}, {2, 1, Hierarchical, true}, {3, 1, Ring, false}, {4, 2, Ring, false}, {5, 0, RecursiveDoubling, false}, {4, 1, RecursiveDoubling, true}, {4, 3, Hierarchical, false}} {
		t.Run(fmt.Sprintf("n%d-kill%d-%s-duplex=%v", tc.n, tc.victim, tc.algo, tc.duplex), func(t *testing.T) {
			opts := []inmem.Option{inmem.WithRanksPerHost(2)}
			if tc.duplex {
				opts = append(opts, inmem.WithDuplex())
			}
			ws := newWorld(t, tc.n, Config{Algorithm: tc.algo, SegmentBytes: 16 << 10}, opts...)
			defer ws.close()
			const size = 4 << 20
			ws.w.KillAfter(tc.victim, size/3)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			errs := ws.each(func(rank int, c *Comm) error {
				return c.Allreduce(ctx, make([]byte, size), tensor.Float32, tensor.Sum, 1, 1)
			})
			if ctx.Err() != nil {
				t.Fatalf("the deadline passed (%v): a rank hung instead of failing", time.Since(start))
			}
			named := 0
			for rank, err := range errs {
				if rank == tc.victim {
					if err == nil {
						t.Errorf("killed rank %d succeeded", rank)
					}
					continue
				}
				var pe *transport.PeerError
				if !errors.Is(err, transport.ErrPeerLost) || !errors.As(err, &pe) {
					t.Fatalf("rank %d: %v, want ErrPeerLost in a *transport.PeerError", rank, err)
				}
				if pe.Rank == tc.victim {
					named++
				}
				// A rank that only receives from the victim names it.
				if tc.algo == Ring && rank == (tc.victim+1)%tc.n && pe.Rank != tc.victim {
					t.Errorf("rank %d (right of the victim): %v does not name rank %d", rank, err, tc.victim)
				}
			}
			if named == 0 {
				t.Errorf("no rank named the killed rank %d: %v", tc.victim, errs)
			}
			// The Comm stays failed, without touching the network.
			if err := ws.comms[(tc.victim+1)%tc.n].Barrier(ctx); err == nil {
				t.Error("Barrier after a failed op succeeded")
			}
		})
	}
}

// TestDeadline: one rank never joins; the others give up at their deadline
// with an error wrapping context.DeadlineExceeded.
func TestDeadline(t *testing.T) {
	defer checkGoroutines(t)()
	ws := newWorld(t, 3, Config{})
	defer ws.close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	errs := ws.each(func(rank int, c *Comm) error {
		if rank == 2 {
			return nil
		}
		return c.Allreduce(ctx, make([]byte, 1<<20), tensor.Float32, tensor.Sum, 1, 1)
	})
	for rank, err := range errs[:2] {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("rank %d: %v, want DeadlineExceeded", rank, err)
		}
	}
}

// cancelMesh wraps a mesh so that ctx is cancelled once the rank has sent
// a number of bytes: a deterministic "cancel in the middle of an op".
type cancelMesh struct {
	transport.Mesh
	left   atomic.Int64
	cancel context.CancelFunc
}

type cancelLink struct {
	transport.Link
	m *cancelMesh
}

func (m *cancelMesh) Link(p int) transport.Link {
	l := m.Mesh.Link(p)
	if l == nil {
		return nil
	}
	return cancelLink{l, m}
}

func (l cancelLink) Send(ctx context.Context, p []byte) error {
	err := l.Link.Send(ctx, p)
	if l.m.left.Add(-int64(len(p))) <= 0 {
		l.m.cancel()
	}
	return err
}

// TestCancelPropagates: one rank's ctx is cancelled mid-op; the others have
// no deadline and must still fail (the cancelled rank closes its mesh).
// Also a rank whose ctx is done before the op starts.
func TestCancelPropagates(t *testing.T) {
	defer checkGoroutines(t)()
	for _, already := range []bool{false, true} {
		w := inmem.MustWorld(4)
		ctx1, cancel1 := context.WithCancel(context.Background())
		cm := &cancelMesh{Mesh: w.Mesh(1), cancel: cancel1}
		cm.left.Store(100 << 10)
		if already {
			cancel1()
		}
		ws := &world{w: w}
		for r := range 4 {
			var m transport.Mesh = w.Mesh(r)
			if r == 1 {
				m = cm
			}
			c, err := NewComm(m, Config{Algorithm: Ring, SegmentBytes: 4096})
			if err != nil {
				t.Fatal(err)
			}
			ws.comms = append(ws.comms, c)
		}
		errs := ws.each(func(rank int, c *Comm) error {
			ctx := context.Background()
			if rank == 1 {
				ctx = ctx1
			}
			return c.Allreduce(ctx, make([]byte, 1<<20), tensor.Float32, tensor.Sum, 1, 1)
		})
		ws.close()
		cancel1()
		if !errors.Is(errs[1], context.Canceled) {
			t.Errorf("already=%v: cancelled rank: %v", already, errs[1])
		}
		for _, r := range []int{0, 2, 3} {
			if !errors.Is(errs[r], transport.ErrPeerLost) {
				t.Errorf("already=%v: rank %d: %v, want ErrPeerLost", already, r, errs[r])
			}
		}
	}
}

// TestCloseInterrupts: Close during an op whose peers never come makes it
// return ErrClosed, and later ops fail at once.
func TestCloseInterrupts(t *testing.T) {
	defer checkGoroutines(t)()
	ws := newWorld(t, 2, Config{})
	defer ws.close()
	c := ws.comms[0]
	done := make(chan error, 1)
	go func() {
		done <- c.Allreduce(context.Background(), make([]byte, 1<<20), tensor.Float32, tensor.Sum, 1, 1)
	}()
	_ = c.Close()
	if err := <-done; !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("op interrupted by Close: %v", err)
	}
	if err := c.Barrier(context.Background()); !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("op after Close: %v", err)
	}
	_ = c.Close()
}

// TestSequence runs a mixed sequence of operations on one set of Comms,
// as the background loop would.
func TestSequence(t *testing.T) {
	defer checkGoroutines(t)()
	for _, n := range []int{2, 3, 4} {
		ws := newWorld(t, n, Config{SegmentBytes: 1024, SmallBytes: 2048}, inmem.WithPipeBytes(4096), inmem.WithRanksPerHost(2))
		ctx := testCtx(t)
		ws.mustEach(t, func(rank int, c *Comm) error {
			for i := range 30 {
				size := []int{4, 100, 3000, 50000}[i%4]
				buf := make([]byte, size*4)
				for j := range size {
					as[int32](buf)[j] = int32(rank + j)
				}
				if err := c.Allreduce(ctx, buf, tensor.Int32, tensor.Sum, 1, 1); err != nil {
					return err
				}
				for j := range size {
					if want := int32(n*j + n*(n-1)/2); as[int32](buf)[j] != want {
						return fmt.Errorf("op %d element %d: %d want %d", i, j, as[int32](buf)[j], want)
					}
				}
				if err := c.Barrier(ctx); err != nil {
					return err
				}
				b := make([]byte, size)
				if rank == i%n {
					b[size-1] = byte(i)
				}
				if err := c.Broadcast(ctx, b, i%n); err != nil {
					return err
				}
				if b[size-1] != byte(i) {
					return fmt.Errorf("broadcast %d: wrong byte", i)
				}
			}
			return nil
		})
		ws.close()
	}
}

func BenchmarkAllreduce(b *testing.B) {
	for _, n := range []int{2, 4} {
		for _, size := range []int{4 << 10, 1 << 20, 16 << 20} {
			for _, rr := range []bool{false, true} {
				name := fmt.Sprintf("n%d/%dKiB", n, size>>10)
				if rr {
					name += "/recvreduce"
				}
				b.Run(name, func(b *testing.B) {
					opts := []inmem.Option{inmem.WithPipeBytes(1 << 20)}
					if rr {
						opts = append(opts, inmem.WithRecvReducer())
					}
					w := inmem.MustWorld(n, opts...)
					defer w.Close()
					comms := make([]*Comm, n)
					bufs := make([][]byte, n)
					for r := range n {
						comms[r], _ = NewComm(w.Mesh(r), Config{})
						defer comms[r].Close()
						bufs[r] = make([]byte, size)
					}
					runAllreduceBench(b, comms, bufs)
				})
			}
		}
	}
}

// runAllreduceBench times b.N float32 sum allreduces of every rank's buffer,
// rank 0 on the benchmark's goroutine and the others beside it.
func runAllreduceBench(b *testing.B, comms []*Comm, bufs [][]byte) {
	ctx := context.Background()
	b.SetBytes(int64(len(bufs[0])))
	b.ResetTimer()
	var wg sync.WaitGroup
	for r := 1; r < len(comms); r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range b.N {
				if err := comms[r].Allreduce(ctx, bufs[r], tensor.Float32, tensor.Sum, 1, 1); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	for range b.N {
		if err := comms[0].Allreduce(ctx, bufs[0], tensor.Float32, tensor.Sum, 1, 1); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
}

// TestSpinsByLink: the duplex engine retries longer over memory links
// (shared memory, where a retry is two loads) than over links whose retry
// is a system call, and not at all when ranks outnumber cores.
func TestSpinsByLink(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []inmem.Option
		want int
	}{
		{"memory", []inmem.Option{inmem.WithDuplex(), inmem.WithRecvReducer(), inmem.WithRanksPerHost(1)}, memorySpins},
		{"socket-like", []inmem.Option{inmem.WithDuplex(), inmem.WithRanksPerHost(1)}, duplexSpins},
		{"oversubscribed memory", []inmem.Option{inmem.WithDuplex(), inmem.WithRecvReducer()}, 1},
	} {
		n := 2
		if tc.want == 1 {
			n = runtime.NumCPU() + 1
		}
		ws := newWorld(t, n, Config{}, tc.opts...)
		if s := ws.comms[0].spins; s != tc.want {
			t.Errorf("%s: %d spins, want %d", tc.name, s, tc.want)
		}
		ws.close()
	}
}
