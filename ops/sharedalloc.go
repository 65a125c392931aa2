package ops

import (
	"fmt"
	"slices"
	"sync"
	"unsafe"

	"github.com/gorovod/gorovod/internal/tensor"
	"github.com/gorovod/gorovod/internal/transport/shm"
)

// Alloc carves buffers out of arenas: shared-memory regions of 1 MiB,
// then 2, 4 ... up to 64 MiB as more is asked for, so that a model's
// hundreds of gradients take a few descriptors and a peer maps a few
// regions, not one per tensor. A buffer of sharedDedicatedBytes or more
// gets a region of its own. Arena memory is never reused: a region goes
// when every buffer in it is freed.
const (
	arenaMinBytes = 1 << 20
	arenaMaxBytes = 64 << 20
	allocAlign    = 64 // cache lines, and any SIMD load
)

// sharedDedicatedBytes is the size from which a buffer gets its own region
// (a variable for tests).
var sharedDedicatedBytes = arenaMaxBytes / 4

type arena struct {
	r      *shm.Region
	used   int             // bytes handed out, from the start
	allocs map[uintptr]int // live buffers: start address -> length
}

func (a *arena) mem() []byte { return a.r.Bytes() }

var regions struct {
	mu   sync.Mutex
	list []*arena // sorted by address
	cur  *arena   // the arena small buffers come from (nil: none yet)
	next int      // the size of the next arena
}

// Alloc returns n bytes of memory that collectives can run on in place
// across the processes of a host (see the comment at the top of
// shared.go): zeroed, in shared memory, aligned to 64 bytes. Give it back
// with Free; it is not garbage collected, and must not be used after Free.
// During a shared op the peers write into the buffer; when an op fails
// (a peer lost, a deadline) a peer still running may write its part after
// this rank's call returned, so the buffer's contents are undefined after
// a failed op (the job has failed anyway).
func Alloc(n int) ([]byte, error) {
	if n <= 0 {
		return nil, fmt.Errorf("%w: Alloc(%d): want a positive size", tensor.ErrInvalid, n)
	}
	size := (n + allocAlign - 1) / allocAlign * allocAlign
	regions.mu.Lock()
	defer regions.mu.Unlock()
	a := regions.cur
	if size >= sharedDedicatedBytes || a == nil || a.used+size > len(a.mem()) {
		arenaSize := size
		if size < sharedDedicatedBytes {
			arenaSize = max(regions.next, arenaMinBytes, size)
			regions.next = min(2*arenaSize, arenaMaxBytes)
		}
		r, err := shm.NewRegion("", arenaSize)
		if err != nil {
			return nil, fmt.Errorf("ops: Alloc(%d): %w", n, err)
		}
		a = &arena{r: r, allocs: map[uintptr]int{}}
		i, _ := slices.BinarySearchFunc(regions.list, base(r.Bytes()), func(x *arena, p uintptr) int { return cmpAddr(base(x.mem()), p) })
		regions.list = slices.Insert(regions.list, i, a)
		if size < sharedDedicatedBytes {
			if old := regions.cur; old != nil && len(old.allocs) == 0 {
				closeArena(old)
			}
			regions.cur = a
		}
	}
	b := a.mem()[a.used : a.used+n : a.used+n]
	a.allocs[base(b)] = n
	a.used += size
	return b, nil
}

// Free releases memory from Alloc (b must start where Alloc's slice
// started). Peers that mapped its region keep their mapping until they
// drop it.
func Free(b []byte) error {
	regions.mu.Lock()
	defer regions.mu.Unlock()
	i, ok := arenaIndex(b)
	if !ok {
		return fmt.Errorf("%w: Free: %w", tensor.ErrInvalid, ErrNotShared)
	}
	a := regions.list[i]
	if _, live := a.allocs[base(b)]; !live {
		return fmt.Errorf("%w: Free: %w", tensor.ErrInvalid, ErrNotShared)
	}
	delete(a.allocs, base(b))
	if len(a.allocs) == 0 && a != regions.cur {
		return closeArena(a)
	}
	return nil
}

// closeArena removes a from the list and closes its region (regions.mu
// held).
func closeArena(a *arena) error {
	regions.list = slices.DeleteFunc(regions.list, func(x *arena) bool { return x == a })
	if regions.cur == a {
		regions.cur = nil
	}
	return a.r.Close()
}

// Shared reports whether b lies in memory from Alloc.
func Shared(b []byte) bool {
	_, _, ok := regionOf(b)
	return ok
}

func base(b []byte) uintptr {
	if cap(b) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))
}

func cmpAddr(a, b uintptr) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// arenaIndex finds the arena holding all of b (regions.mu held).
func arenaIndex(b []byte) (int, bool) {
	p := base(b)
	if p == 0 {
		return 0, false
	}
	i, found := slices.BinarySearchFunc(regions.list, p, func(x *arena, a uintptr) int { return cmpAddr(base(x.mem()), a) })
	if !found {
		i--
	}
	if i < 0 {
		return 0, false
	}
	m := regions.list[i].mem()
	if p+uintptr(len(b)) > base(m)+uintptr(len(m)) {
		return 0, false
	}
	return i, true
}

// regionOf is the handle of the region holding b and b's offset in it.
func regionOf(b []byte) (shm.RegionHandle, int, bool) {
	regions.mu.Lock()
	defer regions.mu.Unlock()
	i, ok := arenaIndex(b)
	if !ok {
		return shm.RegionHandle{}, 0, false
	}
	r := regions.list[i].r
	return r.Handle(), int(base(b) - base(r.Bytes())), true
}
