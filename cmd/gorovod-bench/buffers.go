package main

import "github.com/gorovod/gorovod/collective"

// buffers hands out the benchmark's buffers: from collective.Alloc (shared
// memory the ranks of a host run on directly) when shared, else, or when
// that fails, from the heap; release frees the shared ones.
type buffers struct {
	shared bool
	frees  []func() error
}

func get[T collective.Element](b *buffers, n int) []T {
	if b.shared && n > 0 {
		if m, err := collective.Alloc[T](n); err == nil {
			b.frees = append(b.frees, func() error { return collective.Free(m) })
			return m
		}
	}
	return make([]T, n)
}

func (b *buffers) release() {
	for _, f := range b.frees {
		_ = f()
	}
	b.frees = nil
}
