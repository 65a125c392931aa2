//go:build cgo

package nccl

import (
	"context"
	"fmt"

	"testing"

	"github.com/gorovod/gorovod/internal/tensor"
	"github.com/gorovod/gorovod/internal/tensor/tensortest"
)

func TestMultiProcessExecutor(t *testing.T) {
	for _, np := range []int{2, 4} {
		for _, v := range []fakeVariant{fakeNew, fakeOld} {
			t.Run(fmt.Sprintf("np%d-%s", np, v), func(t *testing.T) {
				requireAllOK(t, runRanks(t, v, np, "executor"))
			})
		}
	}
}

func TestIdentity(t *testing.T) {
	for _, dt := range matrixDTypes {
		for _, op := range matrixOps {
			id := Identity(dt, op, 3)
			if len(id) != 3*dt.Size() {
				t.Fatalf("Identity(%v, %v, 3) has %d bytes", dt, op, len(id))
			}
			// x op identity == x for a few x.
			for _, x := range []float64{-2, 0, 1, 3} {
				if (dt == tensor.Uint8 || dt == tensor.Uint64) && x < 0 {
					continue
				}
				xb := tensortest.Encode(dt, []float64{x})
				got := append([]byte(nil), xb...)
				combineHost(got, id[:dt.Size()], dt, op)
				if string(got) != string(xb) {
					t.Errorf("%v %v: %v op identity = %x, want %x", dt, op, x, got, xb)
				}
			}
		}
	}
}

// combineHost folds b into a (one element) the way the double does, for
// the identity check.
func combineHost(a, b []byte, dt tensor.DType, op tensor.ReduceOp) {
	x, y := tensortest.Decode(dt, a), tensortest.Decode(dt, b)
	var r float64
	switch op {
	case tensor.Product:
		r = x * y
	case tensor.Min:
		r = min(x, y)
	case tensor.Max:
		r = max(x, y)
	default:
		r = x + y
	}
	copy(a, tensortest.Encode(dt, []float64{r}))
}

func (r *childRig) executor(ctx context.Context) error {
	x, err := NewExecutor(r.comm, r.stream)
	if err != nil {
		return err
	}
	defer x.Close()
	for _, check := range []func(context.Context, *Executor) error{r.execFusion, r.execScale, r.execJoin, r.execUneven} {
		if err := check(ctx, x); err != nil {
			return err
		}
	}
	return nil
}

// execFusion allreduces 200 small tensors of odd lengths as one response:
// one NCCL call, every element right.
func (r *childRig) execFusion(ctx context.Context, x *Executor) error {
	dt := tensor.Float32
	ts := make([]Tensor, 200)
	for i := range ts {
		n := 1 + 2*(i%4)
		p, err := r.upload(tensortest.Encode(dt, tensortest.Values(dt, r.rank+i, 0, n)))
		if err != nil {
			return err
		}
		defer r.dev.Free(p)
		ts[i] = Tensor{Ptr: p, Count: n}
	}
	before := x.Calls()
	if err := x.Allreduce(ctx, ts, dt, tensor.Sum, 1, 1); err != nil {
		return fmt.Errorf("fused allreduce: %w", err)
	}
	if calls := x.Calls() - before; calls != 1 {
		return fmt.Errorf("200 fused tensors took %d NCCL calls, want 1", calls)
	}
	for i, t := range ts {
		want := make([]float64, t.Count)
		for j := range want {
			for k := 0; k < r.size; k++ {
				want[j] += tensortest.Value(dt, k+i, j)
			}
		}
		got := make([]byte, t.Count*4)
		if err := r.dev.CopyFromDevice(got, t.Ptr); err != nil {
			return err
		}
		if err := compare(fmt.Sprintf("fused tensor %d", i), dt, got, want); err != nil {
			return err
		}
	}
	return nil
}

// execScale: prescale, postscale and Average (ncclAvg on 2.18, a host
// division on 2.8), on floats and integers.
func (r *childRig) execScale(ctx context.Context, x *Executor) error {
	for _, dt := range []tensor.DType{tensor.Float32, tensor.BFloat16, tensor.Int32, tensor.Int8} {
		if _, err := MapDType(dt, r.lib.NCCLVersion()); err != nil {
			continue
		}
		for _, tc := range []struct {
			op        tensor.ReduceOp
			pre, post float64
		}{{tensor.Average, 1, 1}, {tensor.Sum, 2, 0.5}, {tensor.Average, 2, 1}} {
			n := 13
			a, err := r.upload(tensortest.Encode(dt, tensortest.Values(dt, r.rank, 0, n)))
			if err != nil {
				return err
			}
			b, err := r.upload(tensortest.Encode(dt, tensortest.Values(dt, r.rank, 0, 3)))
			if err != nil {
				return err
			}
			err = x.Allreduce(ctx, []Tensor{{a, n}, {b, 3}}, dt, tc.op, tc.pre, tc.post)
			if err != nil {
				return fmt.Errorf("%v %v pre %v post %v: %w", dt, tc.op, tc.pre, tc.post, err)
			}
			for _, tt := range []Tensor{{a, n}, {b, 3}} {
				want := make([]float64, tt.Count)
				for i := range want {
					sum := 0.0
					for k := 0; k < r.size; k++ {
						sum += tensortest.Value(dt, k, i) * tc.pre
					}
					if tc.op == tensor.Average {
						if dt.IsFloat() {
							sum /= float64(r.size)
						} else {
							sum = float64(int64(sum) / int64(r.size))
						}
					}
					want[i] = sum * tc.post
					if !dt.IsFloat() {
						want[i] = float64(int64(want[i]))
					}
				}
				got := make([]byte, tt.Count*dt.Size())
				if err := r.dev.CopyFromDevice(got, tt.Ptr); err != nil {
					return err
				}
				if err := compare(fmt.Sprintf("scaled %v %v pre %v post %v", dt, tc.op, tc.pre, tc.post), dt, got, want); err != nil {
					return err
				}
			}
			r.dev.Free(a)
			r.dev.Free(b)
		}
	}
	return nil
}

// execJoin: the last rank has joined and contributes the identity; the
// others get the reduction over themselves.
func (r *childRig) execJoin(ctx context.Context, x *Executor) error {
	joined := r.size - 1
	for _, dt := range []tensor.DType{tensor.Float32, tensor.Int8, tensor.Float16} {
		for _, op := range []tensor.ReduceOp{tensor.Sum, tensor.Product, tensor.Min, tensor.Max} {
			n := 9
			if r.rank == joined {
				if err := x.AllreduceIdentity(ctx, n, dt, op); err != nil {
					return fmt.Errorf("join identity %v %v: %w", dt, op, err)
				}
				continue
			}
			p, err := r.upload(tensortest.Encode(dt, tensortest.Values(dt, r.rank, 0, n)))
			if err != nil {
				return err
			}
			if err := x.Allreduce(ctx, []Tensor{{p, n}}, dt, op, 1, 1); err != nil {
				return fmt.Errorf("joined allreduce %v %v: %w", dt, op, err)
			}
			want := make([]float64, n)
			for i := range want {
				want[i] = tensortest.Reduced(dt, op, r.size-1, i)
			}
			got := make([]byte, n*dt.Size())
			if err := r.dev.CopyFromDevice(got, p); err != nil {
				return err
			}
			r.dev.Free(p)
			if err := compare(fmt.Sprintf("allreduce %v %v with rank %d joined", dt, op, joined), dt, got, want); err != nil {
				return err
			}
		}
	}
	return nil
}

// execUneven: allgather, reducescatter and alltoall with counts that differ
// per rank.
func (r *childRig) execUneven(ctx context.Context, x *Executor) error {
	dt := tensor.Int32
	counts := make([]int, r.size)
	for k := range counts {
		counts[k] = 2*k + 1
	}
	in, err := r.upload(tensortest.Encode(dt, tensortest.Values(dt, r.rank, 0, counts[r.rank])))
	if err != nil {
		return err
	}
	defer r.dev.Free(in)
	out, err := x.Allgather(ctx, Tensor{in, counts[r.rank]}, counts, dt)
	if err != nil {
		return fmt.Errorf("uneven allgather: %w", err)
	}
	var want []float64
	for k := range counts {
		want = append(want, tensortest.Values(dt, k, 0, counts[k])...)
	}
	if err := r.check(out, dt, want, "uneven allgather"); err != nil {
		return err
	}
	total := 0
	for _, c := range counts {
		total += c
	}
	full, err := r.upload(tensortest.Encode(dt, tensortest.Values(dt, r.rank, 0, total)))
	if err != nil {
		return err
	}
	defer r.dev.Free(full)
	out, err = x.ReduceScatter(ctx, Tensor{full, total}, counts, dt, tensor.Max, 1, 1)
	if err != nil {
		return fmt.Errorf("uneven reducescatter: %w", err)
	}
	want = want[:0]
	for i := prefix(counts)[r.rank]; i < prefix(counts)[r.rank]+counts[r.rank]; i++ {
		want = append(want, tensortest.Reduced(dt, tensor.Max, r.size, i))
	}
	if err := r.check(out, dt, want, "uneven reducescatter"); err != nil {
		return err
	}
	// Alltoall: rank r sends k+1 elements to rank k.
	send, recv := make([]int, r.size), make([]int, r.size)
	for k := range send {
		send[k], recv[k] = k+1, r.rank+1
	}
	sendTotal := r.size * (r.size + 1) / 2
	a2a, err := r.upload(tensortest.Encode(dt, tensortest.Values(dt, r.rank, 0, sendTotal)))
	if err != nil {
		return err
	}
	defer r.dev.Free(a2a)
	out, err = x.Alltoall(ctx, Tensor{a2a, sendTotal}, send, recv, dt)
	if err != nil {
		return fmt.Errorf("alltoall: %w", err)
	}
	want = want[:0]
	for k := 0; k < r.size; k++ {
		off := r.rank * (r.rank + 1) / 2 // where rank k's block for us starts in k's input
		for j := 0; j < r.rank+1; j++ {
			want = append(want, tensortest.Value(dt, k, off+j))
		}
	}
	return r.check(out, dt, want, "alltoall")
}

func (r *childRig) check(p DevicePtr, dt tensor.DType, want []float64, what string) error {
	defer r.dev.Free(p)
	got := make([]byte, len(want)*dt.Size())
	if err := r.dev.CopyFromDevice(got, p); err != nil {
		return err
	}
	return compare(what, dt, got, want)
}
