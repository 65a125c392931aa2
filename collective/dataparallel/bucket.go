package dataparallel

import (
	"context"
	"slices"
	"unsafe"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/internal/tensor"
)

// bucket is the unit of communication: one gradient, or a group packed
// into one buffer.
type bucket[T collective.Element] struct {
	op      string // the collective's name
	members []*entry[T]
	nready  int
	packed  []T                   // a group's buffer (no compression)
	f16     []collective.Float16  // wire buffer (FP16)
	bf16    []collective.BFloat16 // wire buffer (BF16)
	resid   []float32             // error feedback: rounding error left from the last step
}

func (b *bucket[T]) names() []string {
	ns := make([]string, len(b.members))
	for i, e := range b.members {
		ns[i] = e.name
	}
	return ns
}

func (b *bucket[T]) len() int {
	n := 0
	for _, e := range b.members {
		n += len(e.buf)
	}
	return n
}

// launch starts the allreduce of the bucket's members (their buffers
// already hold the sum over the window's passes) and returns its handle and
// the bytes it carries. scale is applied before the reduction.
func (b *bucket[T]) launch(ctx context.Context, cfg config, scale float64) (*collective.Handle, int) {
	n := b.len()
	opts := append(slices.Clip(cfg.callOpts), collective.WithPostscale(cfg.postscale))
	var resid []float32
	if cfg.errorFeedback {
		if len(b.resid) != n {
			b.resid = make([]float32, n)
		}
		resid = b.resid
	}
	switch cfg.compression {
	case FP16:
		b.f16 = resize(b.f16, n)
		encode(b, b.f16, float32(scale), resid, tensor.F16FromFloat32, collective.Float16.Float32)
		return collective.AllreduceAsync(ctx, b.op, b.f16, cfg.op, opts...), 2 * n
	case BF16:
		b.bf16 = resize(b.bf16, n)
		encode(b, b.bf16, float32(scale), resid, tensor.BF16FromFloat32, collective.BFloat16.Float32)
		return collective.AllreduceAsync(ctx, b.op, b.bf16, cfg.op, opts...), 2 * n
	}
	opts = append(opts, collective.WithPrescale(scale))
	var z T
	bytes := n * int(unsafe.Sizeof(z))
	if len(b.members) == 1 {
		return collective.AllreduceAsync(ctx, b.op, b.members[0].buf, cfg.op, opts...), bytes
	}
	b.packed = resize(b.packed, n)
	off := 0
	for _, e := range b.members {
		off += copy(b.packed[off:], e.buf)
	}
	return collective.AllreduceAsync(ctx, b.op, b.packed, cfg.op, opts...), bytes
}

// finish moves a completed allreduce's result into the members' buffers.
func (b *bucket[T]) finish(c Compression) {
	switch c {
	case FP16:
		decode(b, b.f16, collective.Float16.Float32)
		return
	case BF16:
		decode(b, b.bf16, collective.BFloat16.Float32)
		return
	}
	if len(b.members) == 1 {
		return // reduced in place
	}
	off := 0
	for _, e := range b.members {
		off += copy(e.buf, b.packed[off:off+len(e.buf)])
	}
}

func resize[W any](s []W, n int) []W {
	if cap(s) < n {
		return make([]W, n)
	}
	return s[:n]
}

// compressible reports whether T can be narrowed to a 16-bit float.
func compressible[T collective.Element]() bool {
	var z T
	switch any(z).(type) {
	case float32, float64:
		return true
	}
	return false
}

// encode narrows the members' gradients times s into dst; with resid (error
// feedback) it adds last step's rounding error first and keeps this one's.
func encode[T collective.Element, W any](b *bucket[T], dst []W, s float32, resid []float32,
	narrow func(float32) W, widen func(W) float32) {
	off := 0
	for _, e := range b.members {
		d := dst[off : off+len(e.buf)]
		var r []float32
		if resid != nil {
			r = resid[off : off+len(e.buf)]
		}
		switch src := any(e.buf).(type) {
		case []float32:
			narrowAll(d, src, s, r, narrow, widen)
		case []float64:
			narrowAll(d, src, s, r, narrow, widen)
		}
		off += len(e.buf)
	}
}

func narrowAll[F float32 | float64, W any](dst []W, src []F, s float32, resid []float32,
	narrow func(float32) W, widen func(W) float32) {
	if resid == nil {
		for i, x := range src {
			dst[i] = narrow(float32(x) * s)
		}
		return
	}
	for i, x := range src {
		v := float32(x)*s + resid[i]
		w := narrow(v)
		dst[i] = w
		resid[i] = v - widen(w)
	}
}

// decode widens the reduced wire values back into the members' buffers.
func decode[T collective.Element, W any](b *bucket[T], src []W, widen func(W) float32) {
	off := 0
	for _, e := range b.members {
		s := src[off : off+len(e.buf)]
		switch dst := any(e.buf).(type) {
		case []float32:
			for i, w := range s {
				dst[i] = widen(w)
			}
		case []float64:
			for i, w := range s {
				dst[i] = float64(widen(w))
			}
		}
		off += len(e.buf)
	}
}
