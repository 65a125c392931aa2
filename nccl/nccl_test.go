package nccl

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gorovod/gorovod/internal/tensor"
)

func TestDecodeVersion(t *testing.T) {
	for _, tc := range []struct {
		code int
		want Version
	}{
		{2804, Version{2, 8, 4}}, // pre-2.9 encoding: major*1000
		{2708, Version{2, 7, 8}},
		{20903, Version{2, 9, 3}}, // 2.9 switched to major*10000
		{21015, Version{2, 10, 15}},
		{21803, Version{2, 18, 3}},
		{22703, Version{2, 27, 3}},
		{30000, Version{3, 0, 0}},
	} {
		if got := decodeVersion(tc.code); got != tc.want {
			t.Errorf("decodeVersion(%d) = %v, want %v", tc.code, got, tc.want)
		}
	}
	if !(Version{2, 10, 3}).AtLeast(2, 10) || (Version{2, 9, 9}).AtLeast(2, 10) || !(Version{3, 0, 0}).AtLeast(2, 10) {
		t.Error("AtLeast is wrong around 2.10")
	}
}

func TestMapDType(t *testing.T) {
	v218, v28 := Version{2, 18, 3}, Version{2, 8, 4}
	want := map[tensor.DType]DataType{
		tensor.Int8: Int8, tensor.Uint8: Uint8, tensor.Int32: Int32, tensor.Int64: Int64, tensor.Uint64: Uint64,
		tensor.Float16: Float16, tensor.Float32: Float32, tensor.Float64: Float64, tensor.BFloat16: BFloat16,
	}
	for dt, w := range want {
		got, err := MapDType(dt, v218)
		if err != nil || got != w {
			t.Errorf("MapDType(%v, 2.18) = %v, %v; want %v", dt, got, err, w)
		}
	}
	// The public enum values, so a renumbering cannot slip through.
	for d, n := range map[DataType]int{Int8: 0, Uint8: 1, Int32: 2, Uint32: 3, Int64: 4, Uint64: 5, Float16: 6, Float32: 7, Float64: 8, BFloat16: 9} {
		if int(d) != n {
			t.Errorf("%v = %d, want %d", d, d, n)
		}
	}
	_, err := MapDType(tensor.BFloat16, v28)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "bfloat16") || !strings.Contains(err.Error(), "2.8.4") {
		t.Errorf("bfloat16 on 2.8.4: %v, want ErrUnsupported naming bfloat16 and the version", err)
	}
	_, err = MapDType(tensor.DType(77), v218)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "dtype(77)") {
		t.Errorf("unknown dtype: %v", err)
	}
}

func TestMapReduction(t *testing.T) {
	v218, v28 := Version{2, 18, 3}, Version{2, 8, 4}
	for _, tc := range []struct {
		op        tensor.ReduceOp
		v         Version
		want      RedOp
		postscale bool
	}{
		{tensor.Sum, v218, OpSum, false},
		{tensor.Product, v218, OpProd, false},
		{tensor.Max, v218, OpMax, false},
		{tensor.Min, v218, OpMin, false},
		{tensor.Average, v218, OpAvg, false},
		{tensor.Average, Version{2, 10, 3}, OpAvg, false},
		{tensor.Average, v28, OpSum, true},
		{tensor.Average, Version{2, 9, 9}, OpSum, true},
		{tensor.Min, v28, OpMin, false},
	} {
		r, err := MapReduction(tensor.Float32, tc.op, tc.v)
		if err != nil || r.Op != tc.want || r.Postscale != tc.postscale || r.DType != Float32 {
			t.Errorf("MapReduction(f32, %v, %v) = %+v, %v; want op %v postscale %v", tc.op, tc.v, r, err, tc.want, tc.postscale)
		}
	}
	for o, n := range map[RedOp]int{OpSum: 0, OpProd: 1, OpMax: 2, OpMin: 3, OpAvg: 4} {
		if int(o) != n {
			t.Errorf("%v = %d, want %d", o, o, n)
		}
	}
	for _, op := range []tensor.ReduceOp{tensor.BitAnd, tensor.BitOr, tensor.ReduceOp(42)} {
		_, err := MapReduction(tensor.Int32, op, v218)
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), op.String()) || !strings.Contains(err.Error(), "int32") {
			t.Errorf("MapReduction(int32, %v): %v, want ErrUnsupported naming op and dtype", op, err)
		}
	}
	if _, err := MapReduction(tensor.BFloat16, tensor.Sum, v28); !errors.Is(err, ErrUnsupported) {
		t.Errorf("bf16 sum on 2.8: %v", err)
	}
}

func TestLoadUnavailable(t *testing.T) {
	lib, err := Load()
	if err == nil {
		t.Skipf("a real NCCL is installed (%v); nothing to check", lib.NCCLVersion())
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Load: %v, want ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), "libnccl.so.2") {
		t.Errorf("Load error %q does not name libnccl.so.2", err)
	}
	if lib2, err2 := Load(); lib2 != lib || err2 != err {
		t.Errorf("Load is not idempotent: %v/%v then %v/%v", lib, err, lib2, err2)
	}
	_, err = LoadFrom([]string{"/nonexistent/libnccl-missing.so"}, []string{"/nonexistent/libcudart-missing.so"})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "libnccl-missing.so") {
		t.Errorf("LoadFrom: %v, want ErrUnavailable naming the path", err)
	}
	if _, err := LoadFrom(nil, DefaultCUDARTNames); !errors.Is(err, ErrUnavailable) {
		t.Errorf("LoadFrom(nil): %v", err)
	}
}

func TestNilLibrary(t *testing.T) {
	var l *Library
	ctx := context.Background()
	check := func(name string, err error) {
		t.Helper()
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s on nil Library: %v, want ErrUnavailable", name, err)
		}
	}
	_, err := l.GetUniqueID()
	check("GetUniqueID", err)
	_, err = l.NewComm(ctx, 1, 0, UniqueID{}, 0)
	check("NewComm", err)
	_, err = l.DeviceCount()
	check("DeviceCount", err)
	_, err = l.RuntimeVersion()
	check("RuntimeVersion", err)
	d := l.Device(0)
	_, err = d.Malloc(16)
	check("Malloc", err)
	check("Free", d.Free(0))
	check("CopyToDevice", d.CopyToDevice(0, []byte{1}))
	check("CopyFromDevice", d.CopyFromDevice(make([]byte, 1), 0))
	_, err = d.NewStream()
	check("NewStream", err)
	check("DestroyStream", d.DestroyStream(0))
	check("Synchronize", d.Synchronize(ctx, 0))
	if a, b, c := l.Version(); a != 0 || b != 0 || c != 0 {
		t.Errorf("Version on nil = %d.%d.%d", a, b, c)
	}
	if n, c := l.Paths(); n != "" || c != "" {
		t.Errorf("Paths on nil = %q %q", n, c)
	}
	var zero Library // a Library not made by Load behaves the same
	_, err = zero.GetUniqueID()
	check("GetUniqueID on zero Library", err)
	var c *Comm
	check("Abort on nil Comm", c.Abort())
	check("Close on nil Comm", c.Close())
}
