package fusion

// Buffer is a persistent fusion buffer: Pack copies several same-dtype
// tensors into one contiguous region so one collective can reduce them all,
// Unpack copies the result back. It grows by size class (from its Pool) and
// keeps its memory across cycles, so steady-state packing allocates nothing.
// Not safe for concurrent use; one background loop owns it.
type Buffer struct {
	pool    *Pool
	alloc   Allocator // nil: the pool's memory (buf came from alloc while it is set)
	buf     []byte
	offsets []int // offsets[i] is where entry i starts; the last is the total
}

// NewBuffer returns an empty buffer drawing memory from DefaultPool.
func NewBuffer() *Buffer { return NewBufferFromPool(DefaultPool) }

// NewBufferFromPool returns an empty buffer drawing memory from p.
func NewBufferFromPool(p *Pool) *Buffer {
	if p == nil {
		p = DefaultPool
	}
	return &Buffer{pool: p}
}

// Allocator is memory other than a Pool's for a Buffer (shared memory
// the peers of a host can map).
type Allocator interface {
	Alloc(n int) ([]byte, error)
	Free(b []byte) error
}

// NewBufferAlloc returns an empty buffer drawing memory from a, by size
// class; when a fails, from DefaultPool from then on. Release gives the
// memory back.
func NewBufferAlloc(a Allocator) *Buffer { return &Buffer{pool: DefaultPool, alloc: a} }

// Reserve makes sure the buffer holds at least n bytes without growing
// later, and returns buf[:n].
func (b *Buffer) Reserve(n int) []byte {
	if n > cap(b.buf) {
		b.free()
		if b.alloc != nil {
			if m, err := b.alloc.Alloc(ClassSize(n)); err == nil {
				b.buf = m
				return b.buf[:n]
			}
			b.alloc = nil
		}
		b.buf = b.pool.Get(n)
	}
	return b.buf[:n]
}

// free gives buf back to where it came from.
func (b *Buffer) free() {
	switch {
	case b.buf == nil:
	case b.alloc != nil:
		_ = b.alloc.Free(b.buf)
	default:
		b.pool.Put(b.buf)
	}
	b.buf = nil
}

// Pack copies entries back to back into the buffer and returns the packed
// region (valid until the next Pack or Reserve). Offsets tells where each
// entry landed.
func (b *Buffer) Pack(entries [][]byte) []byte {
	total := 0
	for _, e := range entries {
		total += len(e)
	}
	out := b.Reserve(total)
	b.offsets = b.offsets[:0]
	off := 0
	for _, e := range entries {
		b.offsets = append(b.offsets, off)
		off += copy(out[off:], e)
	}
	b.offsets = append(b.offsets, off)
	return out
}

// Unpack copies buf (a region laid out as Pack lays out entries) back into
// entries, in order. It never reads past buf: if buf is shorter than the
// entries, the tail entries are left partly or wholly untouched; it returns
// the number of bytes copied.
func (b *Buffer) Unpack(buf []byte, entries [][]byte) int {
	off := 0
	for _, e := range entries {
		if off >= len(buf) {
			break
		}
		off += copy(e, buf[off:])
	}
	return off
}

// Offsets returns where each entry of the last Pack starts, plus the total
// length as a last element. Valid until the next Pack.
func (b *Buffer) Offsets() []int { return b.offsets }

// Cap is the capacity of the memory the buffer holds.
func (b *Buffer) Cap() int { return cap(b.buf) }

// Release gives the memory back to the pool; the buffer stays usable.
func (b *Buffer) Release() {
	b.free()
	b.offsets = nil
}
