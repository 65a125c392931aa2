package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"
	"unsafe"

	"github.com/gorovod/gorovod/internal/tensor"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/ops"
)

// benchCase holds the buffers of one size and runs one iteration of the op.
type benchCase struct {
	b          *bench
	size       int64
	src, dst   []byte
	out        []byte // reduce-scatter and alltoall results (reused, as a user's loop would)
	chunk      int64  // elements per rank (allgather: each rank's part; others: the split)
	counts     []int  // bytes per rank (allgather / alltoall splits)
	elemCounts []int  // elements per rank (reduce-scatter)
	bufs       buffers
}

func newCase(b *bench, size int64) *benchCase {
	c := &benchCase{b: b, size: size, bufs: buffers{shared: b.o.sharedBufs}}
	es := int64(b.o.dtype.Size())
	count := size / es
	c.chunk = count / int64(b.np)
	c.counts = make([]int, b.np)
	c.elemCounts = make([]int, b.np)
	for i := range c.counts {
		c.counts[i] = int(c.chunk * es)
		c.elemCounts[i] = int(c.chunk)
	}
	switch b.o.op {
	case "allgather":
		c.src = c.alloc(c.chunk * es)
		c.dst = c.alloc(size)
	default:
		c.src = c.alloc(size)
		if !b.o.inplaceOnly {
			c.dst = c.alloc(size)
		}
	}
	switch b.o.op {
	case "reducescatter":
		c.out = make([]byte, (c.chunk+1)*es)
	case "alltoall":
		c.out = make([]byte, size)
	}
	c.fill()
	return c
}

// alloc returns n bytes (--shared-buffers: from collective.Alloc).
func (c *benchCase) alloc(n int64) []byte { return get[uint8](&c.bufs, int(n)) }

// release frees the shared buffers.
func (c *benchCase) release() { c.bufs.release() }

// value is element i of rank r's input.
func (c *benchCase) value(r int, i int64) float64 {
	if c.b.o.redop == tensor.Product {
		return float64(1 + (int64(r)+i)%2)
	}
	return float64((int64(r) + i) % 7)
}

func (c *benchCase) fill() {
	n := int64(len(c.src)) / int64(c.b.o.dtype.Size())
	for i := int64(0); i < n; i++ {
		setElem(c.b.o.dtype, c.src, i, c.value(c.b.rank, i))
	}
}

// once runs one iteration; comm is nil through the public API.
func (c *benchCase) once(ctx context.Context, name string, inplace bool, comm *ops.Comm) error {
	o := c.b.o
	buf := c.src
	if !inplace && o.op != "allgather" {
		copy(c.dst, c.src) // out of place: the result goes to a separate buffer
		buf = c.dst
	}
	if comm == nil {
		return apiOnce(ctx, c, name, buf, inplace)
	}
	switch o.op {
	case "allreduce":
		return comm.Allreduce(ctx, buf, o.dtype, o.redop, 1, 1)
	case "broadcast":
		return comm.Broadcast(ctx, buf, o.root)
	case "allgather":
		return comm.Allgatherv(ctx, c.agSend(inplace), c.dst, c.counts)
	case "reducescatter":
		_, err := comm.ReduceScatter(ctx, buf, c.elemCounts, o.dtype, o.redop)
		return err
	case "alltoall":
		_, _, err := comm.AlltoallvInto(ctx, buf, c.counts, c.out)
		return err
	}
	return fmt.Errorf("unknown op %q", o.op)
}

// agSend is allgather's send buffer: in place (nccl-tests' convention)
// this rank's part of the output, else the separate input.
func (c *benchCase) agSend(inplace bool) []byte {
	if !inplace {
		return c.src
	}
	off := int64(c.b.rank) * int64(len(c.src))
	return c.dst[off : off+int64(len(c.src))]
}

// time runs warm-up iterations, settles an iteration count every rank
// agrees on, and returns the time per iteration: with one batch (-reps 1)
// the mean over ranks, as nccl-tests reports; with more, the median over
// batches of the slowest rank's time, as the peers' harnesses report.
func (c *benchCase) time(ctx context.Context, name string, inplace bool) (time.Duration, error) {
	reps := max(1, c.b.o.reps)
	per := make([]float64, reps)
	body := func(ctx context.Context, comm *ops.Comm) error {
		each, err := c.warmUp(ctx, name, inplace, comm)
		if err != nil {
			return err
		}
		iters := c.b.o.iters
		if iters == 0 {
			guess := float64(c.b.o.targetTime) / float64(max(each, time.Microsecond))
			agreed, err := c.agree(ctx, comm, name+"/iters", math.Max(3, math.Min(guess, 20000)))
			if err != nil {
				return err
			}
			iters = int(agreed)
		}
		for r := range reps {
			if reps > 1 { // batches start together, as after the peers' barrier
				if _, err := c.agree(ctx, comm, name+"/batch", 0); err != nil {
					return err
				}
			}
			start := time.Now()
			for i := 0; i < iters; i++ {
				if err := c.once(ctx, name, inplace, comm); err != nil {
					return err
				}
			}
			per[r] = float64(time.Since(start) / time.Duration(iters))
		}
		return nil
	}
	var err error
	if c.b.o.direct {
		err = collective.RunExclusive(ctx, name, body)
	} else {
		err = body(ctx, nil)
	}
	if err != nil {
		return 0, err
	}
	if reps == 1 {
		avg, err := avgAcross(ctx, name+"/avg", per[0])
		return time.Duration(avg), err
	}
	if err := maxEach(ctx, name+"/max", per); err != nil {
		return 0, err
	}
	slices.Sort(per)
	med := per[reps/2]
	if reps%2 == 0 {
		med = (per[reps/2-1] + per[reps/2]) / 2
	}
	return time.Duration(med), nil
}

// warmUp runs the warm-up iterations and returns the time of one. The
// first iteration of a size pays one-time setup (the data plane's lazy
// single-copy probe and calibration: tens of milliseconds, page faults), so
// the estimate leaves it out when there are others: counted in, it made
// --target-time batches of 3-5 iterations at 64 KiB, whose times were the
// ranks' skew at the batch's start more than the op's.
func (c *benchCase) warmUp(ctx context.Context, name string, inplace bool, comm *ops.Comm) (time.Duration, error) {
	n := max(1, c.b.o.warmup)
	start := time.Now()
	for i := range n {
		if i == 1 {
			start = time.Now()
		}
		if err := c.once(ctx, name, inplace, comm); err != nil {
			return 0, err
		}
	}
	return time.Since(start) / time.Duration(max(1, n-1)), nil
}

// agree returns the largest v over all ranks, through the data plane inside
// an exclusive section or the public API outside one.
func (c *benchCase) agree(ctx context.Context, comm *ops.Comm, name string, v float64) (float64, error) {
	if comm == nil {
		return agreeMax(ctx, name, v)
	}
	buf := []float64{v}
	b := unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), 8)
	err := comm.Allreduce(ctx, b, tensor.Float64, tensor.Max, 1, 1)
	return buf[0], err
}

// check reruns the op once on fresh input and counts wrong elements.
func (c *benchCase) check(ctx context.Context, name string, inplace bool) (int64, error) {
	c.fill()
	var out []byte
	var err error
	run := func(ctx context.Context, comm *ops.Comm) error {
		out, err = c.checkOnce(ctx, name, inplace, comm)
		return err
	}
	if c.b.o.direct {
		if e := collective.RunExclusive(ctx, name, run); e != nil {
			return 0, e
		}
	} else if e := run(ctx, nil); e != nil {
		return 0, e
	}
	wrong := c.countWrong(out)
	c.fill()
	return wrong, nil
}

// checkOnce runs one iteration and returns the bytes holding its result.
func (c *benchCase) checkOnce(ctx context.Context, name string, inplace bool, comm *ops.Comm) ([]byte, error) {
	o := c.b.o
	buf := c.src
	if !inplace && o.op != "allgather" {
		copy(c.dst, c.src)
		buf = c.dst
	}
	if o.op == "allgather" && inplace { // nccl-tests' in place: this rank's input sits in its part of the output
		copy(c.agSend(true), c.src)
	}
	if comm == nil {
		return apiResult(ctx, c, name, buf, inplace)
	}
	switch o.op {
	case "reducescatter":
		return comm.ReduceScatter(ctx, buf, c.elemCounts, o.dtype, o.redop)
	case "alltoall":
		out, _, err := comm.AlltoallvInto(ctx, buf, c.counts, c.out)
		return out, err
	case "allgather":
		return c.dst, c.once(ctx, name, inplace, comm)
	case "broadcast":
		return buf, comm.Broadcast(ctx, buf, o.root)
	}
	return buf, comm.Allreduce(ctx, buf, o.dtype, o.redop, 1, 1)
}

func (c *benchCase) countWrong(out []byte) int64 {
	o := c.b.o
	n := int64(len(out)) / int64(o.dtype.Size())
	var wrong int64
	for i := int64(0); i < n; i++ {
		want := c.expect(i)
		got := getElem(o.dtype, out, i)
		tol := 1e-5
		if o.dtype == tensor.Float16 || o.dtype == tensor.BFloat16 {
			tol = 2e-2
		}
		if !o.dtype.IsFloat() {
			tol = 0
			if o.redop == tensor.Average {
				want = math.Trunc(want)
			}
		}
		if math.Abs(got-want) > tol*math.Max(1, math.Abs(want)) {
			wrong++
		}
	}
	return wrong
}

// expect is the correct value of output element i on this rank.
func (c *benchCase) expect(i int64) float64 {
	o, np, rank := c.b.o, c.b.np, c.b.rank
	reduce := func(idx int64) float64 {
		acc := c.value(0, idx)
		for r := 1; r < np; r++ {
			v := c.value(r, idx)
			switch o.redop {
			case tensor.Sum, tensor.Average:
				acc += v
			case tensor.Min:
				acc = math.Min(acc, v)
			case tensor.Max:
				acc = math.Max(acc, v)
			case tensor.Product:
				acc *= v
			}
		}
		if o.redop == tensor.Average {
			acc /= float64(np)
		}
		return acc
	}
	switch o.op {
	case "allreduce":
		return reduce(i)
	case "broadcast":
		return c.value(o.root, i)
	case "allgather":
		return c.value(int(i/c.chunk), i%c.chunk)
	case "reducescatter":
		return reduce(int64(rank)*c.chunk + i)
	case "alltoall":
		return c.value(int(i/c.chunk), int64(rank)*c.chunk+i%c.chunk)
	}
	return math.NaN()
}

func setElem(dt tensor.DType, b []byte, i int64, v float64) {
	p := unsafe.Pointer(&b[i*int64(dt.Size())])
	switch dt {
	case tensor.Float32:
		*(*float32)(p) = float32(v)
	case tensor.Float64:
		*(*float64)(p) = v
	case tensor.Int32:
		*(*int32)(p) = int32(v)
	case tensor.Int64:
		*(*int64)(p) = int64(v)
	case tensor.Int8:
		*(*int8)(p) = int8(v)
	case tensor.Uint8:
		*(*uint8)(p) = uint8(v)
	case tensor.Float16:
		*(*tensor.F16)(p) = tensor.F16FromFloat32(float32(v))
	case tensor.BFloat16:
		*(*tensor.BF16)(p) = tensor.BF16FromFloat32(float32(v))
	}
}

func getElem(dt tensor.DType, b []byte, i int64) float64 {
	p := unsafe.Pointer(&b[i*int64(dt.Size())])
	switch dt {
	case tensor.Float32:
		return float64(*(*float32)(p))
	case tensor.Float64:
		return *(*float64)(p)
	case tensor.Int32:
		return float64(*(*int32)(p))
	case tensor.Int64:
		return float64(*(*int64)(p))
	case tensor.Int8:
		return float64(*(*int8)(p))
	case tensor.Uint8:
		return float64(*(*uint8)(p))
	case tensor.Float16:
		return float64((*(*tensor.F16)(p)).Float32())
	case tensor.BFloat16:
		return float64((*(*tensor.BF16)(p)).Float32())
	}
	return math.NaN()
}
