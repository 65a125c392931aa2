package collectivetest

import (
	"context"
	"fmt"
	"math"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/internal/tensor"
)

// Check runs every collective with every dtype, reduce op and an awkward
// set of lengths in w (8 dtypes x 5 ops of allreduce; broadcast from every
// root, allgather with a different length on every rank, alltoall with
// uneven splits, reduce-scatter, barrier) and checks each result element
// by element against values every rank computes on its own. Every rank of
// w must call it. quick uses fewer lengths. It returns the number of
// elements checked and the first wrong one as an error.
func Check(ctx context.Context, w *collective.World, quick bool) (checks int, err error) {
	c := &checker{w: w, rank: w.Rank(), size: w.Size()}
	err = c.run(ctx, quick)
	return c.checks, err
}

type checker struct {
	w                  *collective.World
	rank, size, checks int
}

func (c *checker) lengths(quick bool) []int {
	ls := []int{0, 1, 2, 3, 7, 13, 97, 1031, c.size - 1, c.size + 1, 65537}
	if quick {
		ls = []int{0, 1, 13, c.size + 1}
	}
	return ls
}

func (c *checker) run(ctx context.Context, quick bool) error {
	ls := c.lengths(quick)
	steps := []func() error{
		func() error {
			return check[float32](ctx, c, "f32", ls, conv[float32]{f: func(v float64) float32 { return float32(v) }, t: func(v float32) float64 { return float64(v) }, tol: 1e-6})
		},
		func() error {
			return check[float64](ctx, c, "f64", ls, conv[float64]{f: func(v float64) float64 { return v }, t: func(v float64) float64 { return v }, tol: 1e-12})
		},
		func() error {
			return check[int32](ctx, c, "i32", ls, conv[int32]{f: func(v float64) int32 { return int32(v) }, t: func(v int32) float64 { return float64(v) }, integer: true})
		},
		func() error {
			return check[int64](ctx, c, "i64", ls, conv[int64]{f: func(v float64) int64 { return int64(v) }, t: func(v int64) float64 { return float64(v) }, integer: true})
		},
		func() error {
			return check[int8](ctx, c, "i8", ls, conv[int8]{f: func(v float64) int8 { return int8(v) }, t: func(v int8) float64 { return float64(v) }, integer: true})
		},
		func() error {
			return check[uint8](ctx, c, "u8", ls, conv[uint8]{f: func(v float64) uint8 { return uint8(v) }, t: func(v uint8) float64 { return float64(v) }, integer: true, unsigned: true})
		},
		func() error {
			return check[tensor.F16](ctx, c, "f16", ls, conv[tensor.F16]{f: func(v float64) tensor.F16 { return tensor.F16FromFloat32(float32(v)) }, t: func(v tensor.F16) float64 { return float64(v.Float32()) }, tol: 1e-2})
		},
		func() error {
			return check[tensor.BF16](ctx, c, "bf16", ls, conv[tensor.BF16]{f: func(v float64) tensor.BF16 { return tensor.BF16FromFloat32(float32(v)) }, t: func(v tensor.BF16) float64 { return float64(v.Float32()) }, tol: 2e-2})
		},
		func() error { return c.others(ctx, ls) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

// conv converts between an element type and float64 for building inputs
// and expectations.
type conv[T collective.Element] struct {
	f        func(float64) T
	t        func(T) float64
	tol      float64 // relative tolerance for floats
	integer  bool
	unsigned bool
}

// value is what rank r holds at index i: small numbers so sums and products
// stay exact in every dtype.
func value(r, i int, op collective.ReduceOp, unsigned bool) float64 {
	if op == collective.Product {
		v := float64(1 + (r+i)%2)
		if !unsigned && (r+2*i)%3 == 0 {
			v = -v
		}
		return v
	}
	if unsigned {
		return float64((r*7 + i*3) % 6)
	}
	return float64((r*7+i*3)%11 - 5)
}

func check[T collective.Element](ctx context.Context, c *checker, tname string, lengths []int, cv conv[T]) error {
	for _, op := range []collective.ReduceOp{collective.Sum, collective.Average, collective.Min, collective.Max, collective.Product} {
		for _, n := range lengths {
			buf := make([]T, n)
			for i := range buf {
				buf[i] = cv.f(value(c.rank, i, op, cv.unsigned))
			}
			name := fmt.Sprintf("allreduce/%s/%v/%d", tname, op, n)
			if err := collective.Allreduce(ctx, name, buf, op, collective.InWorld(c.w)); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			for i := range buf {
				want := expect(c.size, i, op, cv)
				got := cv.t(buf[i])
				if !near(got, want, cv.tol) {
					return fmt.Errorf("%s: element %d is %v, want %v", name, i, got, want)
				}
				c.checks++
			}
		}
	}
	return nil
}

// expect reduces every rank's value in the element type itself, so integer
// wrap-around and truncating average match what the library must do.
func expect[T collective.Element](size, i int, op collective.ReduceOp, cv conv[T]) float64 {
	acc := value(0, i, op, cv.unsigned)
	for r := 1; r < size; r++ {
		v := value(r, i, op, cv.unsigned)
		switch op {
		case collective.Sum, collective.Average:
			acc += v
		case collective.Min:
			acc = math.Min(acc, v)
		case collective.Max:
			acc = math.Max(acc, v)
		case collective.Product:
			acc *= v
		}
	}
	if op == collective.Average {
		if cv.integer {
			return math.Trunc(acc / float64(size))
		}
		return acc / float64(size)
	}
	return acc
}

func near(got, want, tol float64) bool {
	if tol == 0 {
		return got == want
	}
	return math.Abs(got-want) <= tol*math.Max(1, math.Abs(want))
}

// others checks broadcast from every root, allgather with a different
// length on every rank, alltoall, reduce-scatter and barrier.
func (c *checker) others(ctx context.Context, lengths []int) error {
	for root := 0; root < c.size; root++ {
		for _, n := range lengths {
			buf := make([]int32, n)
			for i := range buf {
				buf[i] = int32(c.rank*1000 + i)
			}
			name := fmt.Sprintf("broadcast/%d/%d", root, n)
			if err := collective.Broadcast(ctx, name, buf, root, collective.InWorld(c.w)); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			for i, v := range buf {
				if v != int32(root*1000+i) {
					return fmt.Errorf("%s: element %d is %d, want %d", name, i, v, root*1000+i)
				}
				c.checks++
			}
		}
	}
	for _, n := range lengths {
		in := make([]float64, n+c.rank) // a different length on every rank
		for i := range in {
			in[i] = float64(c.rank*100000 + i)
		}
		name := fmt.Sprintf("allgather/%d", n)
		out, err := collective.Allgather(ctx, name, in, collective.InWorld(c.w))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		k := 0
		for r := 0; r < c.size; r++ {
			for i := 0; i < n+r; i++ {
				if k >= len(out) || out[k] != float64(r*100000+i) {
					return fmt.Errorf("%s: element %d (rank %d index %d) wrong or missing (got %d elements)", name, k, r, i, len(out))
				}
				k++
				c.checks++
			}
		}
		if k != len(out) {
			return fmt.Errorf("%s: got %d elements, want %d", name, len(out), k)
		}
	}
	// alltoall: rank r sends (j+1) elements valued r*1000+j*10+x to rank j.
	splits := make([]int, c.size)
	var in []int64
	for j := range splits {
		splits[j] = j + 1 + c.rank%2
		for x := 0; x < splits[j]; x++ {
			in = append(in, int64(c.rank*1000+j*10+x))
		}
	}
	out, recv, err := collective.Alltoall(ctx, "alltoall", in, splits, collective.InWorld(c.w))
	if err != nil {
		return fmt.Errorf("alltoall: %w", err)
	}
	k := 0
	for r := 0; r < c.size; r++ {
		want := c.rank + 1 + r%2
		if recv[r] != want {
			return fmt.Errorf("alltoall: %d elements from rank %d, want %d", recv[r], r, want)
		}
		for x := 0; x < want; x++ {
			if out[k] != int64(r*1000+c.rank*10+x) {
				return fmt.Errorf("alltoall: element %d from rank %d is %d, want %d", x, r, out[k], r*1000+c.rank*10+x)
			}
			k++
			c.checks++
		}
	}
	for _, n := range lengths {
		in := make([]int32, n)
		for i := range in {
			in[i] = int32(c.rank + i)
		}
		name := fmt.Sprintf("reducescatter/%d", n)
		mine, err := collective.ReduceScatter(ctx, name, in, collective.Sum, collective.InWorld(c.w))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		start := 0
		for r := 0; r < c.rank; r++ {
			start += n / c.size
			if r < n%c.size {
				start++
			}
		}
		want := n / c.size
		if c.rank < n%c.size {
			want++
		}
		if len(mine) != want {
			return fmt.Errorf("%s: got %d elements, want %d", name, len(mine), want)
		}
		for k, v := range mine {
			i := start + k
			exp := int32(c.size*i + c.size*(c.size-1)/2)
			if v != exp {
				return fmt.Errorf("%s: element %d is %d, want %d", name, i, v, exp)
			}
			c.checks++
		}
	}
	for i := 0; i < 3; i++ {
		if err := c.w.Barrier(ctx); err != nil {
			return fmt.Errorf("barrier: %w", err)
		}
	}
	return nil
}
