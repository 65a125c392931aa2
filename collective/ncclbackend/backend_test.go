//go:build cgo

package ncclbackend

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/collectivetest"
	"github.com/gorovod/gorovod/internal/tensor"
	"github.com/gorovod/gorovod/nccl"
	"github.com/gorovod/gorovod/nccl/fakenccl"
)

// The ranks of these tests are worlds in one process (collectivetest) whose
// device tensors live in the NCCL test double's "GPU memory" and whose
// device responses run on this backend over the double's communicators.

var double struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	os.Setenv("FAKECUDA_DEVICES", "4")
	os.Setenv("FAKENCCL_CHUNK", "4096") // several exchange steps per tensor
	code := m.Run()
	if double.dir != "" {
		os.RemoveAll(double.dir)
	}
	os.Exit(code)
}

func loadDouble(t *testing.T) *nccl.Library {
	t.Helper()
	double.once.Do(func() {
		double.dir, double.err = os.MkdirTemp("", "ncclbackend-")
		if double.err == nil {
			double.err = fakenccl.Build(context.Background(), double.dir, fakenccl.Options{})
		}
	})
	if errors.Is(double.err, fakenccl.ErrNoCompiler) {
		t.Skip(double.err)
	}
	if double.err != nil {
		t.Fatal(double.err)
	}
	lib, err := nccl.LoadFrom([]string{filepath.Join(double.dir, fakenccl.NCCLName)}, []string{filepath.Join(double.dir, fakenccl.CUDARTName)})
	if err != nil {
		t.Fatal(err)
	}
	return lib
}

// run runs fn on n in-process ranks whose device backend is b.
func run(t *testing.T, n int, b *Backend, fn func(ctx context.Context, w *collective.World, r *rig) error, opts ...collective.Option) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts = append(opts, collective.WithDeviceBackend(b))
	return collectivetest.Run(ctx, n, func(ctx context.Context, w *collective.World) error {
		r := &rig{lib: b.lib, dev: b.lib.Device(w.Rank() % 4), rank: w.Rank(), size: w.Size(), w: w}
		defer r.freeAll()
		return fn(ctx, w, r)
	}, opts...)
}

type rig struct {
	lib        *nccl.Library
	dev        nccl.Device
	rank, size int
	w          *collective.World
	allocated  []nccl.DevicePtr
}

func (r *rig) freeAll() {
	for _, p := range r.allocated {
		r.dev.Free(p)
	}
}

// tensor uploads vs as a device tensor of dt on this rank's GPU.
func (r *rig) tensor(dt tensor.DType, vs []float64) (collective.DeviceTensor, error) {
	b := encode(dt, vs)
	p, err := r.dev.Malloc(max(len(b), 1))
	if err != nil {
		return collective.DeviceTensor{}, err
	}
	r.allocated = append(r.allocated, p)
	if err := r.dev.CopyToDevice(p, b); err != nil {
		return collective.DeviceTensor{}, err
	}
	return collective.DeviceTensor{Ptr: p, DType: dt, Count: len(vs), Device: r.dev.Ordinal}, nil
}

// check compares a device tensor with want element by element.
func (r *rig) check(what string, t collective.DeviceTensor, want []float64) error {
	if t.Count != len(want) {
		return fmt.Errorf("%s: %d elements, want %d", what, t.Count, len(want))
	}
	got := make([]byte, t.Count*t.DType.Size())
	if err := r.dev.CopyFromDevice(got, t.Ptr); err != nil {
		return err
	}
	w := encode(t.DType, want)
	es := t.DType.Size()
	for i := range want {
		if string(got[i*es:(i+1)*es]) != string(w[i*es:(i+1)*es]) {
			return fmt.Errorf("%s on rank %d: element %d is %x, want %x (%v)", what, r.rank, i, got[i*es:(i+1)*es], w[i*es:(i+1)*es], want[i])
		}
	}
	return nil
}

var (
	allDTypes = []tensor.DType{tensor.Int8, tensor.Uint8, tensor.Int32, tensor.Int64, tensor.Uint64,
		tensor.Float16, tensor.Float32, tensor.Float64, tensor.BFloat16}
	allOps = []tensor.ReduceOp{tensor.Sum, tensor.Product, tensor.Min, tensor.Max, tensor.Average}
)

// value is rank's element i: small integers, so every result is exact in
// every dtype.
func value(dt tensor.DType, rank, i int) float64 {
	if dt == tensor.Uint8 || dt == tensor.Uint64 {
		return float64(1 + (rank+i)%3)
	}
	return []float64{-2, -1, 1, 2, 3}[(rank*3+i)%5]
}

func values(dt tensor.DType, rank, off, n int) []float64 {
	vs := make([]float64, n)
	for i := range vs {
		vs[i] = value(dt, rank, off+i)
	}
	return vs
}

func reduced(dt tensor.DType, op tensor.ReduceOp, size, i int) float64 {
	acc := value(dt, 0, i)
	for k := 1; k < size; k++ {
		x := value(dt, k, i)
		switch op {
		case tensor.Product:
			acc *= x
		case tensor.Min:
			acc = math.Min(acc, x)
		case tensor.Max:
			acc = math.Max(acc, x)
		default:
			acc += x
		}
	}
	if op == tensor.Average {
		if dt.IsFloat() {
			return acc / float64(size)
		}
		return float64(int64(acc) / int64(size))
	}
	return acc
}

func encode(dt tensor.DType, vs []float64) []byte {
	es := dt.Size()
	b := make([]byte, len(vs)*es)
	le := binary.LittleEndian
	for i, v := range vs {
		p := b[i*es:]
		switch dt {
		case tensor.Int8:
			p[0] = byte(int8(v))
		case tensor.Uint8:
			p[0] = byte(v)
		case tensor.Int32:
			le.PutUint32(p, uint32(int32(v)))
		case tensor.Int64:
			le.PutUint64(p, uint64(int64(v)))
		case tensor.Uint64:
			le.PutUint64(p, uint64(v))
		case tensor.Float16:
			le.PutUint16(p, uint16(tensor.F16FromFloat32(float32(v))))
		case tensor.BFloat16:
			le.PutUint16(p, uint16(tensor.BF16FromFloat32(float32(v))))
		case tensor.Float32:
			le.PutUint32(p, math.Float32bits(float32(v)))
		case tensor.Float64:
			le.PutUint64(p, math.Float64bits(v))
		}
	}
	return b
}

// TestDeviceMatrix: every dtype NCCL has x every op x every collective,
// odd lengths, device tensors on each rank's own GPU, np 2 and 4.
func TestDeviceMatrix(t *testing.T) {
	lib := loadDouble(t)
	for _, np := range []int{2, 4} {
		t.Run(fmt.Sprintf("np%d", np), func(t *testing.T) {
			b := New(lib, 0)
			defer b.Close()
			err := run(t, np, b, func(ctx context.Context, w *collective.World, r *rig) error {
				in := collective.InWorld(w)
				for _, dt := range allDTypes {
					for _, n := range []int{1, 7, 1031} {
						for _, op := range allOps {
							x, err := r.tensor(dt, values(dt, r.rank, 0, n))
							if err != nil {
								return err
							}
							name := fmt.Sprintf("ar/%v/%v/%d", dt, op, n)
							if err := collective.AllreduceDevice(ctx, name, x, op, in); err != nil {
								return fmt.Errorf("%s: %w", name, err)
							}
							want := make([]float64, n)
							for i := range want {
								want[i] = reduced(dt, op, r.size, i)
							}
							if err := r.check(name, x, want); err != nil {
								return err
							}
						}
						if err := r.others(ctx, in, dt, n); err != nil {
							return err
						}
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// others checks broadcast, allgather (uneven), reducescatter and alltoall.
func (r *rig) others(ctx context.Context, in collective.CallOption, dt tensor.DType, n int) error {
	root := r.size - 1
	x, err := r.tensor(dt, values(dt, r.rank, 0, n))
	if err != nil {
		return err
	}
	name := fmt.Sprintf("bc/%v/%d", dt, n)
	if err := collective.BroadcastDevice(ctx, name, x, root, in); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := r.check(name, x, values(dt, root, 0, n)); err != nil {
		return err
	}

	mine := n + r.rank // uneven first dimensions
	g, err := r.tensor(dt, values(dt, r.rank, 0, mine))
	if err != nil {
		return err
	}
	name = fmt.Sprintf("ag/%v/%d", dt, n)
	out, counts, err := collective.AllgatherDevice(ctx, name, g, in)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	r.allocated = append(r.allocated, out.Ptr)
	var want []float64
	for k := 0; k < r.size; k++ {
		want = append(want, values(dt, k, 0, n+k)...)
		if counts[k] != n+k {
			return fmt.Errorf("%s: counts %v", name, counts)
		}
	}
	if err := r.check(name, out, want); err != nil {
		return err
	}

	full := n*r.size + 1 // not a multiple of the size: the first block is longer
	s, err := r.tensor(dt, values(dt, r.rank, 0, full))
	if err != nil {
		return err
	}
	name = fmt.Sprintf("rs/%v/%d", dt, n)
	block, err := collective.ReduceScatterDevice(ctx, name, s, tensor.Sum, in)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	r.allocated = append(r.allocated, block.Ptr)
	off := r.rank * n
	if r.rank > 0 {
		off++
	}
	want = want[:0]
	for i := 0; i < block.Count; i++ {
		want = append(want, reduced(dt, tensor.Sum, r.size, off+i))
	}
	if err := r.check(name, block, want); err != nil {
		return err
	}

	splits := make([]int, r.size) // k+1 elements to rank k
	total := 0
	for k := range splits {
		splits[k] = k + 1
		total += k + 1
	}
	a, err := r.tensor(dt, values(dt, r.rank, 0, total))
	if err != nil {
		return err
	}
	name = fmt.Sprintf("a2a/%v/%d", dt, n)
	got, _, err := collective.AlltoallDevice(ctx, name, a, splits, in)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	r.allocated = append(r.allocated, got.Ptr)
	want = want[:0]
	start := r.rank * (r.rank + 1) / 2
	for k := 0; k < r.size; k++ {
		want = append(want, values(dt, k, start, r.rank+1)...)
	}
	return r.check(name, got, want)
}

// TestMixedHostAndDevice: host and device tensors in one step, each on its
// own backend.
func TestMixedHostAndDevice(t *testing.T) {
	lib := loadDouble(t)
	b := New(lib, 0)
	defer b.Close()
	err := run(t, 2, b, func(ctx context.Context, w *collective.World, r *rig) error {
		in := collective.InWorld(w)
		host := []float32{float32(r.rank + 1), 10}
		d, err := r.tensor(tensor.Float32, []float64{float64(r.rank + 1), 20})
		if err != nil {
			return err
		}
		hh := collective.AllreduceAsync(ctx, "host", host, collective.Sum, in)
		hd := collective.AllreduceDeviceAsync(ctx, "device", d, collective.Sum, in)
		if err := hh.Wait(ctx); err != nil {
			return err
		}
		if err := hd.Wait(ctx); err != nil {
			return err
		}
		if host[0] != 3 || host[1] != 20 {
			return fmt.Errorf("host tensor = %v, want [3 20]", host)
		}
		return r.check("device tensor", d, []float64{3, 40})
	})
	if err != nil {
		t.Fatal(err)
	}
	if b.Calls() == 0 {
		t.Error("the device tensor did not go through NCCL")
	}
}

// TestFusion200: 200 small device tensors in one step take at most 2 NCCL
// calls per rank.
func TestFusion200(t *testing.T) {
	lib := loadDouble(t)
	b := New(lib, 0)
	defer b.Close()
	const np = 2
	err := run(t, np, b, func(ctx context.Context, w *collective.World, r *rig) error {
		in := collective.InWorld(w)
		ts := make([]collective.DeviceTensor, 200)
		for i := range ts {
			var err error
			if ts[i], err = r.tensor(tensor.Float32, values(tensor.Float32, r.rank, i, 1+i%5)); err != nil {
				return err
			}
		}
		hs := make([]*collective.Handle, len(ts))
		for i, x := range ts {
			hs[i] = collective.AllreduceDeviceAsync(ctx, fmt.Sprintf("small/%d", i), x, collective.Sum, in)
		}
		for i, h := range hs {
			if err := h.Wait(ctx); err != nil {
				return err
			}
			want := make([]float64, ts[i].Count)
			for j := range want {
				for k := 0; k < r.size; k++ {
					want[j] += value(tensor.Float32, k, i+j)
				}
			}
			if err := r.check(fmt.Sprintf("small/%d", i), ts[i], want); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Every rank makes the same calls; the backend counts all ranks'.
	if c := b.Calls(); c%np != 0 || c/np > 2 || c == 0 {
		t.Errorf("200 small tensors took %d NCCL calls on %d ranks; want at most 2 per rank", c, np)
	}
}

// TestFaults: an injected async error and a hung collective end every
// rank's waiting call with a named error within the progress deadline.
func TestFaults(t *testing.T) {
	lib := loadDouble(t)
	for _, tc := range []struct {
		name, fault string
		want        *regexp.Regexp
		kinds       []error
	}{
		{"async-error", "error:1:2", regexp.MustCompile(`rank 1|injected async error on rank 1`), []error{collective.ErrPeerLost}},
		{"hang", "hang:1:2", regexp.MustCompile(`rank [01]`), []error{collective.ErrPeerLost, collective.ErrTimeout}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("FAKENCCL_FAULT", tc.fault)
			b := New(lib, 0, nccl.WithWatchdogInterval(5*time.Millisecond))
			defer b.Close()
			cfg := collective.DefaultConfig()
			cfg.ProgressTimeout = 2 * time.Second
			var mu sync.Mutex
			errs := map[int]error{}
			start := time.Now()
			err := run(t, 2, b, func(ctx context.Context, w *collective.World, r *rig) error {
				x, err := r.tensor(tensor.Float32, values(tensor.Float32, r.rank, 0, 33))
				if err != nil {
					return err
				}
				for i := 0; i < 5; i++ {
					if err := collective.AllreduceDevice(ctx, fmt.Sprintf("f%d", i), x, collective.Sum, collective.InWorld(w)); err != nil {
						mu.Lock()
						errs[r.rank] = err
						mu.Unlock()
						return nil
					}
				}
				return errors.New("no collective failed")
			}, collective.WithConfig(cfg))
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > time.Minute {
				t.Errorf("took %v", d)
			}
			for rank := 0; rank < 2; rank++ {
				e := errs[rank]
				ok := false
				for _, k := range tc.kinds {
					ok = ok || errors.Is(e, k)
				}
				if !ok || !tc.want.MatchString(e.Error()) {
					t.Errorf("rank %d: %v; want one of %v matching %q", rank, e, tc.kinds, tc.want)
				}
			}
		})
	}
}
