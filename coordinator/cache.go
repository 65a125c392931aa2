package coordinator

import "sort"

// cacheState is the outcome of looking a request up in the response cache.
type cacheState uint8

const (
	cacheMiss    cacheState = iota // name not cached
	cacheHit                       // cached with the same parameters
	cacheInvalid                   // cached with other parameters: must be erased everywhere
)

type cacheEntry struct {
	key  key
	resp Response // one name, as negotiated (identical on every rank)
	// params is this rank's own request for the name (differs per rank for
	// allgather); hasParams is false when this rank never submitted it.
	params    Request
	hasParams bool
	seq       uint64 // last use; smallest is least recently used
	bit       int    // its position in entries (and in the bit vectors)
	hit       uint64 // the cycle in which every rank last hit it
}

// responseCache is Horovod's response cache: an LRU of negotiated
// single-name responses whose bit positions are identical on every rank,
// because every rank applies the same puts and erases in the same order.
// Bits are dense (0..len-1); after an eviction or erase they are
// renumbered least recently used first.
type responseCache struct {
	capacity int
	entries  []*cacheEntry // index is the bit
	byKey    map[key]int   // key -> bit
	seq      uint64
}

func newResponseCache(capacity int) *responseCache {
	return &responseCache{capacity: capacity, byKey: make(map[key]int)}
}

func (c *responseCache) enabled() bool { return c.capacity > 0 }

// words is the number of uint64 words holding one bit per possible entry.
func (c *responseCache) words() int { return (c.capacity + 63) / 64 }

func cacheable(r *Response) bool {
	if r.Error != "" || len(r.JoinedRanks) > 0 {
		return false
	}
	switch r.Op {
	case OpAllreduce, OpAllgather, OpBroadcast, OpAlltoall, OpReduceScatter:
		return true
	}
	return false
}

func (c *responseCache) lookup(req *Request) (*cacheEntry, cacheState) {
	bit, ok := c.byKey[key{req.ProcessSet, req.Name}]
	if !ok {
		return nil, cacheMiss
	}
	e := c.entries[bit]
	if e.hasParams && e.params.sameParams(req) {
		return e, cacheHit
	}
	return e, cacheInvalid
}

// refresh marks e most recently used.
func (c *responseCache) refresh(e *cacheEntry) {
	c.seq++
	e.seq = c.seq
}

// entry returns the entry for k, or nil.
func (c *responseCache) entry(k key) *cacheEntry {
	if bit, ok := c.byKey[k]; ok {
		return c.entries[bit]
	}
	return nil
}

// put stores a single-name response (or refreshes it) as most recently used.
func (c *responseCache) put(resp Response, params *Request) {
	if !c.enabled() {
		return
	}
	k := key{resp.ProcessSet, resp.Names[0]}
	c.seq++
	if bit, ok := c.byKey[k]; ok {
		e := c.entries[bit]
		e.resp, e.seq = resp, c.seq
		e.hasParams = params != nil
		if params != nil {
			e.params = *params
		}
		return
	}
	e := &cacheEntry{key: k, resp: resp, seq: c.seq, hasParams: params != nil}
	if params != nil {
		e.params = *params
	}
	if len(c.entries) < c.capacity {
		e.bit = len(c.entries)
		c.byKey[k] = e.bit
		c.entries = append(c.entries, e)
		return
	}
	lru := 0
	for i, x := range c.entries {
		if x.seq < c.entries[lru].seq {
			lru = i
		}
	}
	delete(c.byKey, c.entries[lru].key)
	c.entries[lru] = e
	c.byKey[k] = lru
	c.renumber()
}

// erase removes the entries whose bits are set in bits (one bit per entry).
func (c *responseCache) erase(bits []uint64) int {
	n := 0
	kept := c.entries[:0]
	for i, e := range c.entries {
		if i/64 < len(bits) && bits[i/64]&(1<<(i%64)) != 0 {
			delete(c.byKey, e.key)
			n++
			continue
		}
		kept = append(kept, e)
	}
	for i := len(kept); i < len(c.entries); i++ {
		c.entries[i] = nil
	}
	c.entries = kept
	if n > 0 {
		c.renumber()
	}
	return n
}

// renumber orders bits least recently used first, so the fast path's bit
// order follows the order tensors were last negotiated in.
func (c *responseCache) renumber() {
	sort.Slice(c.entries, func(i, j int) bool { return c.entries[i].seq < c.entries[j].seq })
	for i, e := range c.entries {
		e.bit = i
		c.byKey[e.key] = i
	}
}

func (c *responseCache) len() int { return len(c.entries) }
