package fusion

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

func entries(rng *rand.Rand, sizes ...int) [][]byte {
	out := make([][]byte, len(sizes))
	for i, n := range sizes {
		out[i] = make([]byte, n)
		for j := range out[i] {
			out[i][j] = byte(rng.IntN(256))
		}
	}
	return out
}

func TestPackUnpack(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	b := NewBufferFromPool(&Pool{})
	in := entries(rng, 4, 0, 4096, 12, 1)
	packed := b.Pack(in)
	if len(packed) != 4113 {
		t.Fatalf("packed %d bytes, want 4113", len(packed))
	}
	if want := []int{0, 4, 4, 4100, 4112, 4113}; !slices.Equal(b.Offsets(), want) {
		t.Errorf("offsets %v, want %v", b.Offsets(), want)
	}
	if !bytes.Equal(packed, bytes.Join(in, nil)) {
		t.Fatal("packed bytes are not the entries back to back")
	}
	// Pretend a collective doubled every byte, then unpack.
	for i := range packed {
		packed[i] *= 2
	}
	out := make([][]byte, len(in))
	for i, e := range in {
		out[i] = make([]byte, len(e))
	}
	if n := b.Unpack(packed, out); n != len(packed) {
		t.Errorf("Unpack copied %d bytes, want %d", n, len(packed))
	}
	for i := range in {
		for j := range in[i] {
			if out[i][j] != in[i][j]*2 {
				t.Fatalf("entry %d byte %d: %d, want %d", i, j, out[i][j], in[i][j]*2)
			}
		}
	}
}

func TestUnpackShortBuffer(t *testing.T) {
	b := NewBuffer()
	out := [][]byte{make([]byte, 4), make([]byte, 4)}
	if n := b.Unpack([]byte{1, 2, 3, 4, 5, 6}, out); n != 6 {
		t.Errorf("copied %d, want 6", n)
	}
	if !bytes.Equal(out[1], []byte{5, 6, 0, 0}) {
		t.Errorf("second entry %v", out[1])
	}
	if n := b.Unpack(nil, out); n != 0 {
		t.Errorf("copied %d from nothing", n)
	}
}

func TestGrowsBySizeClassAndKeepsMemory(t *testing.T) {
	b := NewBufferFromPool(&Pool{})
	b.Pack([][]byte{make([]byte, 100)})
	if b.Cap() != MinClassBytes {
		t.Errorf("cap %d after 100 bytes, want %d", b.Cap(), MinClassBytes)
	}
	b.Pack([][]byte{make([]byte, 5000), make([]byte, 5000)})
	if b.Cap() != 16<<10 {
		t.Errorf("cap %d after 10000 bytes, want %d", b.Cap(), 16<<10)
	}
	b.Pack([][]byte{make([]byte, 10)})
	if b.Cap() != 16<<10 {
		t.Errorf("cap %d: the buffer shrank", b.Cap())
	}
	b.Release()
	if b.Cap() != 0 {
		t.Errorf("cap %d after Release", b.Cap())
	}
	if got := b.Pack([][]byte{{7}}); !bytes.Equal(got, []byte{7}) {
		t.Errorf("Pack after Release: %v", got)
	}
}

func TestPoolClasses(t *testing.T) {
	cases := []struct{ n, class int }{
		{0, 4096}, {1, 4096}, {4096, 4096}, {4097, 8192}, {1 << 20, 1 << 20}, {1<<20 + 1, 2 << 20},
		{MaxClassBytes, MaxClassBytes}, {MaxClassBytes + 1, MaxClassBytes + 1},
	}
	for _, c := range cases {
		if got := ClassSize(c.n); got != c.class {
			t.Errorf("ClassSize(%d) = %d, want %d", c.n, got, c.class)
		}
	}
	var p Pool
	s := p.Get(5000)
	if len(s) != 5000 || cap(s) != 8192 {
		t.Fatalf("Get(5000): len %d cap %d", len(s), cap(s))
	}
	p.Put(s)
	p.Put(make([]byte, 100))     // not a class: dropped
	p.Put(make([]byte, 0, 6000)) // not a power of two: dropped
	if g := p.Get(-1); len(g) != 0 {
		t.Errorf("Get(-1) has length %d", len(g))
	}
}

// The steady state of a training loop packs and unpacks the same fused
// op every step: no allocations.
func TestSteadyStateAllocs(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	sizes := make([]int, 200)
	for i := range sizes {
		sizes[i] = 4096
	}
	in := entries(rng, sizes...)
	b := NewBuffer()
	b.Pack(in) // first use grows
	allocs := testing.AllocsPerRun(100, func() {
		p := b.Pack(in)
		b.Unpack(p, in)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per Pack+Unpack in steady state, want 0", allocs)
	}
}

func BenchmarkPackUnpack200x4KiB(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	sizes := make([]int, 200)
	for i := range sizes {
		sizes[i] = 4096
	}
	in := entries(rng, sizes...)
	fb := NewBuffer()
	b.SetBytes(200 * 4096)
	b.ReportAllocs()
	for b.Loop() {
		p := fb.Pack(in)
		fb.Unpack(p, in)
	}
}

func TestPoolConcurrent(t *testing.T) {
	var p Pool
	done := make(chan struct{})
	for g := 0; g < 4; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; i < 200; i++ {
				b := p.Get(1000 * (i%7 + 1))
				b[0] = byte(i)
				p.Put(b)
			}
		}()
	}
	for g := 0; g < 4; g++ {
		<-done
	}
}

// fakeAlloc counts live allocations; fail makes Alloc fail.
type fakeAlloc struct {
	live map[*byte]int
	fail bool
}

func (a *fakeAlloc) Alloc(n int) ([]byte, error) {
	if a.fail {
		return nil, errors.New("no shared memory")
	}
	b := make([]byte, n)
	a.live[&b[0]] = n
	return b, nil
}

func (a *fakeAlloc) Free(b []byte) error {
	if _, ok := a.live[&b[0]]; !ok {
		return errors.New("not from Alloc")
	}
	delete(a.live, &b[0])
	return nil
}

// TestBufferAllocator: memory comes from the allocator by size class,
// growing frees the old block, Release frees the last; a failing
// allocator leaves the buffer on the pool for good.
func TestBufferAllocator(t *testing.T) {
	a := &fakeAlloc{live: map[*byte]int{}}
	b := NewBufferAlloc(a)
	p := b.Reserve(5000)
	if len(p) != 5000 || len(a.live) != 1 || a.live[&p[0]] != ClassSize(5000) {
		t.Fatalf("Reserve(5000): len %d, allocations %v", len(p), a.live)
	}
	b.Pack([][]byte{make([]byte, 3000), make([]byte, 6000)})
	if len(a.live) != 1 || b.Cap() != ClassSize(9000) {
		t.Fatalf("after growing: %d live allocations, cap %d", len(a.live), b.Cap())
	}
	b.Release()
	if len(a.live) != 0 {
		t.Fatalf("after Release: %d live allocations", len(a.live))
	}
	a.fail = true
	if p := b.Reserve(100); len(p) != 100 || b.alloc != nil {
		t.Fatalf("failing allocator: len %d, allocator kept %v", len(p), b.alloc != nil)
	}
	a.fail = false
	b.Reserve(1 << 20)
	if len(a.live) != 0 {
		t.Fatal("the allocator was used again after it failed")
	}
}
