package fusion

import (
	"math/bits"
	"sync"
)

// Size classes are powers of two from MinClassBytes up to MaxClassBytes;
// larger requests are allocated exactly and never pooled.
const (
	MinClassBytes = 4 << 10
	MaxClassBytes = 1 << 30
	minShift      = 12
	numClasses    = 30 - minShift + 1
)

// Pool hands out byte slices by size class and takes them back, so buffers
// that come and go (per message, per fused op) are reused instead of
// allocated. Safe for concurrent use. The zero Pool is ready to use.
type Pool struct {
	classes [numClasses]sync.Pool // of *[]byte with cap == class size
}

// classOf returns the size class index for n bytes, or -1 when n is too large.
func classOf(n int) int {
	if n <= MinClassBytes {
		return 0
	}
	if n > MaxClassBytes {
		return -1
	}
	return bits.Len(uint(n-1)) - minShift
}

// ClassSize is the capacity of the slices Get returns for n bytes.
func ClassSize(n int) int {
	c := classOf(n)
	if c < 0 {
		return n
	}
	return MinClassBytes << c
}

// Get returns a slice of length n whose capacity is n's size class. Its
// contents are unspecified.
func (p *Pool) Get(n int) []byte {
	if n < 0 {
		n = 0
	}
	c := classOf(n)
	if c < 0 {
		return make([]byte, n)
	}
	if v, ok := p.classes[c].Get().(*[]byte); ok {
		return (*v)[:n]
	}
	return make([]byte, n, MinClassBytes<<c)
}

// Put returns b (from Get) to the pool. Slices whose capacity is not a
// size class are dropped.
func (p *Pool) Put(b []byte) {
	c := cap(b)
	if c < MinClassBytes || c > MaxClassBytes || c&(c-1) != 0 {
		return
	}
	b = b[:0]
	p.classes[classOf(c)].Put(&b)
}

// DefaultPool is a process-wide pool.
var DefaultPool = &Pool{}
