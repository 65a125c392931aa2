// Package devicecheck holds the checks of device-tensor collectives that
// both the in-process tests of package ncclbackend and the gorun worker
// test/gpucheck run: every dtype NCCL has x every reduction x every
// collective at odd lengths, compared element by element with a reference
// computed on the host; a step mixing host and device tensors; many small
// tensors fused. Values are small integers so every result is exact in
// every dtype, float16 and bfloat16 included.
package devicecheck

import (
	"context"
	"errors"
	"fmt"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/internal/tensor"
	"github.com/gorovod/gorovod/internal/tensor/tensortest"
	"github.com/gorovod/gorovod/nccl"
)

// Rig is one rank's view: its world, its GPU and the device memory it
// allocated (Close frees it).
type Rig struct {
	Dev        nccl.Device
	Rank, Size int
	In         collective.CallOption
	allocated  []nccl.DevicePtr
}

// NewRig returns w's rank's rig on GPU device of lib.
func NewRig(w *collective.World, lib *nccl.Library, device int) *Rig {
	return &Rig{Dev: lib.Device(device), Rank: w.Rank(), Size: w.Size(), In: collective.InWorld(w)}
}

// Close frees what the checks allocated.
func (r *Rig) Close() {
	for _, p := range r.allocated {
		r.Dev.Free(p)
	}
	r.allocated = nil
}

// DTypes and Ops are what the matrix covers: every dtype with an NCCL
// equivalent, every reduction NCCL has.
var (
	DTypes = []tensor.DType{tensor.Int8, tensor.Uint8, tensor.Int32, tensor.Int64, tensor.Uint64,
		tensor.Float16, tensor.Float32, tensor.Float64, tensor.BFloat16}
	Ops = []tensor.ReduceOp{tensor.Sum, tensor.Product, tensor.Min, tensor.Max, tensor.Average}
)

// Tensor uploads vs as a device tensor of dt on the rig's GPU.
func (r *Rig) Tensor(dt tensor.DType, vs []float64) (collective.DeviceTensor, error) {
	b := tensortest.Encode(dt, vs)
	p, err := r.Dev.Malloc(max(len(b), 1))
	if err != nil {
		return collective.DeviceTensor{}, err
	}
	r.allocated = append(r.allocated, p)
	if err := r.Dev.CopyToDevice(p, b); err != nil {
		return collective.DeviceTensor{}, err
	}
	return collective.DeviceTensor{Ptr: p, DType: dt, Count: len(vs), Device: r.Dev.Ordinal}, nil
}

// Check compares a device tensor with want element by element.
func (r *Rig) Check(what string, t collective.DeviceTensor, want []float64) error {
	if t.Count != len(want) {
		return fmt.Errorf("%s on rank %d: %d elements, want %d", what, r.Rank, t.Count, len(want))
	}
	got := make([]byte, t.Count*t.DType.Size())
	if err := r.Dev.CopyFromDevice(got, t.Ptr); err != nil {
		return err
	}
	w := tensortest.Encode(t.DType, want)
	es := t.DType.Size()
	for i := range want {
		if string(got[i*es:(i+1)*es]) != string(w[i*es:(i+1)*es]) {
			return fmt.Errorf("%s on rank %d: element %d is %x, want %x (%v)", what, r.Rank, i, got[i*es:(i+1)*es], w[i*es:(i+1)*es], want[i])
		}
	}
	return nil
}

// Matrix runs every dtype x op allreduce and every other collective at
// lengths 1, 7 and 1031; it returns how many collectives it checked.
func (r *Rig) Matrix(ctx context.Context) (int, error) {
	checks := 0
	for _, dt := range DTypes {
		for _, n := range []int{1, 7, 1031} {
			for _, op := range Ops {
				x, err := r.Tensor(dt, tensortest.Values(dt, r.Rank, 0, n))
				if err != nil {
					return checks, err
				}
				name := fmt.Sprintf("ar/%v/%v/%d", dt, op, n)
				if err := collective.AllreduceDevice(ctx, name, x, op, r.In); err != nil {
					return checks, fmt.Errorf("%s: %w", name, err)
				}
				want := make([]float64, n)
				for i := range want {
					want[i] = tensortest.Reduced(dt, op, r.Size, i)
				}
				if err := r.Check(name, x, want); err != nil {
					return checks, err
				}
				checks++
			}
			if err := r.others(ctx, dt, n); err != nil {
				return checks, err
			}
			checks += 4
		}
	}
	return checks, nil
}

// others checks broadcast, allgather (uneven), reducescatter and alltoall.
func (r *Rig) others(ctx context.Context, dt tensor.DType, n int) error {
	root := r.Size - 1
	x, err := r.Tensor(dt, tensortest.Values(dt, r.Rank, 0, n))
	if err != nil {
		return err
	}
	name := fmt.Sprintf("bc/%v/%d", dt, n)
	if err := collective.BroadcastDevice(ctx, name, x, root, r.In); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := r.Check(name, x, tensortest.Values(dt, root, 0, n)); err != nil {
		return err
	}

	g, err := r.Tensor(dt, tensortest.Values(dt, r.Rank, 0, n+r.Rank)) // uneven first dimensions
	if err != nil {
		return err
	}
	name = fmt.Sprintf("ag/%v/%d", dt, n)
	out, counts, err := collective.AllgatherDevice(ctx, name, g, r.In)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	r.allocated = append(r.allocated, out.Ptr)
	var want []float64
	for k := 0; k < r.Size; k++ {
		want = append(want, tensortest.Values(dt, k, 0, n+k)...)
		if k >= len(counts) || counts[k] != n+k {
			return fmt.Errorf("%s: counts %v", name, counts)
		}
	}
	if err := r.Check(name, out, want); err != nil {
		return err
	}

	full := n*r.Size + 1 // not a multiple of the size: the first block is longer
	s, err := r.Tensor(dt, tensortest.Values(dt, r.Rank, 0, full))
	if err != nil {
		return err
	}
	name = fmt.Sprintf("rs/%v/%d", dt, n)
	block, err := collective.ReduceScatterDevice(ctx, name, s, tensor.Sum, r.In)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	r.allocated = append(r.allocated, block.Ptr)
	off := r.Rank * n
	if r.Rank > 0 {
		off++
	}
	want = want[:0]
	for i := 0; i < block.Count; i++ {
		want = append(want, tensortest.Reduced(dt, tensor.Sum, r.Size, off+i))
	}
	if err := r.Check(name, block, want); err != nil {
		return err
	}

	splits := make([]int, r.Size) // k+1 elements to rank k
	total := 0
	for k := range splits {
		splits[k] = k + 1
		total += k + 1
	}
	a, err := r.Tensor(dt, tensortest.Values(dt, r.Rank, 0, total))
	if err != nil {
		return err
	}
	name = fmt.Sprintf("a2a/%v/%d", dt, n)
	got, _, err := collective.AlltoallDevice(ctx, name, a, splits, r.In)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	r.allocated = append(r.allocated, got.Ptr)
	want = want[:0]
	start := r.Rank * (r.Rank + 1) / 2
	for k := 0; k < r.Size; k++ {
		want = append(want, tensortest.Values(dt, k, start, r.Rank+1)...)
	}
	return r.Check(name, got, want)
}

// Mixed reduces a host tensor and a device tensor in one step.
func (r *Rig) Mixed(ctx context.Context) error {
	host := []float32{float32(r.Rank + 1), 10}
	d, err := r.Tensor(tensor.Float32, []float64{float64(r.Rank + 1), 20})
	if err != nil {
		return err
	}
	hh := collective.AllreduceAsync(ctx, "mixed/host", host, collective.Sum, r.In)
	hd := collective.AllreduceDeviceAsync(ctx, "mixed/device", d, collective.Sum, r.In)
	if err := errors.Join(hh.Wait(ctx), hd.Wait(ctx)); err != nil {
		return err
	}
	sum := float64(r.Size * (r.Size + 1) / 2)
	if host[0] != float32(sum) || host[1] != float32(10*r.Size) {
		return fmt.Errorf("mixed: host tensor = %v, want [%v %v]", host, sum, 10*r.Size)
	}
	return r.Check("mixed: device tensor", d, []float64{sum, float64(20 * r.Size)})
}

// Fusion submits n small device tensors at once (one step) and checks each.
func (r *Rig) Fusion(ctx context.Context, n int) error {
	ts := make([]collective.DeviceTensor, n)
	for i := range ts {
		var err error
		if ts[i], err = r.Tensor(tensor.Float32, tensortest.Values(tensor.Float32, r.Rank, i, 1+i%5)); err != nil {
			return err
		}
	}
	hs := make([]*collective.Handle, len(ts))
	for i, x := range ts {
		hs[i] = collective.AllreduceDeviceAsync(ctx, fmt.Sprintf("small/%d", i), x, collective.Sum, r.In)
	}
	for i, h := range hs {
		if err := h.Wait(ctx); err != nil {
			return err
		}
		want := make([]float64, ts[i].Count)
		for j := range want {
			for k := 0; k < r.Size; k++ {
				want[j] += tensortest.Value(tensor.Float32, k, i+j)
			}
		}
		if err := r.Check(fmt.Sprintf("small/%d", i), ts[i], want); err != nil {
			return err
		}
	}
	return nil
}

// UntilFailure runs up to steps allreduces and returns the first error
// (nil when none failed): the fault-injection runs expect one.
func (r *Rig) UntilFailure(ctx context.Context, steps int) error {
	x, err := r.Tensor(tensor.Float32, tensortest.Values(tensor.Float32, r.Rank, 0, 33))
	if err != nil {
		return err
	}
	for i := 0; i < steps; i++ {
		if err := collective.AllreduceDevice(ctx, fmt.Sprintf("step/%d", i), x, collective.Sum, r.In); err != nil {
			return err
		}
	}
	return nil
}
