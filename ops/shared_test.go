//go:build linux

package ops

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/gorovod/gorovod/internal/tensor"
	"github.com/gorovod/gorovod/internal/transport/inmem"
	"github.com/gorovod/gorovod/internal/transport/shm"
)

var sharedLinks = []inmem.Option{inmem.WithPipeBytes(64 << 10), inmem.WithDuplex(), inmem.WithRecvReducer()}

// sharedCopies returns, per rank, a buffer from Alloc holding in[rank].
func sharedCopies(t *testing.T, in [][]byte) [][]byte {
	t.Helper()
	out := make([][]byte, len(in))
	for r, b := range in {
		m, err := Alloc(len(b))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := Free(m); err != nil {
				t.Errorf("Free: %v", err)
			}
		})
		copy(m, b)
		out[r] = m
	}
	return out
}

func sharedRan(ws *world) []int {
	ran := make([]int, len(ws.comms))
	for r, c := range ws.comms {
		ran[r] = c.shr.ran
	}
	return ran
}

// TestSharedAllreduce: buffers from Alloc on every rank run on the shared
// path, at np 2..4, for every dtype and op, with pre- and postscale, and
// give the reference result, the same bits on every rank.
func TestSharedAllreduce(t *testing.T) {
	defer checkGoroutines(t)()
	r := rand.New(rand.NewPCG(3, 9))
	for n := 2; n <= 4; n++ {
		ws := newWorld(t, n, Config{SegmentBytes: 4096}, sharedLinks...)
		ctx := testCtx(t)
		for it := range 8 {
			dt := allDTypes[r.IntN(len(allDTypes))]
			op := allOps[r.IntN(len(allOps))]
			if !opValid(dt, op) {
				op = tensor.Sum
			}
			pre, post := 1.0, 1.0
			if it%3 == 1 && dt.IsFloat() && op == tensor.Sum {
				pre, post = 0.5, 3
			}
			count := sharedMinBytes/dt.Size() + r.IntN(5000)
			inputs := make([][]byte, n)
			for q := range n {
				if dt.IsFloat() {
					inputs[q] = floatInput(r, dt, op, count)
				} else {
					inputs[q] = randBuf(r, dt, count, false)
				}
			}
			outputs := sharedCopies(t, inputs)
			before := sharedRan(ws)
			ws.mustEach(t, func(q int, c *Comm) error {
				return c.Allreduce(ctx, outputs[q], dt, op, pre, post)
			})
			desc := fmt.Sprintf("np=%d %s %s count=%d", n, dt, op, count)
			checkAllreduce(t, desc, dt, op, n, pre, post, inputs, outputs)
			for q, ran := range sharedRan(ws) {
				if ran != before[q]+1 {
					t.Fatalf("%s: rank %d did not run on the shared buffers", desc, q)
				}
			}
		}
		ws.close()
	}
}

// TestSharedBroadcast: every root, np 2..4, odd lengths.
func TestSharedBroadcast(t *testing.T) {
	defer checkGoroutines(t)()
	r := rand.New(rand.NewPCG(4, 1))
	for n := 2; n <= 4; n++ {
		ws := newWorld(t, n, Config{}, sharedLinks...)
		ctx := testCtx(t)
		for root := range n {
			size := sharedMinBytes + r.IntN(9999)
			want := randBuf(r, tensor.Uint8, size, false)
			in := make([][]byte, n)
			for q := range n {
				in[q] = make([]byte, size)
			}
			in[root] = want
			bufs := sharedCopies(t, in)
			ws.mustEach(t, func(q int, c *Comm) error { return c.Broadcast(ctx, bufs[q], root) })
			for q := range n {
				if !bytes.Equal(bufs[q], want) {
					t.Fatalf("np=%d root %d: rank %d's buffer differs", n, root, q)
				}
			}
		}
		if ran := sharedRan(ws); ran[0] != n {
			t.Fatalf("np=%d: %d of %d broadcasts ran on shared buffers", n, ran[0], n)
		}
		ws.close()
	}
}

// TestSharedFallsBack: one rank's buffer from the heap makes every rank
// take the usual path (right result), and the ranks then skip the header
// for a while, all alike; all-shared ops run shared again afterwards.
func TestSharedFallsBack(t *testing.T) {
	defer checkGoroutines(t)()
	const n, count = 3, sharedMinBytes / 4
	ws := newWorld(t, n, Config{}, sharedLinks...)
	defer ws.close()
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(8, 8))
	run := func(heapRank int) {
		t.Helper()
		inputs := make([][]byte, n)
		for q := range n {
			inputs[q] = randBuf(r, tensor.Int32, count, false)
		}
		bufs := sharedCopies(t, inputs)
		if heapRank >= 0 {
			bufs[heapRank] = append([]byte(nil), inputs[heapRank]...)
		}
		ws.mustEach(t, func(q int, c *Comm) error { return c.Allreduce(ctx, bufs[q], tensor.Int32, tensor.Sum, 1, 1) })
		checkAllreduce(t, "fallback", tensor.Int32, tensor.Sum, n, 1, 1, inputs, bufs)
	}
	run(1)
	for q, c := range ws.comms {
		if c.shr.ran != 0 || c.shr.skip != 1 {
			t.Fatalf("rank %d after a heap buffer: ran %d skip %d, want 0 and 1", q, c.shr.ran, c.shr.skip)
		}
	}
	run(-1) // skipped: the backoff
	run(2)  // unshared again: the backoff doubles
	for q, c := range ws.comms {
		if c.shr.ran != 0 || c.shr.skip != 2 {
			t.Fatalf("rank %d: ran %d skip %d, want 0 and 2", q, c.shr.ran, c.shr.skip)
		}
	}
	run(-1)
	run(-1)
	run(-1) // the header again, all shared
	for q, c := range ws.comms {
		if c.shr.ran != 1 || c.shr.wait != 0 {
			t.Fatalf("rank %d: ran %d wait %d, want 1 and 0", q, c.shr.ran, c.shr.wait)
		}
	}
}

// TestSharedMapFailure: when a peer cannot map a region, every rank turns
// shared ops off for the Comm and computes right the usual way.
func TestSharedMapFailure(t *testing.T) {
	defer checkGoroutines(t)()
	const n, count = 3, sharedMinBytes / 4
	r := rand.New(rand.NewPCG(2, 2))
	inputs := make([][]byte, n)
	for q := range n {
		inputs[q] = randBuf(r, tensor.Int64, count, false)
	}
	bufs := sharedCopies(t, inputs)
	bad, _, _ := regionOf(bufs[0])
	defer func(f func(shm.RegionHandle) ([]byte, error)) { mapRegion = f }(mapRegion)
	mapRegion = func(h shm.RegionHandle) ([]byte, error) {
		if h.ID == bad.ID {
			return nil, errors.New("injected")
		}
		return shm.MapRegion(h)
	}
	ws := newWorld(t, n, Config{}, sharedLinks...)
	defer ws.close()
	ctx := testCtx(t)
	ws.mustEach(t, func(q int, c *Comm) error { return c.Allreduce(ctx, bufs[q], tensor.Int64, tensor.Sum, 1, 1) })
	checkAllreduce(t, "map failure", tensor.Int64, tensor.Sum, n, 1, 1, inputs, bufs)
	for q, c := range ws.comms {
		if !c.shr.off || c.shr.ran != 0 {
			t.Fatalf("rank %d: off %v ran %d, want off and none", q, c.shr.off, c.shr.ran)
		}
	}
}

// TestSharedRegionReuse: many regions allocated and freed between ops (so
// descriptors are reused and the lists overflow) still give right results,
// and no Comm keeps more than sharedKeep mappings per peer.
func TestSharedRegionReuse(t *testing.T) {
	defer checkGoroutines(t)()
	const n = 2
	defer func(v int) { sharedDedicatedBytes = v }(sharedDedicatedBytes)
	sharedDedicatedBytes = 1 // a region per buffer: many regions, descriptors reused
	ws := newWorld(t, n, Config{}, sharedLinks...)
	defer ws.close()
	ctx := testCtx(t)
	r := rand.New(rand.NewPCG(5, 5))
	var keep [][]byte // some stay allocated, so new ones get new descriptors
	for it := range sharedKeep + 20 {
		count := sharedMinBytes/8 + it
		inputs := [][]byte{randBuf(r, tensor.Int64, count, false), randBuf(r, tensor.Int64, count, false)}
		bufs := make([][]byte, n)
		for q := range n {
			m, err := Alloc(len(inputs[q]))
			if err != nil {
				t.Fatal(err)
			}
			copy(m, inputs[q])
			bufs[q] = m
		}
		ws.mustEach(t, func(q int, c *Comm) error { return c.Allreduce(ctx, bufs[q], tensor.Int64, tensor.Sum, 1, 1) })
		checkAllreduce(t, fmt.Sprintf("iteration %d", it), tensor.Int64, tensor.Sum, n, 1, 1, inputs, bufs)
		for q := range n {
			if it%3 == 0 {
				keep = append(keep, bufs[q])
			} else if err := Free(bufs[q]); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, m := range keep {
		if err := Free(m); err != nil {
			t.Fatal(err)
		}
	}
	for q, c := range ws.comms {
		if c.shr.ran != sharedKeep+20 {
			t.Fatalf("rank %d ran %d shared ops, want %d", q, c.shr.ran, sharedKeep+20)
		}
		for p, l := range c.shr.peers {
			if len(l) > sharedKeep {
				t.Fatalf("rank %d keeps %d regions of rank %d", q, len(l), p)
			}
		}
		if len(c.shr.mine) != len(ws.comms[1-q].shr.peers[q]) {
			t.Fatalf("rank %d's mirror has %d regions, its peer holds %d", q, len(c.shr.mine), len(ws.comms[1-q].shr.peers[q]))
		}
	}
}

// TestAllocFree: sizes, errors, Shared.
func TestAllocFree(t *testing.T) {
	if _, err := Alloc(0); !errors.Is(err, tensor.ErrInvalid) {
		t.Fatalf("Alloc(0): %v, want ErrInvalid", err)
	}
	heap := make([]byte, 100)
	if err := Free(heap); !errors.Is(err, ErrNotShared) || !errors.Is(err, tensor.ErrInvalid) {
		t.Fatalf("Free of heap memory: %v", err)
	}
	m, err := Alloc(10000)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 10000 || !Shared(m) || !Shared(m[5000:6000]) || Shared(heap) {
		t.Fatalf("len %d, Shared %v %v %v", len(m), Shared(m), Shared(m[5000:6000]), Shared(heap))
	}
	for i := range m {
		if m[i] != 0 {
			t.Fatalf("byte %d is %d, want zeroed memory", i, m[i])
		}
	}
	if err := Free(m[1:]); !errors.Is(err, ErrNotShared) {
		t.Fatalf("Free of a slice not at the start: %v", err)
	}
	if err := Free(m); err != nil {
		t.Fatal(err)
	}
	if err := Free(m); !errors.Is(err, ErrNotShared) {
		t.Fatalf("second Free: %v, want ErrNotShared", err)
	}
}

// TestAllocArenas: small buffers share a region (aligned, zeroed, apart),
// a large one gets its own; a region goes when its last buffer is freed.
func TestAllocArenas(t *testing.T) {
	var bufs [][]byte
	for i := range 40 {
		b, err := Alloc(1000 + i)
		if err != nil {
			t.Fatal(err)
		}
		if base(b)%allocAlign != 0 || len(b) != 1000+i || cap(b) != len(b) {
			t.Fatalf("buffer %d: address %#x, len %d cap %d", i, base(b), len(b), cap(b))
		}
		for k := range b {
			if b[k] != 0 {
				t.Fatalf("buffer %d byte %d not zero", i, k)
			}
			b[k] = byte(i + 1)
		}
		bufs = append(bufs, b)
	}
	ids := map[uint64]bool{}
	for i, b := range bufs {
		h, _, _ := regionOf(b)
		ids[h.ID] = true
		for k := range b {
			if b[k] != byte(i+1) {
				t.Fatalf("buffer %d overlaps another (byte %d is %d)", i, k, b[k])
			}
		}
	}
	if len(ids) > 2 { // the arena in use may fill up once
		t.Fatalf("40 small buffers in %d regions, want them to share arenas", len(ids))
	}
	big, err := Alloc(sharedDedicatedBytes)
	if err != nil {
		t.Fatal(err)
	}
	if h, off, _ := regionOf(big); ids[h.ID] || off != 0 {
		t.Fatalf("a %d-byte buffer is at %d of region %d, with small buffers", len(big), off, h.ID)
	}
	if err := Free(big); err != nil || Shared(big) {
		t.Fatalf("Free of the large buffer: %v, still shared %v", err, Shared(big))
	}
	for _, b := range bufs {
		if err := Free(b); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSharedAllgatherReduceScatter: allgatherv (counts differ, one is
// zero) and reduce-scatter of buffers from Alloc, np 2..4.
func TestSharedAllgatherReduceScatter(t *testing.T) {
	defer checkGoroutines(t)()
	r := rand.New(rand.NewPCG(6, 7))
	for n := 2; n <= 4; n++ {
		ws := newWorld(t, n, Config{SegmentBytes: 8192}, sharedLinks...)
		ctx := testCtx(t)
		counts := make([]int, n)
		var want []byte
		sends := make([][]byte, n)
		for q := range n {
			counts[q] = sharedMinBytes/(n-1) + r.IntN(3000)
			if q == 1 {
				counts[q] = 0
			}
			sends[q] = randBuf(r, tensor.Uint8, counts[q], false)
			want = append(want, sends[q]...)
		}
		recvs := sharedCopies(t, func() [][]byte {
			b := make([][]byte, n)
			for q := range b {
				b[q] = make([]byte, len(want))
			}
			return b
		}())
		ws.mustEach(t, func(q int, c *Comm) error { return c.Allgatherv(ctx, sends[q], recvs[q], counts) })
		for q := range n {
			if !bytes.Equal(recvs[q], want) {
				t.Fatalf("np=%d allgatherv: rank %d's result differs", n, q)
			}
		}

		elems := make([]int, n)
		for q := range elems {
			elems[q] = counts[q] // int32 elements per rank
		}
		ins := make([][]byte, n)
		var sum []byte
		for q := range n {
			ins[q] = randBuf(r, tensor.Int32, len(want), false)
			if q == 0 {
				sum = append([]byte(nil), ins[q]...)
			} else {
				sum = refReduce(tensor.Int32, tensor.Sum, sum, ins[q])
			}
		}
		bufs := sharedCopies(t, ins)
		offs := prefix(elems, 4)
		ws.mustEach(t, func(q int, c *Comm) error {
			mine, err := c.ReduceScatter(ctx, bufs[q], elems, tensor.Int32, tensor.Sum)
			if err != nil {
				return err
			}
			if !bytes.Equal(mine, sum[offs[q]:offs[q+1]]) {
				return fmt.Errorf("np=%d reducescatter: rank %d's part is wrong", n, q)
			}
			return nil
		})
		if ran := sharedRan(ws); ran[0] != 2 {
			t.Fatalf("np=%d: %d of 2 ops ran on shared buffers", n, ran[0])
		}
		ws.close()
	}
}

// TestSharedAlltoallv: send buffers from Alloc, splits that differ per
// rank (some zero), np 2..4.
func TestSharedAlltoallv(t *testing.T) {
	defer checkGoroutines(t)()
	r := rand.New(rand.NewPCG(9, 4))
	for n := 2; n <= 4; n++ {
		ws := newWorld(t, n, Config{}, sharedLinks...)
		ctx := testCtx(t)
		splits := make([][]int, n)
		sends := make([][]byte, n)
		for q := range n {
			splits[q] = make([]int, n)
			for p := range n {
				if (q+p)%3 != 1 {
					splits[q][p] = sharedMinBytes + r.IntN(999)
				}
			}
			total := 0
			for _, k := range splits[q] {
				total += k
			}
			sends[q] = randBuf(r, tensor.Uint8, total, false)
		}
		bufs := sharedCopies(t, sends)
		ws.mustEach(t, func(q int, c *Comm) error {
			recv, counts, err := c.AlltoallvInto(ctx, bufs[q], splits[q], nil)
			if err != nil {
				return err
			}
			var want []byte
			for p := range n {
				off := 0
				for k := range q {
					off += splits[p][k]
				}
				want = append(want, sends[p][off:off+splits[p][q]]...)
				if counts[p] != splits[p][q] {
					return fmt.Errorf("np=%d rank %d: count from %d is %d, want %d", n, q, p, counts[p], splits[p][q])
				}
			}
			if !bytes.Equal(recv, want) {
				return fmt.Errorf("np=%d alltoallv: rank %d received wrong bytes", n, q)
			}
			return nil
		})
		if ran := sharedRan(ws); ran[0] != 1 {
			t.Fatalf("np=%d: the alltoallv did not run on shared buffers", n)
		}
		ws.close()
	}
}
