package ops

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/cma"
	"github.com/gorovod/gorovod/internal/transport/inmem"
)

// linkKinds are the inmem link flavours the conformance tests run over.
var linkKinds = map[string][]inmem.Option{
	"reducer":        {inmem.WithPipeBytes(4096), inmem.WithRecvReducer()},
	"duplex-reducer": {inmem.WithPipeBytes(64 << 10), inmem.WithDuplex(), inmem.WithRecvReducer()},
}

// singleCopyCfg makes every op of at least 1 byte take the single copy
// under Auto.
var singleCopyCfg = Config{SmallBytes: 1, SegmentBytes: 1000, SingleCopyMaxBytes: 1 << 30}

// TestSingleCopyConformance runs every single-copy collective at np 2..5
// against a reference, and checks that the single copy was used.
func TestSingleCopyConformance(t *testing.T) {
	defer checkGoroutines(t)()
	if ok, why := cma.Check(); !ok && !strings.Contains(why, "Yama") {
		t.Skipf("cross-memory attach unavailable here: %s", why)
	}
	r := rand.New(rand.NewPCG(12, 5))
	for n := 2; n <= 5; n++ {
		for kind, opts := range linkKinds {
			t.Run(fmt.Sprintf("np%d-%s", n, kind), func(t *testing.T) {
				for it := range 6 {
					dt := allDTypes[r.IntN(len(allDTypes))]
					op := allOps[r.IntN(len(allOps))]
					if !opValid(dt, op) {
						op = tensor.Sum
					}
					count := []int{1, n - 1, 257, 4099, 20000}[it%5]
					cfg := singleCopyCfg
					if it%2 == 1 {
						cfg = Config{Algorithm: SingleCopy, SegmentBytes: 64}
					}
					ws := newWorld(t, n, cfg, opts...)
					desc := fmt.Sprintf("np=%d %s %s %s count=%d", n, kind, dt, op, count)
					checkSingleCopyOps(t, ws, r, desc, dt, op, count)
					for rank, c := range ws.comms {
						if st := c.SingleCopy(); !st.Probed || !st.Permitted {
							t.Fatalf("%s: rank %d: single copy not used: %+v", desc, rank, st)
						}
					}
					ws.close()
				}
			})
		}
	}
}

// checkSingleCopyOps runs an allreduce, an allgatherv, a reduce-scatter and
// a broadcast on ws and checks the results.
func checkSingleCopyOps(t *testing.T, ws *world, r *rand.Rand, desc string, dt tensor.DType, op tensor.ReduceOp, count int) {
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

	// Allgatherv with a different count per rank (one of them zero).
	counts := make([]int, n)
	var want []byte
	sends := make([][]byte, n)
	for q := range n {
		counts[q] = (count*(q+1) + q) % (3*count + 1)
		if q == n-1 {
			counts[q] = 0
		}
		sends[q] = randBuf(r, tensor.Uint8, counts[q], false)
		want = append(want, sends[q]...)
	}
	ws.mustEach(t, func(rank int, c *Comm) error {
		recv := make([]byte, len(want))
		if err := c.Allgatherv(ctx, sends[rank], recv, counts); err != nil {
			return err
		}
		if !bytes.Equal(recv, want) {
			return fmt.Errorf("%s allgatherv: wrong bytes", desc)
		}
		return nil
	})

	// Reduce-scatter of int32 sums (exact), counts from above.
	ins := make([][]byte, n)
	sum := make([]byte, 0)
	for q := range n {
		ins[q] = randBuf(r, tensor.Int32, len(want), false)
		if q == 0 {
			sum = append(sum, ins[q]...)
		} else {
			sum = refReduce(tensor.Int32, tensor.Sum, sum, ins[q])
		}
	}
	offs := prefix(counts, 4)
	ws.mustEach(t, func(rank int, c *Comm) error {
		mine, err := c.ReduceScatter(ctx, append([]byte(nil), ins[rank]...), counts, tensor.Int32, tensor.Sum)
		if err != nil {
			return err
		}
		if !bytes.Equal(mine, sum[offs[rank]:offs[rank+1]]) {
			return fmt.Errorf("%s reducescatter: rank %d's part is wrong", desc, rank)
		}
		return nil
	})

	root := r.IntN(n)
	ws.mustEach(t, func(rank int, c *Comm) error {
		buf := make([]byte, count)
		if rank == root {
			copy(buf, inputs[0])
		}
		if err := c.Broadcast(ctx, buf, root); err != nil {
			return err
		}
		if !bytes.Equal(buf, inputs[0][:count]) {
			return fmt.Errorf("%s broadcast from %d: rank %d got wrong bytes", desc, root, rank)
		}
		return nil
	})
	checkAlltoallv(t, ws, r, desc, count)
}

// checkAlltoallv runs an alltoallv with a different count for every pair
// (some zero) on ws and checks every rank's result.
func checkAlltoallv(t *testing.T, ws *world, r *rand.Rand, desc string, count int) {
	t.Helper()
	n, ctx := len(ws.comms), testCtx(t)
	splits := make([][]int, n) // splits[q][p]: bytes q sends to p
	sends := make([][]byte, n)
	for q := range n {
		splits[q] = make([]int, n)
		for p := range n {
			splits[q][p] = (count*(q+2*p+1) + p) % (2*count + 1)
		}
		sends[q] = randBuf(r, tensor.Uint8, sum(splits[q]), false)
	}
	ws.mustEach(t, func(rank int, c *Comm) error {
		var want []byte
		for q := range n {
			off := sum(splits[q][:rank])
			want = append(want, sends[q][off:off+splits[q][rank]]...)
		}
		got, counts, err := c.AlltoallvInto(ctx, sends[rank], splits[rank], make([]byte, 0, len(want)))
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) || counts[n-1] != splits[n-1][rank] {
			return fmt.Errorf("%s alltoallv: rank %d got wrong bytes or counts %v", desc, rank, counts)
		}
		return nil
	})
}

// TestSingleCopyRefused forces the kernel's refusal (EPERM, as under Yama
// or a seccomp filter) or wrong bytes (another pid namespace) on one rank:
// every rank falls back to the slots, says why, and results stay right.
func TestSingleCopyRefused(t *testing.T) {
	defer checkGoroutines(t)()
	refusals := map[string]func(int, []byte, uint64) error{
		"eperm":       func(int, []byte, uint64) error { return os.NewSyscallError("process_vm_readv", syscall.EPERM) },
		"enosys":      func(int, []byte, uint64) error { return os.NewSyscallError("process_vm_readv", syscall.ENOSYS) },
		"wrong-bytes": func(_ int, dst []byte, _ uint64) error { clear(dst); return nil },
	}
	r := rand.New(rand.NewPCG(3, 9))
	for name, refuse := range refusals {
		for _, n := range []int{2, 3} {
			t.Run(fmt.Sprintf("%s-np%d", name, n), func(t *testing.T) {
				ws := newWorld(t, n, singleCopyCfg, linkKinds["duplex-reducer"]...)
				defer ws.close()
				victim := n - 1
				calls := 0
				ws.comms[victim].sc.read = func(pid int, dst []byte, src uint64) error {
					calls++
					return refuse(pid, dst, src)
				}
				checkSingleCopyOps(t, ws, r, name, tensor.Int64, tensor.Sum, 3000)
				if calls != 1 {
					t.Errorf("the refusing rank read %d times, want 1 (the probe, stopping at the refusal)", calls)
				}
				for rank, c := range ws.comms {
					st := c.SingleCopy()
					if !st.Probed || st.Permitted || st.Reason == "" {
						t.Fatalf("rank %d: status %+v, want probed, disabled, with a reason", rank, st)
					}
					if rank != victim && !strings.Contains(st.Reason, fmt.Sprintf("rank %d", victim)) {
						t.Errorf("rank %d: reason %q does not name rank %d", rank, st.Reason, victim)
					}
				}
			})
		}
	}
}

// TestSingleCopyNotAcrossHosts: ranks on several hosts never probe.
func TestSingleCopyNotAcrossHosts(t *testing.T) {
	ws := newWorld(t, 4, singleCopyCfg, inmem.WithRanksPerHost(2), inmem.WithRecvReducer())
	defer ws.close()
	checkSingleCopyOps(t, ws, rand.New(rand.NewPCG(1, 1)), "two hosts", tensor.Float32, tensor.Sum, 5000)
	for rank, c := range ws.comms {
		if st := c.SingleCopy(); st.Probed {
			t.Errorf("rank %d probed across hosts: %+v", rank, st)
		}
	}
}

// hideReducer is a mesh whose links between the ranks of pair lose their
// RecvReducer capability (look like TCP), as when shared memory could be
// set up between some pairs of a host only.
type hideReducer struct {
	transport.Mesh
	pair [2]int
}

func (m hideReducer) Link(p int) transport.Link {
	l := m.Mesh.Link(p)
	if r := m.Mesh.Rank(); (r == m.pair[0] && p == m.pair[1]) || (r == m.pair[1] && p == m.pair[0]) {
		return struct{ transport.Link }{l}
	}
	return l
}

// TestSingleCopyNeedsSharedMemoryEverywhere: one host without shared
// memory (--disable-shm), or with it between some pairs only: the ranks
// probe together, agree not to use the single copy, and stay correct.
func TestSingleCopyNeedsSharedMemoryEverywhere(t *testing.T) {
	defer checkGoroutines(t)()
	for _, name := range []string{"no shared memory", "one pair without"} {
		var ws *world
		if name == "no shared memory" { // every link looks like TCP
			ws = newWorld(t, 3, singleCopyCfg, inmem.WithPipeBytes(4096), inmem.WithDuplex())
		} else {
			w := inmem.MustWorld(3, inmem.WithPipeBytes(4096), inmem.WithRecvReducer())
			ws = &world{w: w}
			for r := range 3 {
				c, err := NewComm(hideReducer{w.Mesh(r), [2]int{1, 2}}, singleCopyCfg)
				if err != nil {
					t.Fatal(err)
				}
				ws.comms = append(ws.comms, c)
			}
		}
		checkSingleCopyOps(t, ws, rand.New(rand.NewPCG(2, 2)), name, tensor.Int32, tensor.Sum, 3000)
		for rank, c := range ws.comms {
			st := c.SingleCopy()
			if !st.Probed || st.Permitted || !strings.Contains(st.Reason, "over TCP") && !strings.Contains(st.Reason, "cannot read its peers") {
				t.Errorf("%s: rank %d: status %+v, want probed and refused for TCP links", name, rank, st)
			}
		}
		ws.close()
	}
}

// countReads makes rank 0 of ws count its single-copy reads.
func countReads(ws *world) *int { return countReadsOn(ws, 0) }

// countReadsOn makes rank r of ws count its single-copy reads.
func countReadsOn(ws *world, r int) *int {
	n := new(int)
	ws.comms[r].sc.read = func(pid int, dst []byte, src uint64) error {
		*n++
		return cma.Read(pid, dst, src)
	}
	return n
}

// TestSingleCopyOffAndLimits: SingleCopyOff and sizes outside [SmallBytes,
// SingleCopyMaxBytes] keep the slots; the forced algorithm does not.
func TestSingleCopyOffAndLimits(t *testing.T) {
	for _, tc := range []struct {
		cfg   Config
		bytes int
		want  bool
	}{
		{Config{SmallBytes: 1, SingleCopyOff: true}, 4096, false},
		{Config{SmallBytes: 8192, SingleCopyMaxBytes: 1 << 20}, 4096, false},
		{Config{SmallBytes: 1, SingleCopyMaxBytes: 2048}, 4096, false},
		{Config{SmallBytes: 1, SingleCopyMaxBytes: 4096}, 4096, true},
		{Config{SmallBytes: 1, SingleCopyOff: true, Algorithm: SingleCopy}, 4096, true},
	} {
		ws := newWorld(t, 2, tc.cfg, inmem.WithRecvReducer())
		reads := countReads(ws)
		ctx := testCtx(t)
		ws.mustEach(t, func(_ int, c *Comm) error {
			return c.Allreduce(ctx, make([]byte, tc.bytes), tensor.Uint8, tensor.Sum, 1, 1)
		})
		probe := 0
		if ws.comms[0].SingleCopy().Probed {
			probe = 1
		}
		if got := *reads > probe; got != tc.want {
			t.Errorf("%+v, %d bytes: single copy %v (%d reads), want %v", tc.cfg, tc.bytes, got, *reads, tc.want)
		}
		ws.close()
	}
	if _, err := NewComm(inmem.MustWorld(2).Mesh(0), Config{SingleCopyMaxBytes: -1}); !errors.Is(err, tensor.ErrInvalid) {
		t.Errorf("SingleCopyMaxBytes -1: %v, want ErrInvalid", err)
	}
}

// TestSingleCopyCalibration: with SingleCopyMaxBytes 0 rank 0's
// calibration decides for every rank; a losing calibration leaves Auto on
// the slots but the forced algorithm still reads directly.
func TestSingleCopyCalibration(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		single, slots time.Duration
		wantMax       int
	}{{1 * ms, 2 * ms, DefaultSingleCopyMaxBytes()}, {3 * ms, 2 * ms, 0}, {19 * ms / 10, 2 * ms, 0}} {
		for _, forced := range []bool{false, true} {
			cfg := Config{SmallBytes: 1}
			if forced {
				cfg.Algorithm = SingleCopy
			}
			ws := newWorld(t, 3, cfg, inmem.WithRecvReducer())
			for r, c := range ws.comms {
				if r == 0 {
					c.sc.calibrate = func(context.Context) (time.Duration, time.Duration, error) { return tc.single, tc.slots, nil }
				} else { // other ranks' view must not matter
					c.sc.calibrate = func(context.Context) (time.Duration, time.Duration, error) { return tc.slots, tc.single, nil }
				}
			}
			reads := countReads(ws)
			ctx := testCtx(t)
			ws.mustEach(t, func(_ int, c *Comm) error { // the smallest size timed: in the band when it won
				return c.Allreduce(ctx, make([]byte, calibrationSizes[0]), tensor.Uint8, tensor.Sum, 1, 1)
			})
			for r, c := range ws.comms {
				st := c.SingleCopy()
				if st.MaxBytes != tc.wantMax || !st.Permitted || st.SingleCopyTime != tc.single || st.SlotsTime != tc.slots {
					t.Errorf("calibration %v/%v, rank %d: status %+v, want MaxBytes %d", tc.single, tc.slots, r, st, tc.wantMax)
				}
				if tc.wantMax == 0 && !strings.Contains(st.Reason, "calibration on rank 0") {
					t.Errorf("rank %d: reason %q does not cite the calibration", r, st.Reason)
				}
			}
			if used, want := *reads > 2, forced || tc.wantMax > 0; used != want {
				t.Errorf("calibration %v/%v forced=%v: single copy used %v, want %v", tc.single, tc.slots, forced, used, want)
			}
			ws.close()
		}
	}
}

// TestSingleCopyCalibrationRuns: the real calibration (both algorithms
// timed on every rank) completes and leaves a consistent status.
func TestSingleCopyCalibrationRuns(t *testing.T) {
	defer checkGoroutines(t)()
	defer func(s []int) { calibrationSizes = s }(calibrationSizes)
	calibrationSizes = []int{4 << 10, 64 << 10, 256 << 10} // the real ones are slow over inmem under -race
	ws := newWorld(t, 2, Config{SmallBytes: 1}, linkKinds["duplex-reducer"]...)
	defer ws.close()
	for _, c := range ws.comms {
		c.sc.calibrate = c.timeBothWays
	}
	ctx := testCtx(t)
	ws.mustEach(t, func(_ int, c *Comm) error {
		return c.Allreduce(ctx, make([]byte, 4096), tensor.Uint8, tensor.Sum, 1, 1)
	})
	for r, c := range ws.comms {
		st := c.SingleCopy()
		if !st.Probed || st.SingleCopyTime <= 0 || st.SlotsTime <= 0 || st.CalibrationBytes <= 0 || len(st.Calibration) != 3 {
			t.Errorf("rank %d: status %+v", r, st)
			continue
		}
		lo, hi := singleCopyBand(st.Calibration, DefaultSingleCopyMaxBytes())
		if st.MinBytes != lo || st.MaxBytes != hi {
			t.Errorf("rank %d: band [%d, %d], want [%d, %d] from %+v", r, st.MinBytes, st.MaxBytes, lo, hi, st.Calibration)
		}
	}
}

// TestSingleCopyBand: the single copy is used between the sizes where it
// won, bounded halfway to the losses around them, never below the smallest
// size timed.
func TestSingleCopyBand(t *testing.T) {
	ms := time.Millisecond
	win, lose := [2]time.Duration{1 * ms, 2 * ms}, [2]time.Duration{2 * ms, 2 * ms}
	pts := func(ws ...[2]time.Duration) []CalibrationPoint {
		var p []CalibrationPoint
		for i, w := range ws {
			p = append(p, CalibrationPoint{Bytes: 1 << (20 + 2*i), SingleCopyTime: w[0], SlotsTime: w[1]})
		}
		return p
	}
	for _, tc := range []struct {
		pts    []CalibrationPoint
		lo, hi int
	}{
		{pts(lose, lose, lose), 0, 0},
		{pts(win, win, win), 1 << 20, 64 << 20},
		{pts(lose, win, lose), 2 << 20, 8 << 20},
		{pts(lose, lose, win), 8 << 20, 64 << 20},
		{pts(win, lose, win), 1 << 20, 2 << 20},
	} {
		if lo, hi := singleCopyBand(tc.pts, 64<<20); lo != tc.lo || hi != tc.hi {
			t.Errorf("%+v: band [%d, %d], want [%d, %d]", tc.pts, lo, hi, tc.lo, tc.hi)
		}
	}
	// Auto follows the band.
	if DefaultSingleCopyMaxBytes() < 16<<20 {
		t.Skipf("the machine's limit (%d bytes) stops the calibration before 16 MiB", DefaultSingleCopyMaxBytes())
	}
	ws := newWorld(t, 2, Config{SmallBytes: 1}, inmem.WithRecvReducer())
	defer ws.close()
	for _, c := range ws.comms {
		c.sc.calibrate = func(context.Context) (time.Duration, time.Duration, error) {
			if c.sc.calBytes == 4<<20 {
				return ms, 2 * ms, nil
			}
			return 2 * ms, ms, nil
		}
	}
	ctx := testCtx(t)
	ws.mustEach(t, func(_ int, c *Comm) error {
		return c.Allreduce(ctx, make([]byte, 4096), tensor.Uint8, tensor.Sum, 1, 1)
	})
	c := ws.comms[0]
	if st := c.SingleCopy(); st.MinBytes != 2<<20 || st.MaxBytes != 8<<20 {
		t.Fatalf("status %+v, want the band [2 MiB, 8 MiB]", st)
	}
	for n, want := range map[int]bool{1 << 20: false, 4 << 20: true, 16 << 20: false} {
		if got := c.wantSingleCopy(n, false); got != want {
			t.Errorf("%d bytes: single copy %v, want %v", n, got, want)
		}
	}
}

// TestSingleCopyPeerGone: a read failing with ESRCH after the probe (the
// peer's process is gone) fails the op with ErrPeerLost naming the peer,
// and the other ranks fail promptly instead of waiting.
func TestSingleCopyPeerGone(t *testing.T) {
	defer checkGoroutines(t)()
	ws := newWorld(t, 3, singleCopyCfg, linkKinds["reducer"]...)
	defer ws.close()
	ctx := testCtx(t)
	ws.mustEach(t, func(_ int, c *Comm) error { // the probe succeeds
		return c.Allreduce(ctx, make([]byte, 64), tensor.Uint8, tensor.Sum, 1, 1)
	})
	ws.comms[1].sc.read = func(int, []byte, uint64) error { return os.NewSyscallError("process_vm_readv", syscall.ESRCH) }
	errs := ws.each(func(_ int, c *Comm) error {
		return c.Allreduce(ctx, make([]byte, 64), tensor.Uint8, tensor.Sum, 1, 1)
	})
	var pe *transport.PeerError
	if !errors.Is(errs[1], transport.ErrPeerLost) || !errors.As(errs[1], &pe) || pe.Op != "single-copy read" {
		t.Fatalf("rank 1: %v, want a lost peer on a single-copy read", errs[1])
	}
	for rank, err := range errs {
		if err == nil {
			t.Errorf("rank %d succeeded after rank 1 failed", rank)
		}
	}
}

// TestSingleCopyWriteGone: the same for a broadcast's write into a peer.
func TestSingleCopyWriteGone(t *testing.T) {
	defer checkGoroutines(t)()
	ws := newWorld(t, 2, singleCopyCfg, linkKinds["reducer"]...)
	defer ws.close()
	ctx := testCtx(t)
	ws.mustEach(t, func(_ int, c *Comm) error { return c.Broadcast(ctx, make([]byte, 64<<10), 0) })
	ws.comms[0].sc.write = func(int, []byte, uint64) error { return os.NewSyscallError("process_vm_writev", syscall.ESRCH) }
	errs := ws.each(func(_ int, c *Comm) error { return c.Broadcast(ctx, make([]byte, 64<<10), 0) })
	var pe *transport.PeerError
	if !errors.Is(errs[0], transport.ErrPeerLost) || !errors.As(errs[0], &pe) || pe.Op != "single-copy write" || pe.Rank != 1 {
		t.Fatalf("rank 0: %v, want rank 1 lost on a single-copy write", errs[0])
	}
	if errs[1] == nil {
		t.Error("rank 1 succeeded after rank 0 failed")
	}
}

func TestSingleCopyMachineLimit(t *testing.T) {
	dir := t.TempDir()
	for i, c := range []struct{ level, size string }{{"1", "48K"}, {"2", "2048K"}, {"3", "32768K"}, {"1", "32K"}} {
		d := filepath.Join(dir, fmt.Sprintf("index%d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		_ = os.WriteFile(filepath.Join(d, "level"), []byte(c.level+"\n"), 0o644)
		_ = os.WriteFile(filepath.Join(d, "size"), []byte(c.size+"\n"), 0o644)
	}
	if got := lastLevelCache(dir); got != 32<<20 {
		t.Errorf("lastLevelCache = %d, want 32 MiB", got)
	}
	if got := lastLevelCache(filepath.Join(dir, "none")); got != 0 {
		t.Errorf("lastLevelCache(missing) = %d, want 0", got)
	}
	for _, tc := range []struct{ llc, want int }{{0, 8 << 20}, {1 << 20, 2 << 20}, {32 << 20, 16 << 20}, {260 << 20, 32 << 20}} {
		if got := singleCopyMaxFor(tc.llc); got != tc.want {
			t.Errorf("singleCopyMaxFor(%d) = %d, want %d", tc.llc, got, tc.want)
		}
	}
	for s, want := range map[string]int{"512K": 512 << 10, "8M": 8 << 20, "100": 100, "x": 0, "": 0} {
		if got := parseCacheSize(s); got != want {
			t.Errorf("parseCacheSize(%q) = %d, want %d", s, got, want)
		}
	}
}

func sum(v []int) int {
	t := 0
	for _, x := range v {
		t += x
	}
	return t
}

// TestSingleCopyMoves: with a calibration the single copy lost (so no
// allreduce uses it), allgathers still go by single copy, broadcasts up to
// singleCopyBroadcastMax too, larger broadcasts and SingleCopyOff not.
func TestSingleCopyMoves(t *testing.T) {
	for _, tc := range []struct {
		name  string
		off   bool
		bytes int
		want  bool
		run   func(context.Context, *Comm, []byte) error
	}{
		{"allgather", false, 1 << 20, true, allgatherHalves},
		{"allgather off", true, 1 << 20, false, allgatherHalves},
		{"allgather small", false, singleCopyMoveMin / 2, false, allgatherHalves},
		{"broadcast", false, 1 << 20, true, broadcastFrom0},
		{"broadcast large", false, 2 * singleCopyBroadcastMax, false, broadcastFrom0},
	} {
		ws := newWorld(t, 2, Config{SmallBytes: 1, SingleCopyOff: tc.off}, inmem.WithRecvReducer())
		for _, c := range ws.comms {
			c.sc.calibrate = func(context.Context) (time.Duration, time.Duration, error) {
				return 3 * time.Millisecond, time.Millisecond, nil
			}
		}
		reads := countReadsOn(ws, 1) // a broadcast's root reads nothing
		ctx := testCtx(t)
		ws.mustEach(t, func(r int, c *Comm) error {
			buf := make([]byte, tc.bytes)
			for i := range buf {
				buf[i] = byte(r + 1)
			}
			return tc.run(ctx, c, buf)
		})
		probe := 0
		if ws.comms[1].SingleCopy().Probed {
			probe = 1
		}
		if used := *reads > probe; used != tc.want {
			t.Errorf("%s, %d bytes: single copy %v (%d reads), want %v", tc.name, tc.bytes, used, *reads, tc.want)
		}
		ws.close()
	}
}

func allgatherHalves(ctx context.Context, c *Comm, buf []byte) error {
	half := len(buf) / 2
	recv := make([]byte, 2*half)
	if err := c.Allgatherv(ctx, buf[:half], recv, []int{half, half}); err != nil {
		return err
	}
	for i, b := range recv {
		if want := byte(i/half + 1); b != want {
			return fmt.Errorf("allgather byte %d is %d, want %d", i, b, want)
		}
	}
	return nil
}

func broadcastFrom0(ctx context.Context, c *Comm, buf []byte) error {
	if err := c.Broadcast(ctx, buf, 0); err != nil {
		return err
	}
	for i, b := range buf {
		if b != 1 {
			return fmt.Errorf("broadcast byte %d is %d, want 1", i, b)
		}
	}
	return nil
}
