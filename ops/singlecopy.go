package ops

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
	"github.com/gorovod/gorovod/internal/transport"
	"github.com/gorovod/gorovod/internal/transport/cma"
)

// Single copy within a host (cross-memory attach). When every rank of the
// Comm is on one host, a rank can read a peer's buffer with
// process_vm_readv given the peer's pid and the buffer's address, which
// the ranks exchange over their links. An allreduce then costs one copy
// per byte moved instead of two through shared-memory slots: each rank
// reads its chunk from every peer (into a segment-sized scratch that stays
// in cache) and reduces it into its own buffer, tells the peers, and reads
// the peers' reduced chunks straight into its buffer. Three small
// exchanges per operation (addresses, reduced, done reading), whatever the
// size.
//
// Whether the kernel allows it (Yama, seccomp, pid namespaces) is learnt
// once per Comm, at the first operation that would use it, by a probe that
// every rank runs at the same point of the op sequence: each rank sends its
// pid and the address of a random nonce, reads every peer's nonce, and the
// ranks agree (everyone tells everyone) to use the single copy only if
// every read returned the right bytes. A refusal anywhere makes every rank
// fall back to the slots for the life of the Comm.

// SingleCopyStatus is the outcome of the single-copy probe.
type SingleCopyStatus struct {
	Probed    bool   // the probe ran (all ranks on one host and an op wanted it)
	Permitted bool   // every rank can read every other's buffer
	Reason    string // why not permitted, or why Auto does not use it
	// MinBytes and MaxBytes bound the ops Auto sends by single copy (rank
	// 0's configuration or calibration; MaxBytes 0: Auto does not use it;
	// MinBytes 0: from Config.SmallBytes).
	MinBytes, MaxBytes int
	// Rank 0's calibration (zero when not calibrated): the best time of a
	// CalibrationBytes float32 allreduce by single copy and through the
	// links, and every size timed (Calibration).
	CalibrationBytes          int
	SingleCopyTime, SlotsTime time.Duration
	Calibration               []CalibrationPoint
}

// CalibrationPoint is one size of the single-copy calibration: the best
// time of a float32 allreduce of Bytes by single copy and through the links.
type CalibrationPoint struct {
	Bytes                     int
	SingleCopyTime, SlotsTime time.Duration
}

// wins reports a clear win of the single copy (the slots are the default).
func (p CalibrationPoint) wins() bool {
	return p.SingleCopyTime > 0 && p.SingleCopyTime < p.SlotsTime*9/10
}

// SingleCopy reports the single-copy probe's outcome so far.
func (c *Comm) SingleCopy() SingleCopyStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.scStatus
}

// singleCopy is the probe's state, touched under opMu only.
type singleCopy struct {
	// exposed holds the buffer whose address peers read during an op. Being
	// stored in the heap-allocated Comm, every buffer published escapes
	// (the compiler's escape analysis sees the store), so none lives on a
	// goroutine stack, which moves when it grows; cleared after each op.
	exposed  []byte
	probed   bool
	ok       bool
	pids     []int
	min, max int
	// read is cma.Read and calibrate Comm.timeBothWays (timing an allreduce
	// of calBytes); tests replace them.
	read      func(pid int, dst []byte, src uint64) error
	write     func(pid int, src []byte, dst uint64) error
	calibrate func(ctx context.Context) (single, slots time.Duration, err error)
	calBytes  int
}

// Message tags, so that ranks out of step fail loudly instead of reading
// the wrong memory.
const (
	tagProbe   = 0x5c01
	tagAddr    = 0x5c02
	tagReduced = 0x5c03
	tagDone    = 0x5c04
)

// oneHost reports whether every rank of the Comm is on this rank's host
// (the same answer on every rank: hosts come from the mesh's peer table).
func (c *Comm) oneHost() bool { return len(c.local) == c.size }

// sharedMemory reports whether this rank reaches every peer over shared
// memory (links that reduce from their own memory, transport.RecvReducer):
// the single copy belongs with the shm transport, so a job that turned it
// off (--disable-shm: TCP between same-host peers) does not read peers'
// memory either. Shared-memory setup can fail for one pair only, so ranks
// may differ here: the probe makes them agree.
func (c *Comm) sharedMemory() bool {
	for p, l := range c.links {
		if _, ok := l.(transport.RecvReducer); p != c.rank && !ok {
			return false
		}
	}
	return true
}

// wantSingleCopy reports whether an op of n bytes would use the single copy
// if the probe allows it (the probe has not necessarily run).
func (c *Comm) wantSingleCopy(n int, forced bool) bool {
	if c.size < 2 || n == 0 || !c.oneHost() {
		return false
	}
	if forced {
		return true
	}
	if c.cfg.SingleCopyOff || n < c.cfg.SmallBytes || c.cfg.SingleCopyMaxBytes > 0 && n > c.cfg.SingleCopyMaxBytes {
		return false
	}
	return !c.sc.probed || (c.sc.ok && n <= c.sc.max && n >= c.sc.min)
}

// useSingleCopy runs the probe if needed and reports whether the op of n
// bytes goes by single copy. Every rank calls it at the same op with the
// same n, so every rank decides the same.
func (c *Comm) useSingleCopy(ctx context.Context, n int, forced bool) (bool, error) {
	if !c.wantSingleCopy(n, forced) {
		return false, nil
	}
	if err := c.ensureProbed(ctx); err != nil {
		return false, err
	}
	return c.sc.ok && (forced || n <= c.sc.max && n >= c.sc.min), nil
}

// ensureProbed runs the probe (and the calibration) at the first op that
// could use the single copy.
func (c *Comm) ensureProbed(ctx context.Context) error {
	if c.sc.probed {
		return nil
	}
	return c.probeSingleCopy(ctx)
}

// singleCopyMoveMin is the smallest broadcast or allgather that goes by
// single copy: below it the slots' latency path wins.
const singleCopyMoveMin = 64 << 10

// singleCopyBroadcastMax is the largest broadcast that goes by single
// copy. An allgather's ranks all read at once, each byte copied once
// against twice through the slots; a broadcast's readers read while the
// root waits, where the slots' chain keeps both cores copying, so past a
// few MiB (when the pipeline's start is paid off) the chain is as fast
// (measured on the 2-core Xeon: single copy 1.4x faster at 1 MiB, 0.65x
// at 16 MiB).
const singleCopyBroadcastMax = 4 << 20

// useSingleCopyMove is useSingleCopy for the collectives that only move
// data (broadcast, allgather): they use the single copy whenever the probe
// allows it, from singleCopyMoveMin bytes up to limit (0: none) and
// SingleCopyMaxBytes if set; the calibration's band is the allreduce's,
// whose reduction pass changes the balance. Every rank calls it at the
// same op with the same n.
func (c *Comm) useSingleCopyMove(ctx context.Context, n, limit int) (bool, error) {
	if c.size < 2 || n < max(singleCopyMoveMin, c.cfg.SmallBytes) || !c.oneHost() || c.cfg.SingleCopyOff ||
		limit > 0 && n > limit || c.cfg.SingleCopyMaxBytes > 0 && n > c.cfg.SingleCopyMaxBytes {
		return false, nil
	}
	if err := c.ensureProbed(ctx); err != nil {
		return false, err
	}
	return c.sc.ok, nil
}

// The probe's message: tag, pid, nonce address, nonce (16 bytes), the Auto
// limit this rank's configuration sets (only rank 0's counts; 0:
// calibrate).
const probeBytes = 48

// probeSingleCopy is the probe described above, then rank 0's
// calibration when the configuration leaves the limit to it.
func (c *Comm) probeSingleCopy(ctx context.Context) error {
	nonce := make([]byte, 16)
	c.sc.exposed = nonce // on the heap: peers read it by address
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	le := binary.LittleEndian
	msg := make([]byte, probeBytes)
	le.PutUint64(msg[0:], tagProbe)
	le.PutUint64(msg[8:], uint64(os.Getpid()))
	le.PutUint64(msg[16:], cma.Addr(nonce))
	copy(msg[24:40], nonce)
	le.PutUint64(msg[40:], uint64(c.cfg.SingleCopyMaxBytes))
	in, err := c.swapAll(ctx, msg)
	if err != nil {
		return err
	}
	verdict, reason, pids, err := c.readNonces(in)
	if err != nil {
		return err
	}
	// Every rank has read this rank's nonce once the verdicts are in.
	verdicts, err := c.swapAll(ctx, []byte{verdict})
	runtime.KeepAlive(nonce)
	if err != nil {
		return err
	}
	ok := verdict == 1
	for q, v := range verdicts {
		if q != c.rank && v[0] != 1 && ok {
			ok, reason = false, fmt.Sprintf("rank %d cannot read its peers' memory (its log says why)", q)
		}
	}
	st := SingleCopyStatus{Probed: true, Permitted: ok, Reason: reason, MaxBytes: int(le.Uint64(in[0][40:]))}
	c.sc = singleCopy{probed: true, ok: ok, pids: pids, max: st.MaxBytes, read: c.sc.read, write: c.sc.write, calibrate: c.sc.calibrate, exposed: nonce}
	if ok && st.MaxBytes == 0 {
		if err := c.calibrate(ctx, &st); err != nil {
			return err
		}
		c.sc.min, c.sc.max = st.MinBytes, st.MaxBytes
	}
	c.mu.Lock()
	c.scStatus = st
	c.mu.Unlock()
	return nil
}

// calibrationBytes is the size whose times SingleCopyStatus reports in
// SingleCopyTime and SlotsTime (at most the machine's limit).
const calibrationBytes = 4 << 20

// calibrationSizes are the allreduce sizes timed both ways, those up to
// DefaultSingleCopyMaxBytes (a short calibration: some 50 ms).
var calibrationSizes = []int{1 << 20, 4 << 20, 16 << 20, 32 << 20}

// calibrate times float32 allreduces of calibrationSizes by single copy
// and through the links on every rank (best of three each, alternated),
// and every rank adopts rank 0's figures: Auto uses the single copy in the
// band of sizes where it was at least 10% faster (singleCopyBand), else
// not at all. Which one wins depends on the machine: on some the second
// copy through cache-resident slots is as cheap as the kernel's page
// pinning at every size, on others the single copy wins mid-size.
func (c *Comm) calibrate(ctx context.Context, st *SingleCopyStatus) error {
	limit := DefaultSingleCopyMaxBytes()
	var pts []CalibrationPoint
	for _, n := range calibrationSizes {
		if n > limit && len(pts) > 0 {
			break
		}
		c.sc.calBytes = min(n, limit)
		single, slots, err := c.sc.calibrate(ctx)
		if err != nil {
			return err
		}
		pts = append(pts, CalibrationPoint{Bytes: c.sc.calBytes, SingleCopyTime: single, SlotsTime: slots})
	}
	lo, hi := singleCopyBand(pts, limit)
	le := binary.LittleEndian
	msg := make([]byte, 16+16*len(pts))
	le.PutUint64(msg, uint64(lo))
	le.PutUint64(msg[8:], uint64(hi))
	for i, p := range pts {
		le.PutUint64(msg[16+16*i:], uint64(p.SingleCopyTime))
		le.PutUint64(msg[24+16*i:], uint64(p.SlotsTime))
	}
	in, err := c.swapAll(ctx, msg)
	if err != nil {
		return err
	}
	st.MinBytes, st.MaxBytes = int(le.Uint64(in[0])), int(le.Uint64(in[0][8:]))
	for i := range pts {
		pts[i].SingleCopyTime = time.Duration(le.Uint64(in[0][16+16*i:]))
		pts[i].SlotsTime = time.Duration(le.Uint64(in[0][24+16*i:]))
		if pts[i].Bytes <= calibrationBytes || i == 0 {
			st.CalibrationBytes, st.SingleCopyTime, st.SlotsTime = pts[i].Bytes, pts[i].SingleCopyTime, pts[i].SlotsTime
		}
	}
	st.Calibration = pts
	if st.MaxBytes == 0 {
		st.Reason = "calibration on rank 0: the single copy was not 10% faster than the links at any size timed " + describe(pts)
	}
	return nil
}

// singleCopyBand is the range of sizes the single copy goes by: from the
// first size timed where it won clearly to the last of the wins that
// follow, each end halfway (geometrically) to the neighbouring loss; open
// above (max: limit) where no loss bounds it, but never below the smallest
// size timed: the single copy's fixed cost per op (system calls, pinning,
// the handshake) weighs more the smaller the op, so a win at 1 MiB says
// nothing of 64 KiB (extended down, a launch whose 1 MiB point won ran 64
// KiB-256 KiB allreduces 1.5x slower than the slots). 0, 0 when it never won.
func singleCopyBand(pts []CalibrationPoint, limit int) (lo, hi int) {
	i := slices.IndexFunc(pts, CalibrationPoint.wins)
	if i < 0 {
		return 0, 0
	}
	j := i
	for j+1 < len(pts) && pts[j+1].wins() {
		j++
	}
	mid := func(a, b int) int { return int(math.Sqrt(float64(a) * float64(b))) }
	lo = pts[i].Bytes
	if i > 0 {
		lo = mid(pts[i-1].Bytes, pts[i].Bytes)
	}
	hi = limit
	if j+1 < len(pts) {
		hi = mid(pts[j].Bytes, pts[j+1].Bytes)
	}
	return lo, max(hi, lo)
}

func describe(pts []CalibrationPoint) string {
	var b strings.Builder
	for i, p := range pts {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d bytes: %v by single copy, %v through the links", p.Bytes, p.SingleCopyTime, p.SlotsTime)
	}
	return "(" + b.String() + ")"
}

// timeBothWays is one point of the calibration: a float32 sum allreduce
// of c.sc.calBytes by single copy and by the ring, five times each,
// alternated; the best time of each. (With three, the best 1 MiB ring
// time varied 166-625 us over five launches on the 2-core Xeon against
// 143 us in steady state: a passing load can slow every sample of one
// side and fake a win.)
func (c *Comm) timeBothWays(ctx context.Context) (single, slots time.Duration, err error) {
	buf := make([]byte, c.sc.calBytes/4*4)
	single, slots = time.Duration(1<<62), time.Duration(1<<62)
	for range 5 {
		start := time.Now()
		if err := c.singleCopyAllreduce(ctx, buf, tensor.Float32, tensor.Sum, nil); err != nil {
			return 0, 0, err
		}
		single = min(single, time.Since(start))
		start = time.Now()
		if err := c.ringAllreduce(ctx, all(c.size), c.rank, buf, tensor.Float32, tensor.Sum, nil); err != nil {
			return 0, 0, err
		}
		slots = min(slots, time.Since(start))
	}
	return single, slots, nil
}

// readNonces reads every peer's nonce where its probe message says and
// returns this rank's verdict (1: all read right) and the peers' pids.
func (c *Comm) readNonces(in [][]byte) (byte, string, []int, error) {
	le := binary.LittleEndian
	pids := make([]int, c.size)
	pids[c.rank] = os.Getpid()
	verdict, reason := byte(1), ""
	if !c.sharedMemory() {
		verdict, reason = 0, fmt.Sprintf("rank %d reaches a peer over TCP (shared memory off or unavailable)", c.rank)
	}
	got := make([]byte, 16)
	for q, m := range in {
		if q == c.rank {
			continue
		}
		if le.Uint64(m) != tagProbe {
			return 0, "", nil, c.outOfStep(q, "single-copy probe", m)
		}
		pids[q] = int(le.Uint64(m[8:]))
		if verdict == 0 {
			continue
		}
		if err := c.sc.read(pids[q], got, le.Uint64(m[16:])); err != nil {
			verdict, reason = 0, fmt.Sprintf("rank %d cannot read rank %d's memory: %v", c.rank, q, err)
		} else if !bytes.Equal(got, m[24:40]) {
			verdict, reason = 0, fmt.Sprintf("rank %d read the wrong bytes from rank %d (pid %d; another pid namespace?)", c.rank, q, pids[q])
		}
	}
	return verdict, reason, pids, nil
}

func (c *Comm) outOfStep(q int, what string, m []byte) error {
	return &transport.PeerError{Rank: q, Host: c.mesh.Host(q), Op: "recv",
		Err: fmt.Errorf("%w: %s: rank %d sent % x (operations out of step?)", transport.ErrMalformed, what, q, m[:min(len(m), 8)])}
}

// swapAll sends msg to every peer and returns what each sent (in[rank] is
// msg); every peer sends the same number of bytes.
func (c *Comm) swapAll(ctx context.Context, msg []byte) ([][]byte, error) {
	n, r := c.size, c.rank
	in := make([][]byte, n)
	for q := range in {
		in[q] = make([]byte, len(msg))
	}
	copy(in[r], msg)
	if n == 2 {
		return in, c.exchange(ctx, 1-r, msg, in[1-r])
	}
	for s := 1; s < n; s++ {
		to, from := (r+s)%n, (r-s+n)%n
		if err := c.shift(ctx, to, msg, from, in[from]); err != nil {
			return nil, err
		}
	}
	return in, c.snd.wait()
}

// publish tells every peer where buf is and returns the peers' addresses;
// every peer's buffer must have want(q) bytes.
func (c *Comm) publish(ctx context.Context, buf []byte, want func(q int) int) ([]uint64, error) {
	c.sc.exposed = buf
	le := binary.LittleEndian
	msg := make([]byte, 24)
	le.PutUint64(msg, tagAddr)
	le.PutUint64(msg[8:], cma.Addr(buf))
	le.PutUint64(msg[16:], uint64(len(buf)))
	in, err := c.swapAll(ctx, msg)
	if err != nil {
		return nil, err
	}
	addrs := make([]uint64, c.size)
	for q, m := range in {
		if q == c.rank {
			continue
		}
		if le.Uint64(m) != tagAddr || le.Uint64(m[16:]) != uint64(want(q)) {
			return nil, c.outOfStep(q, fmt.Sprintf("single-copy address (want %d bytes)", want(q)), m[16:])
		}
		addrs[q] = le.Uint64(m[8:])
	}
	return addrs, nil
}

// signal tells every peer this rank reached tag and waits until every
// peer has.
func (c *Comm) signalAll(ctx context.Context, tag uint64) error {
	var msg [8]byte
	binary.LittleEndian.PutUint64(msg[:], tag)
	in, err := c.swapAll(ctx, msg[:])
	if err != nil {
		return err
	}
	for q, m := range in {
		if q != c.rank && binary.LittleEndian.Uint64(m) != tag {
			return c.outOfStep(q, "single-copy signal", m)
		}
	}
	return nil
}

// readPeer copies len(dst) bytes at addr of rank q's memory into dst.
func (c *Comm) readPeer(ctx context.Context, q int, dst []byte, addr uint64) error {
	if len(dst) == 0 {
		return nil
	}
	return c.peerCopy(ctx, q, "single-copy read", func(pid int) error { return c.sc.read(pid, dst, addr) })
}

// writePeer copies src to addr of rank q's memory.
func (c *Comm) writePeer(ctx context.Context, q int, src []byte, addr uint64) error {
	if len(src) == 0 {
		return nil
	}
	return c.peerCopy(ctx, q, "single-copy write", func(pid int) error { return c.sc.write(pid, src, addr) })
}

// peerCopy runs one cross-memory copy with rank q and reports its failure
// as a PeerError.
func (c *Comm) peerCopy(ctx context.Context, q int, op string, copyFn func(pid int) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := copyFn(c.sc.pids[q]); err != nil {
		if cma.Gone(err) {
			// The peer's process is gone, and the kernel closed its
			// sockets before its pid went: its link says so too, once the
			// few signal bytes it sent before it died are read. Reported
			// through the link, the loss surfaces like every other (the
			// job's failure tracking names the first rank lost). The op
			// fails either way, so the bytes copied do not matter; the
			// bound keeps a peer that somehow still talks from holding
			// this rank.
			if lerr := c.drainUntilLost(ctx, q); lerr != nil {
				return lerr
			}
			err = fmt.Errorf("%w: %w", transport.ErrPeerLost, err)
		}
		return &transport.PeerError{Rank: q, Host: c.mesh.Host(q), Op: op, Err: err}
	}
	return nil
}

// drainUntilLost reads rank q's link until it fails (returning that error)
// or 250 ms pass (returning nil).
func (c *Comm) drainUntilLost(ctx context.Context, q int) error {
	dctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
	defer cancel()
	var b [1]byte
	for {
		if err := c.links[q].Recv(dctx, b[:]); err != nil {
			if dctx.Err() != nil && ctx.Err() == nil {
				return nil
			}
			return err
		}
	}
}

// reduceFromPeers reduces this rank's part of every peer's buffer into
// mine (which sits at byte offset off of the buffers), segment by segment
// through a scratch that stays in cache, peers in rank order; finish (if
// any) runs on each reduced segment.
func (c *Comm) reduceFromPeers(ctx context.Context, mine []byte, off int, addrs []uint64, dt tensor.DType, op tensor.ReduceOp, finish func([]byte)) error {
	seg := max(c.cfg.SegmentBytes/dt.Size()*dt.Size(), dt.Size())
	tmp := c.buffer(min(seg, len(mine)))
	for o := 0; o < len(mine); o += seg {
		s := mine[o:min(o+seg, len(mine))]
		for q := range c.size {
			if q == c.rank {
				continue
			}
			if err := c.readPeer(ctx, q, tmp[:len(s)], addrs[q]+uint64(off+o)); err != nil {
				return err
			}
			reduce(dt, op, s, tmp[:len(s)])
		}
		if finish != nil {
			finish(s)
		}
	}
	return nil
}

// singleCopyAllreduce: addresses, reduce this rank's chunk from every
// peer, signal, read the other chunks, signal done (peers may then change
// their buffers).
func (c *Comm) singleCopyAllreduce(ctx context.Context, buf []byte, dt tensor.DType, op tensor.ReduceOp, finish func([]byte)) error {
	offs := chunkOffsets(len(buf)/dt.Size(), dt.Size(), c.size)
	addrs, err := c.publish(ctx, buf, func(int) int { return len(buf) })
	if err != nil {
		return err
	}
	r := c.rank
	if err := c.reduceFromPeers(ctx, buf[offs[r]:offs[r+1]], offs[r], addrs, dt, op, finish); err != nil {
		return err
	}
	if err := c.signalAll(ctx, tagReduced); err != nil {
		return err
	}
	for q := range c.size {
		if q == r {
			continue
		}
		if err := c.readPeer(ctx, q, buf[offs[q]:offs[q+1]], addrs[q]+uint64(offs[q])); err != nil {
			return err
		}
	}
	return c.signalAll(ctx, tagDone)
}

// singleCopyReduceScatter is the first half of singleCopyAllreduce.
func (c *Comm) singleCopyReduceScatter(ctx context.Context, buf []byte, offs []int, dt tensor.DType, op tensor.ReduceOp, finish func([]byte)) error {
	addrs, err := c.publish(ctx, buf, func(int) int { return len(buf) })
	if err != nil {
		return err
	}
	r := c.rank
	if err := c.reduceFromPeers(ctx, buf[offs[r]:offs[r+1]], offs[r], addrs, dt, op, finish); err != nil {
		return err
	}
	return c.signalAll(ctx, tagDone)
}

// singleCopyAllgatherv reads every peer's contribution from its send
// buffer straight into recv.
func (c *Comm) singleCopyAllgatherv(ctx context.Context, send, recv []byte, counts, offs []int) error {
	addrs, err := c.publish(ctx, send, func(q int) int { return counts[q] })
	if err != nil {
		return err
	}
	for q := range c.size {
		if q == c.rank {
			continue
		}
		if err := c.readPeer(ctx, q, recv[offs[q]:offs[q+1]], addrs[q]); err != nil {
			return err
		}
	}
	return c.signalAll(ctx, tagDone)
}

// singleCopyBroadcast: rank r copies chunk r of root's buffer to every
// non-root rank: the root writes its chunk into the peers' buffers while
// the others read theirs from the root and write it on, so every core
// copies (reading all from the root left the root's core idle).
func (c *Comm) singleCopyBroadcast(ctx context.Context, buf []byte, root int) error {
	addrs, err := c.publish(ctx, buf, func(int) int { return len(buf) })
	if err != nil {
		return err
	}
	offs := chunkOffsets(len(buf), 1, c.size)
	lo, hi := offs[c.rank], offs[c.rank+1]
	if c.rank != root {
		if err := c.readPeer(ctx, root, buf[lo:hi], addrs[root]+uint64(lo)); err != nil {
			return err
		}
	}
	for q := range c.size {
		if q != root && q != c.rank {
			if err := c.writePeer(ctx, q, buf[lo:hi], addrs[q]+uint64(lo)); err != nil {
				return err
			}
		}
	}
	return c.signalAll(ctx, tagDone)
}
