package collective

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/gorovod/gorovod/coordinator"
	"github.com/gorovod/gorovod/internal/tensor"
	"github.com/gorovod/gorovod/nccl"
)

// DType is an element type.
type DType = tensor.DType

// DeviceTensor is a tensor in GPU memory. Collectives on it go through the
// same negotiation, cache and fusion as host tensors and run on the world's
// device backend (WithDeviceBackend; package ncclbackend is the NCCL one).
// Every rank may use a GPU of its own (gorun sets GOROVOD_DEVICE per local
// rank, see LocalDevice); a process drives one GPU.
type DeviceTensor struct {
	Ptr    nccl.DevicePtr // device address of the first element
	DType  DType
	Count  int         // elements
	Device int         // CUDA ordinal
	Stream nccl.Stream // the stream that produced the data (0: legacy default); the backend waits for it
}

// NewDeviceTensor describes count elements of T at ptr on GPU device.
func NewDeviceTensor[T Element](ptr nccl.DevicePtr, count, device int, stream nccl.Stream) DeviceTensor {
	return DeviceTensor{Ptr: ptr, DType: dtypeOf[T](), Count: count, Device: device, Stream: stream}
}

// LocalDevice is the GPU gorun gave this worker (GOROVOD_DEVICE), or
// fallback when it set none.
func LocalDevice(fallback int) int {
	if n, err := strconv.Atoi(os.Getenv("GOROVOD_DEVICE")); err == nil && n >= 0 {
		return n
	}
	return fallback
}

// DeviceCall is what a device backend finds in Entry.Tensor: the tensor
// submitted and, for collectives that make new data (allgather, alltoall,
// reduce-scatter), Out, which the backend allocates on the same device (the
// caller frees it) while setting Entry.OutCounts to the bytes from each
// member.
type DeviceCall struct {
	In  DeviceTensor
	Out DeviceTensor
}

func (t DeviceTensor) check(op string) error {
	switch {
	case t.Device < 0:
		return fmt.Errorf("%w: %s on a device tensor with device %d", ErrInvalid, op, t.Device)
	case t.Count < 0 || (t.Ptr == 0 && t.Count > 0):
		return fmt.Errorf("%w: %s on a device tensor of %d elements at %#x", ErrInvalid, op, t.Count, uintptr(t.Ptr))
	case t.DType.Size() == 0:
		return fmt.Errorf("%w: %s on a device tensor of unknown dtype %v", ErrInvalid, op, t.DType)
	}
	return nil
}

func submitDevice(ctx context.Context, req coordinator.Request, t DeviceTensor, splits []int, opts []CallOption) (*Handle, *DeviceCall) {
	if err := t.check(req.Op.String()); err != nil {
		return failed(err), nil
	}
	req.DType = t.DType
	if req.Shape == nil {
		req.Shape = []int64{int64(t.Count)}
	}
	call := &DeviceCall{In: t}
	co := callOpts(append(opts, WithDevice(Device(t.Device))))
	h := submitWith(ctx, req, nil, co, func(en *entry) {
		en.Tensor = call
		en.Splits = splits
	})
	return h, call
}

// AllreduceDeviceAsync starts an allreduce of t in place.
func AllreduceDeviceAsync(ctx context.Context, name string, t DeviceTensor, op ReduceOp, opts ...CallOption) *Handle {
	h, _ := submitDevice(ctx, coordinator.Request{Name: name, Op: coordinator.OpAllreduce, ReduceOp: op}, t, nil, opts)
	return h
}

// AllreduceDevice is AllreduceDeviceAsync then Wait.
func AllreduceDevice(ctx context.Context, name string, t DeviceTensor, op ReduceOp, opts ...CallOption) error {
	return AllreduceDeviceAsync(ctx, name, t, op, opts...).Wait(ctx)
}

// GroupedAllreduceDevice allreduces several device tensors as one unit:
// every rank passes the same number, lengths and order; the loop fuses
// them (up to the fusion threshold) into one NCCL call.
func GroupedAllreduceDevice(ctx context.Context, name string, ts []DeviceTensor, op ReduceOp, opts ...CallOption) error {
	hs := make([]*Handle, len(ts))
	for i, t := range ts {
		hs[i] = AllreduceDeviceAsync(ctx, fmt.Sprintf("group/%s/%d/%d", name, len(ts), i), t, op, opts...)
	}
	var first error
	for _, h := range hs {
		if err := h.Wait(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// BroadcastDeviceAsync starts a broadcast of root's t into every rank's t.
func BroadcastDeviceAsync(ctx context.Context, name string, t DeviceTensor, root int, opts ...CallOption) *Handle {
	h, _ := submitDevice(ctx, coordinator.Request{Name: name, Op: coordinator.OpBroadcast, Root: root}, t, nil, opts)
	return h
}

// BroadcastDevice is BroadcastDeviceAsync then Wait.
func BroadcastDevice(ctx context.Context, name string, t DeviceTensor, root int, opts ...CallOption) error {
	return BroadcastDeviceAsync(ctx, name, t, root, opts...).Wait(ctx)
}

// DeviceResult is the pending result of a device collective that makes new
// device memory.
type DeviceResult struct {
	h    *Handle
	call *DeviceCall
}

// Wait returns the result tensor (on the input's device; the caller frees
// it) and the elements from each member.
func (r DeviceResult) Wait(ctx context.Context) (DeviceTensor, []int, error) {
	if err := r.h.Wait(ctx); err != nil {
		return DeviceTensor{}, nil, err
	}
	es := r.call.In.DType.Size()
	counts := make([]int, len(r.h.en.OutCounts))
	for i, c := range r.h.en.OutCounts {
		counts[i] = c / es
	}
	return r.call.Out, counts, nil
}

// Done is closed when the collective finished.
func (r DeviceResult) Done() <-chan struct{} { return r.h.Done() }

func deviceResult(h *Handle, call *DeviceCall) DeviceResult {
	if call == nil {
		call = &DeviceCall{}
	}
	return DeviceResult{h: h, call: call}
}

// AllgatherDeviceAsync gathers every rank's t (the first dimension may
// differ) into new device memory, in rank order.
func AllgatherDeviceAsync(ctx context.Context, name string, t DeviceTensor, opts ...CallOption) DeviceResult {
	return deviceResult(submitDevice(ctx, coordinator.Request{Name: name, Op: coordinator.OpAllgather}, t, nil, opts))
}

// AllgatherDevice is AllgatherDeviceAsync then Wait.
func AllgatherDevice(ctx context.Context, name string, t DeviceTensor, opts ...CallOption) (DeviceTensor, []int, error) {
	return AllgatherDeviceAsync(ctx, name, t, opts...).Wait(ctx)
}

// ReduceScatterDeviceAsync reduces t across ranks and returns this rank's
// block (the blocks split the elements as evenly as possible, the first
// ones one longer) in new device memory.
func ReduceScatterDeviceAsync(ctx context.Context, name string, t DeviceTensor, op ReduceOp, opts ...CallOption) DeviceResult {
	return deviceResult(submitDevice(ctx, coordinator.Request{Name: name, Op: coordinator.OpReduceScatter, ReduceOp: op}, t, nil, opts))
}

// ReduceScatterDevice is ReduceScatterDeviceAsync then Wait.
func ReduceScatterDevice(ctx context.Context, name string, t DeviceTensor, op ReduceOp, opts ...CallOption) (DeviceTensor, error) {
	out, _, err := ReduceScatterDeviceAsync(ctx, name, t, op, opts...).Wait(ctx)
	return out, err
}

// AlltoallDeviceAsync sends splits[r] consecutive elements of t to member
// r and receives every member's block for this rank into new device
// memory (Wait's counts say how many came from each).
func AlltoallDeviceAsync(ctx context.Context, name string, t DeviceTensor, splits []int, opts ...CallOption) DeviceResult {
	total := 0
	bytes := make([]int, len(splits))
	for i, s := range splits {
		if s < 0 {
			return deviceResult(failed(fmt.Errorf("%w: alltoall %q split %d is %d", ErrInvalid, name, i, s)), nil)
		}
		total += s
		bytes[i] = s * t.DType.Size()
	}
	if total != t.Count {
		return deviceResult(failed(fmt.Errorf("%w: alltoall %q splits add up to %d elements, the tensor has %d", ErrInvalid, name, total, t.Count)), nil)
	}
	return deviceResult(submitDevice(ctx, coordinator.Request{Name: name, Op: coordinator.OpAlltoall}, t, bytes, opts))
}

// AlltoallDevice is AlltoallDeviceAsync then Wait.
func AlltoallDevice(ctx context.Context, name string, t DeviceTensor, splits []int, opts ...CallOption) (DeviceTensor, []int, error) {
	return AlltoallDeviceAsync(ctx, name, t, splits, opts...).Wait(ctx)
}
