package coordinator

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math/bits"
	"slices"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
)

// Exchange is the I/O a negotiation cycle needs; the collective package
// implements it over the data plane. The coordinator never does I/O itself
// except through this interface.
type Exchange interface {
	Rank() int
	Size() int
	// AllreduceBits combines bits elementwise across all ranks (ops.BitAnd
	// or ops.BitOr), in place.
	AllreduceBits(ctx context.Context, bits []uint64, op tensor.ReduceOp) error
	// GatherToRoot: every rank passes its payload; rank 0 gets all payloads
	// in rank order, the others nil.
	GatherToRoot(ctx context.Context, payload []byte) ([][]byte, error)
	// BroadcastFromRoot: rank 0 passes payload and every rank gets a copy.
	BroadcastFromRoot(ctx context.Context, payload []byte) ([]byte, error)
}

// Stats are a controller's counters since it was created.
type Stats struct {
	Cycles         int64 // Cycle calls completed
	FastPathCycles int64 // cycles decided from the cache bits alone
	SlowPathCycles int64 // cycles that gathered requests to rank 0
	RequestsSent   int64 // requests this rank sent to rank 0
	CacheHits      int64 // requests found in the cache (counted once per request)
	CacheMisses    int64 // requests not in the cache
	CacheInvalid   int64 // requests cached with other parameters, or stalled while cached
	CacheErased    int64 // cache entries erased by invalidation
	Responses      int64 // responses returned to the caller
	FusedResponses int64 // returned responses carrying more than one name
	FusedTensors   int64 // names carried by fused responses
	Errors         int64 // returned error responses
}

// Status bits of word 0 of the AND exchange. Each is written inverted (set
// means "no") so that the AND of all ranks clears it when any rank has the
// condition: one exchange computes ANDs (cache hits) and ORs (status).
const (
	statusNotShutdown uint64 = 1 << iota
	statusNotUncached        // no request that needs rank 0 (also: rank 0 must time out a stall)
	statusNotInvalid         // no cache entry to erase
	statusNotJoined          // this rank has not joined
	statusAll         = statusNotShutdown | statusNotUncached | statusNotInvalid | statusNotJoined
)

// headerWords precede the cache bits in the AND vector: the status word,
// then a hash of the settings every rank must share and its complement
// (the AND of both equals them on every rank only if all ranks agree).
const headerWords = 3

// settingsHash digests the settings that must be equal on every rank.
func settingsHash(cfg *Config) uint64 {
	h := fnv.New64a()
	var b [24]byte
	binary.LittleEndian.PutUint64(b[0:], uint64(cfg.Size))
	binary.LittleEndian.PutUint64(b[8:], uint64(cfg.CacheCapacity))
	binary.LittleEndian.PutUint64(b[16:], uint64(cfg.FusionThresholdBytes))
	h.Write(b[:])
	return h.Sum64()
}

// queued is one of this rank's requests in flight.
type queued struct {
	req      Request
	since    time.Time // when it was submitted
	state    cacheState
	entry    *cacheEntry // the cache entry of a HIT or INVALID lookup, this cycle
	counted  bool        // stats already counted its lookup
	sent     bool        // sent to rank 0; waiting in the message table
	answered bool
}

// Controller negotiates, for one rank, which collectives every rank runs
// and in which order. It is a state machine with no goroutines, clocks or
// I/O of its own: Cycle drives it through an Exchange. It is not safe for
// concurrent use; the background loop owns it.
type Controller struct {
	cfg      Config
	sets     map[int][]int // process set -> member ranks, ascending; 0 is everyone
	memberOf map[int]bool  // sets this rank belongs to
	cache    *responseCache

	// Per-rank state.
	pending     map[key]*queued // every request in flight on this rank
	queue       []*queued       // the subset not yet sent to rank 0, in submission order
	withdrawals []Withdrawal    // sent requests taken back, for rank 0 in the next cycle
	selfJoined  bool            // this rank submitted Join and has not seen the Join response
	joinMode    bool            // the last cycle saw some rank joined: the cache is bypassed (same on every rank)
	stats       Stats
	broken      error
	lastSlow    bool // the last cycle took the slow path (for tests and logs)

	// Rank 0 only.
	table    *messageTable
	stalls   []Stall
	activity []RankActivity // by rank: what rank 0 last saw each rank submit
	// activityAt orders activity and completed: when each was seen.
	activityAt  []uint64
	completed   map[int]completion // by process set: its last response
	activitySeq uint64
	stallsAt    time.Time // when stalls were found

	settings uint64 // settingsHash(cfg)
	cur      cycleState
	cycleNo  uint64    // counts begin calls; marks the cache entries hit in this cycle
	free     []*queued // recycled queue entries (steady state allocates none)
	bitsBuf  []uint64  // reused AND vector
	invBuf   []uint64  // reused invalid-bits vector
}

// cycleState is what one cycle carries from phase to phase.
type cycleState struct {
	now           time.Time
	shutdown      bool // this rank asked
	anyShutdown   bool
	slow          bool
	bits          []uint64
	invalid       []uint64      // this rank's invalid cache bits
	cached        []*Response   // common hits, in bit order; point into the cache until finish
	cachedEntries []*cacheEntry // their entries
	localErrs     []Response    // errors only this rank sees (bad process set, duplicate name)
}

// NewController validates cfg and returns a controller for cfg.Rank.
func NewController(cfg Config) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxStallNamesPerRank == 0 {
		cfg.MaxStallNamesPerRank = 6
	}
	all := make([]int, cfg.Size)
	for i := range all {
		all[i] = i
	}
	c := &Controller{
		cfg:      cfg,
		sets:     map[int][]int{0: all},
		memberOf: map[int]bool{0: true},
		cache:    newResponseCache(cfg.CacheCapacity),
		pending:  make(map[key]*queued),
		settings: settingsHash(&cfg),
	}
	if cfg.Rank == 0 {
		c.table = newMessageTable(cfg.Size)
		c.activity = make([]RankActivity, cfg.Size)
		c.activityAt = make([]uint64, cfg.Size)
	}
	return c, nil
}

// AddProcessSet registers process set id (> 0) with the given member
// ranks. Every rank must register the same sets, in the same cycle
// interval, before submitting requests for them.
func (c *Controller) AddProcessSet(id int, ranks []int) error {
	if id <= 0 {
		return fmt.Errorf("%w: process set id %d, must be > 0 (0 is the global set)", ErrInvalid, id)
	}
	if _, ok := c.sets[id]; ok {
		return fmt.Errorf("%w: process set %d is already registered", ErrInvalid, id)
	}
	if len(ranks) == 0 {
		return fmt.Errorf("%w: process set %d has no ranks", ErrInvalid, id)
	}
	m := slices.Clone(ranks)
	slices.Sort(m)
	for i, r := range m {
		if r < 0 || r >= c.cfg.Size {
			return fmt.Errorf("%w: process set %d: rank %d out of range [0,%d)", ErrInvalid, id, r, c.cfg.Size)
		}
		if i > 0 && m[i-1] == r {
			return fmt.Errorf("%w: process set %d: rank %d listed twice", ErrInvalid, id, r)
		}
	}
	c.sets[id] = m
	if slices.Contains(m, c.cfg.Rank) {
		c.memberOf[id] = true
	}
	return nil
}

// SetFusionThreshold changes the fusion threshold (autotuning). Every rank
// must make the same change between the same two cycles: the next cycle
// fails on every rank if the thresholds differ.
func (c *Controller) SetFusionThreshold(bytes int64) error {
	if bytes < 0 {
		return fmt.Errorf("%w: fusion threshold %d bytes, must be >= 0", ErrInvalid, bytes)
	}
	c.cfg.FusionThresholdBytes = bytes
	c.settings = settingsHash(&c.cfg)
	return nil
}

// FusionThreshold returns the fusion threshold in bytes.
func (c *Controller) FusionThreshold() int64 { return c.cfg.FusionThresholdBytes }

// InFlight returns the names of this rank's requests not answered yet, in
// no particular order (for diagnostics, e.g. what a shutdown abandoned).
func (c *Controller) InFlight() []string {
	out := make([]string, 0, len(c.pending))
	for k := range c.pending {
		out = append(out, k.name)
	}
	slices.Sort(out)
	return out
}

// Stats returns the counters.
func (c *Controller) Stats() Stats { return c.stats }

// Stalls returns, on rank 0, the tensors the last cycle found stalled (each
// reported when it first passes StallWarning and again every StallWarning
// after that); nil on other ranks and in cycles with nothing new to report.
func (c *Controller) Stalls() []Stall { return c.stalls }

// Cycle runs one negotiation cycle. Every rank must call it the same number
// of times (it exchanges with all ranks). newReqs are the requests this rank
// submitted since the last cycle; now is the loop's clock; shutdown asks
// every rank to stop. The returned responses must be executed in order; they
// concern only process sets this rank belongs to. An error (I/O, or a
// malformed message from a peer) leaves the controller unusable.
func (c *Controller) Cycle(ctx context.Context, x Exchange, now time.Time, newReqs []Request, shutdown bool) (ResponseList, error) {
	if c.broken != nil {
		return ResponseList{}, c.broken
	}
	if x.Rank() != c.cfg.Rank || x.Size() != c.cfg.Size {
		return ResponseList{}, fmt.Errorf("%w: exchange is rank %d of %d, controller rank %d of %d",
			ErrInvalid, x.Rank(), x.Size(), c.cfg.Rank, c.cfg.Size)
	}
	rl, err := c.cycle(ctx, x, now, newReqs, shutdown)
	if err != nil {
		c.broken = fmt.Errorf("coordinator: controller unusable after a failed cycle: %w", err)
		return ResponseList{}, err
	}
	return rl, nil
}

func (c *Controller) cycle(ctx context.Context, x Exchange, now time.Time, newReqs []Request, shutdown bool) (ResponseList, error) {
	bits := c.begin(now, newReqs, shutdown)
	if err := x.AllreduceBits(ctx, bits, tensor.BitAnd); err != nil {
		return ResponseList{}, fmt.Errorf("cache bit exchange: %w", err)
	}
	inv, err := c.afterAnd(bits)
	if err != nil {
		return ResponseList{}, err
	}
	if inv != nil {
		if err := x.AllreduceBits(ctx, inv, tensor.BitOr); err != nil {
			return ResponseList{}, fmt.Errorf("cache invalidation exchange: %w", err)
		}
		c.afterOr(inv)
	} else {
		c.afterOr(nil)
	}
	if !c.cur.slow {
		return c.finish(c.fastPath()), nil
	}
	merged, err := c.gatherRequests(ctx, x, c.requestPayload())
	if err != nil {
		return ResponseList{}, fmt.Errorf("gathering requests to rank 0: %w", err)
	}
	var out []byte
	var rl ResponseList
	if c.cfg.Rank == 0 {
		if rl, err = c.coordinateMerged(merged); err != nil {
			// Tell the other ranks why, rather than leave them waiting.
			_, _ = broadcastResponses(ctx, x, appendAbort(nil, err))
			return ResponseList{}, err
		}
		out = AppendResponseList(nil, &rl)
	}
	got, err := broadcastResponses(ctx, x, out)
	if err != nil {
		return ResponseList{}, fmt.Errorf("broadcasting responses from rank 0: %w", err)
	}
	if c.cfg.Rank != 0 {
		if err := decodeAbort(got); err != nil {
			return ResponseList{}, err
		}
		if rl, err = DecodeResponseList(got); err != nil {
			return ResponseList{}, fmt.Errorf("response list from rank 0: %w", err)
		}
	}
	return c.finish(rl), nil
}

func (c *Controller) member(set int) bool { return c.memberOf[set] }

func (c *Controller) newQueued() *queued {
	if n := len(c.free); n > 0 {
		q := c.free[n-1]
		c.free = c.free[:n-1]
		return q
	}
	return &queued{}
}

// recycle returns an answered entry to the free list.
func (c *Controller) recycle(q *queued) {
	*q = queued{}
	c.free = append(c.free, q)
}

func (c *Controller) localError(r *Request, kind ErrorKind, format string, args ...any) {
	c.cur.localErrs = append(c.cur.localErrs, Response{
		Op: r.Op, Names: []string{r.Name}, DType: r.DType, Device: r.Device, ProcessSet: r.ProcessSet,
		Error: fmt.Sprintf(format, args...), ErrorKind: kind,
	})
}

// begin is phase 1: admit new requests, look them up in the cache and
// return the vector for the AND exchange (status word, then cache bits).
func (c *Controller) begin(now time.Time, newReqs []Request, shutdown bool) []uint64 {
	c.cur = cycleState{now: now, shutdown: shutdown}
	c.cycleNo++
	if co, ok := c.cfg.Observer.(CycleObserver); ok && c.cfg.Rank == 0 {
		co.OnCycleStart(now)
	}
	c.stalls = nil
	c.admit(now, newReqs)

	words := c.cache.words()
	if len(c.bitsBuf) != headerWords+words {
		c.bitsBuf, c.invBuf = make([]uint64, headerWords+words), make([]uint64, words)
	}
	bits := c.bitsBuf
	clear(bits)
	clear(c.invBuf)
	c.cur.invalid = c.invBuf
	uncached, invalid := c.markCacheBits(now, bits)
	c.markForeignEntries(bits)
	if c.table != nil && c.cfg.StallShutdown > 0 && c.table.overdue(now, c.cfg.StallShutdown) {
		uncached = true // rank 0 must broadcast timeout errors
	}
	if len(c.withdrawals) > 0 {
		uncached = true // rank 0 must learn of them
	}
	bits[0] = statusWord(shutdown, uncached, invalid, c.selfJoined)
	bits[1], bits[2] = c.settings, ^c.settings
	c.cur.bits = bits
	return bits
}

// admit queues this rank's new requests, answering at once (with a local
// error) those for an unknown set, a set this rank is not in, or a name
// already in flight.
func (c *Controller) admit(now time.Time, newReqs []Request) {
	for i := range newReqs {
		r := newReqs[i]
		r.Rank = c.cfg.Rank
		if r.Op == OpJoin {
			r.Name, r.ProcessSet = JoinName, 0
		}
		if _, ok := c.sets[r.ProcessSet]; !ok {
			c.localError(&r, ErrorInvalid, "%s %q: unknown process set %d", r.Op, r.Name, r.ProcessSet)
			continue
		}
		if !c.member(r.ProcessSet) {
			c.localError(&r, ErrorInvalid, "%s %q: rank %d is not a member of process set %d (ranks %v)",
				r.Op, r.Name, r.Rank, r.ProcessSet, c.sets[r.ProcessSet])
			continue
		}
		k := key{r.ProcessSet, r.Name}
		if _, dup := c.pending[k]; dup {
			c.localError(&r, ErrorInvalid, "%s %q: rank %d already has a collective of that name in flight", r.Op, r.Name, r.Rank)
			continue
		}
		q := c.newQueued()
		q.req, q.since = r, now
		c.pending[k] = q
		c.queue = append(c.queue, q)
		if r.Op == OpJoin {
			c.selfJoined = true
		}
	}
}

// markCacheBits decides each queued request's cache state and sets its
// bit in bits (a hit) or in the invalid vector; it reports whether any
// request must take the slow path and whether any cache entry is invalid.
func (c *Controller) markCacheBits(now time.Time, bits []uint64) (uncached, invalid bool) {
	bypass := c.joinMode || c.selfJoined
	for _, q := range c.queue {
		q.state, q.entry = cacheMiss, nil
		if c.cache.enabled() && cacheableOp(q.req.Op) {
			q.entry, q.state = c.cache.lookup(&q.req)
			switch {
			case q.state != cacheHit:
			case bypass:
				// A joined rank never hits, so no hit would be common: the
				// entry is erased everywhere and every rank's request for
				// it goes to rank 0, which counts the joined ranks. (Sending
				// only this rank's request while others wait on their hits
				// would split the tensor between the two paths forever.)
				q.state = cacheInvalid
			case c.stuckAfter() > 0 && now.Sub(q.since) > c.stuckAfter():
				// A cached tensor waiting this long is stuck on other
				// ranks; the slow path lets rank 0's stall inspector see it.
				q.state = cacheInvalid
			}
		}
		if !q.counted {
			q.counted = true
			switch q.state {
			case cacheHit:
				c.stats.CacheHits++
			case cacheMiss:
				c.stats.CacheMisses++
			}
		}
		switch q.state {
		case cacheHit:
			bits[headerWords+q.entry.bit/64] |= 1 << (q.entry.bit % 64)
		case cacheInvalid:
			c.stats.CacheInvalid++
			c.cur.invalid[q.entry.bit/64] |= 1 << (q.entry.bit % 64)
			invalid, uncached = true, true
		default:
			uncached = true
		}
	}
	return uncached, invalid
}

// markForeignEntries sets the bits of cache entries of sets this rank is
// not in: they must not block their members.
func (c *Controller) markForeignEntries(bits []uint64) {
	if len(c.sets) <= 1 {
		return
	}
	for bit, e := range c.cache.entries {
		if !c.member(e.key.set) {
			bits[headerWords+bit/64] |= 1 << (bit % 64)
		}
	}
}

// statusWord is this rank's status word for the AND exchange: each
// condition clears its "not" bit, so one rank with it clears it for all.
func statusWord(shutdown, uncached, invalid, joined bool) uint64 {
	st := statusAll
	if shutdown {
		st &^= statusNotShutdown
	}
	if uncached {
		st &^= statusNotUncached
	}
	if invalid {
		st &^= statusNotInvalid
	}
	if joined {
		st &^= statusNotJoined
	}
	return st
}

// stuckAfter is how long a cached request may wait for the other ranks
// before it is sent to rank 0's stall inspector; 0 means never.
func (c *Controller) stuckAfter() time.Duration {
	if c.cfg.StallWarning > 0 {
		return c.cfg.StallWarning
	}
	return c.cfg.StallShutdown
}

func cacheableOp(op OpType) bool {
	switch op {
	case OpAllreduce, OpAllgather, OpBroadcast, OpAlltoall, OpReduceScatter:
		return true
	}
	return false
}

// afterAnd is phase 2: read the combined status and hits. It returns the
// vector for the OR exchange of invalid bits, or nil when no rank has any.
// It fails when the ranks' settings differ: they would plan different
// fusions from the same cache bits.
func (c *Controller) afterAnd(bits []uint64) ([]uint64, error) {
	if bits[1] != c.settings || bits[2] != ^c.settings {
		return nil, fmt.Errorf("%w: ranks disagree on negotiation settings (world size, Config.CacheCapacity or Config.FusionThresholdBytes); rank %d has size %d, cache capacity %d, fusion threshold %d bytes",
			ErrInvalid, c.cfg.Rank, c.cfg.Size, c.cfg.CacheCapacity, c.cfg.FusionThresholdBytes)
	}
	st := bits[0]
	c.cur.anyShutdown = st&statusNotShutdown == 0
	c.cur.slow = st&statusNotUncached == 0
	c.joinMode = st&statusNotJoined == 0
	c.cur.bits = bits
	if st&statusNotInvalid == 0 {
		return c.cur.invalid, nil
	}
	return nil, nil
}

// afterOr is phase 3: turn the common hits into responses, then erase the
// invalidated entries (bits are renumbered after an erase, so hits are
// resolved first).
func (c *Controller) afterOr(invalid []uint64) {
	common := c.cur.bits[headerWords:]
	if invalid != nil {
		for i := range common {
			common[i] &^= invalid[i]
		}
	}
	hits := 0
	for i, w := range common {
		if i*64 < len(c.cache.entries) {
			hits += bits.OnesCount64(w)
		}
	}
	if hits > 0 {
		c.cur.cached = make([]*Response, 0, hits)
		c.cur.cachedEntries = make([]*cacheEntry, 0, hits)
	}
	for bit, e := range c.cache.entries {
		if common[bit/64]&(1<<(bit%64)) == 0 {
			continue
		}
		c.cur.cached = append(c.cur.cached, &e.resp)
		c.cur.cachedEntries = append(c.cur.cachedEntries, e)
		e.hit = c.cycleNo
		if o := c.cfg.Observer; o != nil && c.cfg.Rank == 0 {
			o.OnNegotiateStart(c.cur.now, e.key.name, e.resp.Op)
			o.OnNegotiateEnd(c.cur.now, e.key.name)
		}
	}
	if invalid != nil {
		c.stats.CacheErased += int64(c.cache.erase(invalid))
	}
}

// fastPath is phase 4 when no rank needs rank 0: every rank builds the
// same list from the common hits.
func (c *Controller) fastPath() ResponseList {
	return ResponseList{
		Responses: fuse(c.cur.cached, c.cfg.FusionThresholdBytes),
		Shutdown:  c.cur.anyShutdown,
	}
}

// requestPayload is phase 4 of the slow path on every rank: the requests
// rank 0 has not seen yet. Hits every rank shares are answered from the
// cache; other hits wait for the other ranks.
func (c *Controller) requestPayload() []byte {
	var l RequestList
	l.Shutdown = c.cur.shutdown
	l.Withdrawn, c.withdrawals = c.withdrawals, nil
	kept := c.queue[:0]
	for _, q := range c.queue {
		if q.state == cacheHit {
			kept = append(kept, q)
			continue
		}
		q.sent = true
		r := q.req
		r.Age = max(0, c.cur.now.Sub(q.since))
		l.Requests = append(l.Requests, r)
	}
	clear(c.queue[len(kept):])
	c.queue = kept
	c.stats.RequestsSent += int64(len(l.Requests))
	return AppendRequestList(nil, &l)
}

// coordinate is phase 5 on rank 0 from every rank's payload, in rank
// order (the flat gather; tests).
func (c *Controller) coordinate(payloads [][]byte) (ResponseList, error) {
	if len(payloads) != c.cfg.Size {
		return ResponseList{}, fmt.Errorf("%w: gathered %d request lists for %d ranks", ErrInvalid, len(payloads), c.cfg.Size)
	}
	return c.coordinateMerged(mergePayloads(payloads, c.cfg.Size))
}

// coordinateMerged is phase 5 on rank 0: count the gathered requests,
// answer the ready ones (and the overdue ones), fuse, and return the list
// to broadcast.
func (c *Controller) coordinateMerged(m *mergedRequests) (ResponseList, error) {
	if m.err != nil {
		return ResponseList{}, m.err
	}
	if m.failure != "" {
		return ResponseList{}, fmt.Errorf("%w: %s", ErrMalformed, m.failure)
	}
	t := c.table
	t.cycle++
	for _, w := range m.withdrawn { // before any request of the cycle is counted
		eachRank(w.ranks, func(rank int) { t.withdraw(rank, key{w.w.ProcessSet, w.w.Name}) })
	}
	ready := readyEntries{in: make(map[*tableEntry]bool)}
	errs, joinArrived, err := c.countRequests(m.groups, &ready)
	if err != nil {
		return ResponseList{}, err
	}
	if joinArrived {
		// A join makes every tensor the joined ranks did not submit count
		// them as ready.
		for _, e := range t.order {
			if !e.done {
				ready.addIfReady(t, e, c.sets[e.key.set])
			}
		}
	}
	responses, join := c.answerReady(ready.list)
	if c.cfg.StallShutdown > 0 {
		responses = c.timeOutStalls(responses)
	}
	t.compact()
	if join != nil {
		responses = append(responses, *join)
	}
	all := make([]*Response, 0, len(c.cur.cached)+len(responses))
	all = append(all, c.cur.cached...)
	for i := range responses {
		all = append(all, &responses[i])
	}
	rl := ResponseList{Responses: append(errs, fuse(all, c.cfg.FusionThresholdBytes)...), Shutdown: c.cur.anyShutdown || m.shutdown}
	return rl, nil
}

// readyEntries are the table entries every member has submitted this
// cycle, in the order they became ready, each once.
type readyEntries struct {
	list []*tableEntry
	in   map[*tableEntry]bool
}

func (r *readyEntries) addIfReady(t *messageTable, e *tableEntry, members []int) {
	if t.ready(e, members) && !r.in[e] {
		r.in[e] = true
		r.list = append(r.list, e)
	}
}

// countRequests enters every rank's requests in the table, reading the
// ranks' lists one after another, and collects the entries that become
// ready; it answers at once (errs) a request for a set its sender is not
// in, and reports whether a join arrived. The ranks of a group share one
// copy of its request (read-only from here on): the checking, copying and
// hashing is once per group, only the table's slot and counters per rank.
func (c *Controller) countRequests(groups []requestGroup, ready *readyEntries) (errs []Response, joinArrived bool, err error) {
	order, start, err := readingOrder(groups, c.cfg.Size)
	if err != nil {
		return nil, false, err
	}
	t, now, obs := c.table, c.cur.now, c.cfg.Observer
	shared := make([]*Request, len(groups))
	entries := make([]*tableEntry, len(groups)) // the group's entry once added
	for rank := range c.cfg.Size {
		for _, gi := range order[start[rank]:start[rank+1]] {
			req := shared[gi]
			if req == nil {
				req = new(Request)
				*req = groups[gi].req
				req.Rank = rank // the lowest rank of the group: its first read
				if req.Op == OpJoin {
					req.Name, req.ProcessSet = JoinName, 0
				}
				shared[gi] = req
			}
			members, ok := c.sets[req.ProcessSet]
			if !ok || !isMember(members, rank, c.cfg.Size) {
				// The sender's controller checks this; only a peer out of
				// step with our process sets gets here.
				errs = append(errs, Response{Op: req.Op, Names: []string{req.Name}, ProcessSet: req.ProcessSet, Device: CPU,
					Error:     fmt.Sprintf("%s %q: rank %d sent it for process set %d, which rank 0 does not have it in", req.Op, req.Name, rank, req.ProcessSet),
					ErrorKind: ErrorInvalid})
				continue
			}
			e, isNew, dup := t.add(entries[gi], req, rank, now)
			entries[gi] = e
			if dup {
				continue
			}
			if obs != nil {
				if isNew {
					obs.OnNegotiateStart(now, req.Name, req.Op)
				}
				obs.OnRankReady(now, req.Name, rank)
			}
			joinArrived = joinArrived || req.Op == OpJoin
			ready.addIfReady(t, e, members)
		}
		if n := start[rank+1]; n > start[rank] { // the last request read is what rank 0 last saw
			last := shared[order[n-1]]
			c.saw(rank, "submitted", last.Op, last.Name)
		}
	}
	return errs, joinArrived, nil
}

// isMember reports whether rank is in members (ascending).
func isMember(members []int, rank, size int) bool {
	if len(members) == size { // every rank (set 0)
		return rank >= 0 && rank < size
	}
	_, in := slices.BinarySearch(members, rank)
	return in
}

// answerReady builds the responses of the ready entries and removes them
// from the table; the join response, if any, is returned apart so that it
// goes last.
func (c *Controller) answerReady(ready []*tableEntry) (responses []Response, join *Response) {
	t, now, obs := c.table, c.cur.now, c.cfg.Observer
	for _, e := range ready {
		r := t.buildResponse(e, c.sets[e.key.set])
		if e.key == joinKey {
			join = &r
		} else {
			responses = append(responses, r)
		}
	}
	// The join entry is removed last: buildResponse consults it to name
	// the joined ranks.
	for _, e := range ready {
		t.remove(e)
		if obs != nil {
			obs.OnNegotiateEnd(now, e.key.name)
		}
	}
	return responses, join
}

// timeOutStalls appends a timeout error for every entry that has waited
// for its missing ranks longer than the stall shutdown time, and removes
// those entries.
func (c *Controller) timeOutStalls(responses []Response) []Response {
	t, now, obs := c.table, c.cur.now, c.cfg.Observer
	for _, e := range t.order {
		if e.done || e.key == joinKey || now.Sub(e.firstSeen) < c.cfg.StallShutdown {
			continue
		}
		s := t.stall(e, c.sets[e.key.set], now)
		responses = append(responses, Response{
			Op: s.Op, Names: []string{e.key.name}, ProcessSet: e.key.set, Device: CPU, ErrorKind: ErrorTimeout,
			Error: fmt.Sprintf("%s %q timed out after %v: ranks %v never submitted it (ranks %v did); the stall shutdown time is %v",
				s.Op, e.key.name, s.Waiting, s.MissingRanks, s.SubmittedRanks, c.cfg.StallShutdown),
		})
		t.remove(e)
		if obs != nil {
			obs.OnNegotiateEnd(now, e.key.name)
		}
	}
	return responses
}

// finish is the last phase on every rank: update the cache from the common
// list (identically everywhere), retire the answered requests, and keep the
// responses for the sets this rank is in.
func (c *Controller) finish(rl ResponseList) ResponseList {
	if c.table != nil {
		c.sawCompleted(&rl)
	}
	c.retireCommonHits()
	c.retireAnswered(rl.Responses)
	c.dropAnswered()
	out := c.responsesForThisRank(rl)
	c.countCycle(out.Responses)
	if c.table != nil && c.cfg.StallWarning > 0 {
		c.stalls = c.table.inspect(c.cur.now, c.cfg.StallWarning, c.sets)
		c.stallsAt = c.cur.now
	}
	c.lastSlow = c.cur.slow
	c.cur = cycleState{}
	return out
}

// retireCommonHits refreshes the common hits in the LRU, in bit order, and
// marks this rank's requests for them answered.
func (c *Controller) retireCommonHits() {
	for _, e := range c.cur.cachedEntries {
		c.cache.refresh(e)
	}
	for _, q := range c.queue {
		if q.state == cacheHit && q.entry.hit == c.cycleNo {
			q.answered = true
			delete(c.pending, key{q.req.ProcessSet, q.req.Name})
		}
	}
}

// retireAnswered takes the responses that came from rank 0 (the fast path
// has nothing else): it caches them and marks the requests they answer.
func (c *Controller) retireAnswered(responses []Response) {
	for i := range responses {
		r := &responses[i]
		if r.Op == OpJoin { // completed or failed: this rank is no longer joined
			c.selfJoined = false
		}
		if !c.cur.slow {
			continue
		}
		cache := c.cache.enabled() && cacheable(r)
		for j, name := range r.Names {
			k := key{r.ProcessSet, name}
			if e := c.cache.entry(k); e != nil && e.hit == c.cycleNo {
				continue // a common hit, done above
			}
			q := c.pending[k]
			if cache {
				var params *Request
				if q != nil {
					params = &q.req
				}
				c.cache.put(r.single(j), params)
			}
			if q != nil {
				delete(c.pending, k)
				q.answered = true
				if q.sent {
					c.recycle(q)
				}
			}
		}
	}
}

// dropAnswered removes the answered requests from the queue.
func (c *Controller) dropAnswered() {
	kept := c.queue[:0]
	for _, q := range c.queue {
		if !q.answered {
			kept = append(kept, q)
		} else {
			c.recycle(q)
		}
	}
	clear(c.queue[len(kept):])
	c.queue = kept
}

// responsesForThisRank are this cycle's local errors and the responses of
// rl for the sets this rank is in (join is everyone's).
func (c *Controller) responsesForThisRank(rl ResponseList) ResponseList {
	out := ResponseList{Shutdown: rl.Shutdown, Responses: rl.Responses}
	if len(c.cur.localErrs) > 0 || len(c.sets) > 1 {
		out.Responses = c.cur.localErrs
		for i := range rl.Responses {
			r := &rl.Responses[i]
			if r.Op != OpJoin && !c.member(r.ProcessSet) {
				continue
			}
			out.Responses = append(out.Responses, *r)
		}
	}
	return out
}

// countCycle adds the cycle and its responses to the statistics.
func (c *Controller) countCycle(responses []Response) {
	for i := range responses {
		r := &responses[i]
		if r.Error != "" {
			c.stats.Errors++
		}
		if len(r.Names) > 1 {
			c.stats.FusedResponses++
			c.stats.FusedTensors += int64(len(r.Names))
		}
	}
	c.stats.Responses += int64(len(responses))
	c.stats.Cycles++
	if c.cur.slow {
		c.stats.SlowPathCycles++
	} else {
		c.stats.FastPathCycles++
	}
}

// Withdraw takes back this rank's request name in set, which must not have
// been answered (the caller has not been given a response for it): it
// reports whether the request was in flight. A request rank 0 has not seen
// is dropped here; one it has is withdrawn in the next cycle, which then
// takes the slow path, before any request of that cycle (a new request of
// the same name included) is counted. Either way no response of a later
// cycle names it for this rank, and the name may be submitted again. Join
// cannot be withdrawn (it changes how every rank negotiates): Withdraw
// returns false for it.
func (c *Controller) Withdraw(set int, name string) bool {
	k := key{set, name}
	q := c.pending[k]
	if q == nil || q.answered || q.req.Op == OpJoin {
		return false
	}
	delete(c.pending, k)
	if i := slices.Index(c.queue, q); i >= 0 {
		c.queue = slices.Delete(c.queue, i, i+1)
	}
	if q.sent {
		c.withdrawals = append(c.withdrawals, Withdrawal{ProcessSet: set, Name: name})
	}
	c.recycle(q)
	return true
}
