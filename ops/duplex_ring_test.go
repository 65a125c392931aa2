package ops

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/inmem"
)

// TestDuplexRingN: rings of 2-5 ranks over Duplex links run on the op's
// goroutine (no sender hand-off); allreduce (ring and hierarchical),
// allgatherv and reduce-scatter against references, with pipes small
// enough that sends and receives interleave in pieces (and, for two ranks
// over links that reduce, that the reduce-and-forward of a segment goes
// partly in one pass and partly reduced then queued).
func TestDuplexRingN(t *testing.T) {
	defer checkGoroutines(t)()
	r := rand.New(rand.NewPCG(8, 13))
	iters := 8
	if testing.Short() {
		iters = 4
	}
	for n := 2; n <= 5; n++ {
		for _, reducer := range []bool{false, true} {
			t.Run(fmt.Sprintf("np%d-reducer=%v", n, reducer), func(t *testing.T) {
				for it := range iters {
					opts := []inmem.Option{inmem.WithDuplex(), inmem.WithPipeBytes([]int{61, 4096, 64 << 10}[it%3])}
					if reducer {
						opts = append(opts, inmem.WithRecvReducer())
					}
					if it%4 == 3 && n%2 == 0 {
						opts = append(opts, inmem.WithRanksPerHost(2))
					}
					cfg := Config{Algorithm: []Algorithm{Ring, Hierarchical}[it%2], SegmentBytes: []int{8, 100, 4096}[it%3], SingleCopyOff: true}
					dt := allDTypes[r.IntN(len(allDTypes))]
					op := allOps[r.IntN(len(allOps))]
					if !opValid(dt, op) {
						op = tensor.Sum
					}
					count := []int{1, n - 1, 1021, 3000}[it%4]
					desc := fmt.Sprintf("np=%d it=%d %s %s count=%d %+v", n, it, dt, op, count, cfg)
					ws := newWorld(t, n, cfg, opts...)
					checkRingOps(t, ws, r, desc, dt, op, count)
					ws.close()
				}
			})
		}
	}
}

// checkRingOps runs an allreduce, an allgatherv and a reduce-scatter.
func checkRingOps(t *testing.T, ws *world, r *rand.Rand, desc string, dt tensor.DType, op tensor.ReduceOp, count int) {
	t.Helper()
	n := len(ws.comms)
	ctx := testCtx(t)
	inputs, outputs := make([][]byte, n), make([][]byte, n)
	for rank := range n {
		if dt.IsFloat() {
			inputs[rank] = floatInput(r, dt, op, count)
		} else {
			inputs[rank] = randBuf(r, dt, count, false)
		}
	}
	ws.mustEach(t, func(rank int, c *Comm) error {
		outputs[rank] = append([]byte(nil), inputs[rank]...)
		return c.Allreduce(ctx, outputs[rank], dt, op, 1, 1)
	})
	checkAllreduce(t, desc+" allreduce", dt, op, n, 1, 1, inputs, outputs)

	counts := make([]int, n)
	var want []byte
	sends := make([][]byte, n)
	for q := range n {
		counts[q] = r.IntN(2 * count)
		sends[q] = randBuf(r, tensor.Uint8, counts[q], false)
		want = append(want, sends[q]...)
	}
	ws.mustEach(t, func(rank int, c *Comm) error {
		recv := make([]byte, len(want))
		if err := c.Allgatherv(ctx, sends[rank], recv, counts); err != nil {
			return err
		}
		if !bytes.Equal(recv, want) {
			return fmt.Errorf("%s allgatherv: rank %d has wrong bytes", desc, rank)
		}
		return nil
	})

	ins := make([][]byte, n)
	var sum []byte
	for q := range n {
		ins[q] = randBuf(r, tensor.Int64, len(want), false)
		if q == 0 {
			sum = append([]byte(nil), ins[q]...)
		} else {
			sum = refReduce(tensor.Int64, tensor.Sum, sum, ins[q])
		}
	}
	offs := prefix(counts, 8)
	ws.mustEach(t, func(rank int, c *Comm) error {
		mine, err := c.ReduceScatter(ctx, append([]byte(nil), ins[rank]...), counts, tensor.Int64, tensor.Sum)
		if err != nil {
			return err
		}
		if !bytes.Equal(mine, sum[offs[rank]:offs[rank+1]]) {
			return fmt.Errorf("%s reducescatter: rank %d's part is wrong", desc, rank)
		}
		return nil
	})
}

// TestDuplexRingNDeadline: a rank of a 3-rank ring over Duplex links that
// never calls leaves the others to their deadline (or to the fail-stop of
// the first to reach it), and their errors name a peer they waited on
// (through the link, as every wait does).
func TestDuplexRingNDeadline(t *testing.T) {
	defer checkGoroutines(t)()
	for _, reducer := range []bool{false, true} {
		opts := []inmem.Option{inmem.WithDuplex(), inmem.WithPipeBytes(4096)}
		if reducer {
			opts = append(opts, inmem.WithRecvReducer())
		}
		ws := newWorld(t, 3, Config{SingleCopyOff: true, SegmentBytes: 1024}, opts...)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		errs := ws.each(func(rank int, c *Comm) error {
			if rank == 2 {
				return nil
			}
			return c.Allreduce(ctx, make([]byte, 1<<20), tensor.Float32, tensor.Sum, 1, 1)
		})
		cancel()
		ws.close()
		deadline := false
		for rank, err := range errs[:2] {
			var pe *transport.PeerError
			deadline = deadline || errors.Is(err, context.DeadlineExceeded)
			if !errors.As(err, &pe) || !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, transport.ErrPeerLost) {
				t.Errorf("reducer=%v rank %d: %v, want DeadlineExceeded or a lost peer, naming the peer", reducer, rank, err)
			}
		}
		if !deadline {
			t.Errorf("reducer=%v: no rank reached its deadline: %v", reducer, errs)
		}
	}
}

// TestNoSpinningWhenOversubscribed: with more ranks on the host than cores
// the duplex engine yields at once instead of retrying.
func TestNoSpinningWhenOversubscribed(t *testing.T) {
	n := runtime.NumCPU() + 1
	ws := newWorld(t, n, Config{})
	defer ws.close()
	if s := ws.comms[0].spins; s != 1 {
		t.Errorf("%d ranks on %d cores: %d spins, want 1", n, runtime.NumCPU(), s)
	}
	ws2 := newWorld(t, n, Config{}, inmem.WithRanksPerHost(1))
	defer ws2.close()
	if s := ws2.comms[0].spins; s != duplexSpins {
		t.Errorf("one rank per host: %d spins, want %d", s, duplexSpins)
	}
	// Links that reduce from their own memory (shared memory) wait longer
	// before blocking, unless ranks outnumber cores.
	for _, tc := range []struct {
		ws                  *world
		reducer             bool
		wantSpin, wantYield int
	}{
		{newWorld(t, 2, Config{}, inmem.WithDuplex(), inmem.WithRecvReducer(), inmem.WithRanksPerHost(1)), true, shmSpins, shmYields},
		{newWorld(t, 2, Config{}, inmem.WithDuplex(), inmem.WithRanksPerHost(1)), false, duplexSpins, duplexYields},
		{newWorld(t, n, Config{}, inmem.WithDuplex(), inmem.WithRecvReducer()), true, 1, shmYields},
	} {
		if d, ok := tc.ws.comms[0].duplexTo(1); !ok || d.spins != tc.wantSpin || d.yields != tc.wantYield {
			t.Errorf("%d ranks, reducer %v: duplex %v (%+v), want %d spins and %d yields",
				len(tc.ws.comms), tc.reducer, ok, d, tc.wantSpin, tc.wantYield)
		}
		tc.ws.close()
	}
}
