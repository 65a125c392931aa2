package ops

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gorovod/gorovod/internal/tensor"
)

var allDTypes = []tensor.DType{tensor.Float32, tensor.Float64, tensor.Int32, tensor.Int64, tensor.Int8, tensor.Uint8, tensor.Float16, tensor.BFloat16, tensor.Uint64}

var allOps = []tensor.ReduceOp{tensor.Sum, tensor.Average, tensor.Min, tensor.Max, tensor.Product, tensor.BitAnd, tensor.BitOr}

func opValid(dt tensor.DType, op tensor.ReduceOp) bool {
	return !(dt.IsFloat() && (op == tensor.BitAnd || op == tensor.BitOr))
}

// randBuf fills n elements of dt with values that exercise the kernels:
// for floats small integers (exact sums), fractions, and now and then
// specials (NaN only when withNaN).
func randBuf(r *rand.Rand, dt tensor.DType, n int, specials bool) []byte {
	b := make([]byte, n*dt.Size())
	for i := range n {
		var v float64
		switch r.IntN(4) {
		case 0:
			v = float64(r.IntN(21) - 10)
		case 1:
			v = r.NormFloat64() * 100
		case 2:
			v = r.Float64()
		default:
			v = r.NormFloat64() * 1e-3
		}
		if specials && r.IntN(10) == 0 {
			v = []float64{math.Inf(1), math.Inf(-1), math.NaN(), 0, math.Copysign(0, -1), 6e-8, 1e-40, 65504, 70000}[r.IntN(9)]
		}
		switch dt {
		case tensor.Float32:
			as[float32](b)[i] = float32(v)
		case tensor.Float64:
			as[float64](b)[i] = v
		case tensor.Float16:
			as[tensor.F16](b)[i] = tensor.F16FromFloat32(float32(v))
		case tensor.BFloat16:
			as[tensor.BF16](b)[i] = tensor.BF16FromFloat32(float32(v))
		default:
			u := r.Uint64()
			for j := range dt.Size() {
				b[i*dt.Size()+j] = byte(u >> (8 * j))
			}
		}
	}
	return b
}

// refReduce is the naive elementwise reference, written independently of
// the kernels (element by element through float64/float32 and big ints).
func refReduce(dt tensor.DType, op tensor.ReduceOp, a, b []byte) []byte {
	out := append([]byte(nil), a...)
	n := len(a) / dt.Size()
	f := func(x, y float64) float64 {
		switch op {
		case tensor.Sum, tensor.Average:
			return x + y
		case tensor.Min:
			if y < x {
				return y
			}
			return x
		case tensor.Max:
			if y > x {
				return y
			}
			return x
		case tensor.Product:
			return x * y
		}
		panic("op")
	}
	iop := func(x, y uint64) uint64 {
		switch op {
		case tensor.Sum, tensor.Average:
			return x + y
		case tensor.Product:
			return x * y
		case tensor.BitAnd:
			return x & y
		case tensor.BitOr:
			return x | y
		}
		panic("op")
	}
	for i := range n {
		switch dt {
		case tensor.Float32:
			x, y := as[float32](a)[i], as[float32](b)[i]
			as[float32](out)[i] = float32(f(float64(x), float64(y))) // exact for +, *, min, max of two float32
		case tensor.Float64:
			as[float64](out)[i] = f(as[float64](a)[i], as[float64](b)[i])
		case tensor.Float16:
			x, y := as[tensor.F16](a)[i].Float32(), as[tensor.F16](b)[i].Float32()
			as[tensor.F16](out)[i] = tensor.F16FromFloat32(float32(f(float64(x), float64(y))))
		case tensor.BFloat16:
			x, y := as[tensor.BF16](a)[i].Float32(), as[tensor.BF16](b)[i].Float32()
			as[tensor.BF16](out)[i] = tensor.BF16FromFloat32(float32(f(float64(x), float64(y))))
		case tensor.Int8, tensor.Int32, tensor.Int64:
			sz := dt.Size()
			x, y := sext(a[i*sz:(i+1)*sz]), sext(b[i*sz:(i+1)*sz])
			var r int64
			switch op {
			case tensor.Min:
				r = min(x, y)
			case tensor.Max:
				r = max(x, y)
			default:
				r = int64(iop(uint64(x), uint64(y)))
			}
			put(out[i*sz:(i+1)*sz], uint64(r))
		case tensor.Uint8, tensor.Uint64:
			sz := dt.Size()
			x, y := zext(a[i*sz:(i+1)*sz]), zext(b[i*sz:(i+1)*sz])
			var r uint64
			switch op {
			case tensor.Min:
				r = min(x, y)
			case tensor.Max:
				r = max(x, y)
			default:
				r = iop(x, y)
			}
			put(out[i*sz:(i+1)*sz], r)
		}
	}
	return out
}

func zext(b []byte) uint64 {
	var u uint64
	for j := len(b) - 1; j >= 0; j-- {
		u = u<<8 | uint64(b[j])
	}
	return u
}

func sext(b []byte) int64 {
	sh := 64 - 8*len(b)
	return int64(zext(b)<<sh) >> sh
}

func put(b []byte, u uint64) {
	for j := range b {
		b[j] = byte(u >> (8 * j))
	}
}

// sameValues compares element bytes, treating any two NaNs as equal.
func sameValues(dt tensor.DType, a, b []byte) (int, bool) {
	sz := dt.Size()
	for i := 0; i < len(a); i += sz {
		x, y := a[i:i+sz], b[i:i+sz]
		if bytes.Equal(x, y) {
			continue
		}
		if isNaN(dt, x) && isNaN(dt, y) {
			continue
		}
		return i / sz, false
	}
	return 0, true
}

func isNaN(dt tensor.DType, b []byte) bool {
	switch dt {
	case tensor.Float32:
		return math.IsNaN(float64(as[float32](b)[0]))
	case tensor.Float64:
		return math.IsNaN(as[float64](b)[0])
	case tensor.Float16:
		return math.IsNaN(float64(as[tensor.F16](b)[0].Float32()))
	case tensor.BFloat16:
		return math.IsNaN(float64(as[tensor.BF16](b)[0].Float32()))
	}
	return false
}

func TestReduceAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, dt := range allDTypes {
		for _, op := range allOps {
			if !opValid(dt, op) {
				continue
			}
			for _, n := range []int{0, 1, 3, 17, 1000, 4099} {
				a, b := randBuf(r, dt, n, true), randBuf(r, dt, n, true)
				want := refReduce(dt, op, a, b)
				got := append([]byte(nil), a...)
				if err := Reduce(dt, op, got, b); err != nil {
					t.Fatal(err)
				}
				if i, ok := sameValues(dt, got, want); !ok {
					t.Fatalf("%s %s n=%d: element %d differs: got % x want % x (inputs % x, % x)", dt, op, n, i,
						got[i*dt.Size():(i+1)*dt.Size()], want[i*dt.Size():(i+1)*dt.Size()],
						a[i*dt.Size():(i+1)*dt.Size()], b[i*dt.Size():(i+1)*dt.Size()])
				}
			}
		}
	}
}

// TestReduceOut: the fused reduce-and-copy leaves dst and out equal to a
// plain reduce, bit for bit, for every dtype and op, on both sides of the
// size from which the C kernels run.
func TestReduceOut(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 8))
	for _, dt := range allDTypes {
		for _, op := range allOps {
			if !opValid(dt, op) {
				continue
			}
			for _, n := range []int{0, 1, 9, cgoMinBytes/dt.Size() - 1, cgoMinBytes / dt.Size(), 4099} {
				a, b := randBuf(r, dt, n, true), randBuf(r, dt, n, true)
				want := append([]byte(nil), a...)
				reduce(dt, op, want, b)
				dst, out := append([]byte(nil), a...), make([]byte, len(a))
				reduceOut(dt, op, dst, b, out)
				if !bytes.Equal(dst, want) || !bytes.Equal(out, want) {
					t.Fatalf("%s %s n=%d: reduceOut differs from reduce (dst equal %v, out equal %v)",
						dt, op, n, bytes.Equal(dst, want), bytes.Equal(out, want))
				}
			}
		}
	}
}

func TestReduceInvalid(t *testing.T) {
	cases := []struct {
		dt       tensor.DType
		op       tensor.ReduceOp
		dst, src int
	}{
		{tensor.Float32, tensor.BitAnd, 4, 4},
		{tensor.Float32, tensor.Sum, 4, 8},
		{tensor.Float32, tensor.Sum, 6, 6},
		{tensor.DType(99), tensor.Sum, 4, 4},
		{tensor.Int32, tensor.ReduceOp(42), 4, 4},
	}
	for _, c := range cases {
		err := Reduce(c.dt, c.op, make([]byte, c.dst), make([]byte, c.src))
		if !errors.Is(err, tensor.ErrInvalid) {
			t.Errorf("Reduce(%s, %s, %d, %d) = %v, want ErrInvalid", c.dt, c.op, c.dst, c.src, err)
		}
	}
	if err := Scale(tensor.Float64, make([]byte, 12), 2); !errors.Is(err, tensor.ErrInvalid) {
		t.Errorf("Scale of 12 bytes of float64: %v", err)
	}
}

func TestScale(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	for _, dt := range allDTypes {
		for _, n := range []int{1, 5, 3001} {
			for _, f := range []float64{0.5, 1.0 / 3, -2, 1} {
				buf := randBuf(r, dt, n, true)
				got := append([]byte(nil), buf...)
				if err := Scale(dt, got, f); err != nil {
					t.Fatal(err)
				}
				want := append([]byte(nil), buf...)
				for i := range n {
					if f == 1 {
						break // documented: a factor of 1 leaves buf untouched
					}
					switch dt {
					case tensor.Float32:
						as[float32](want)[i] *= float32(f)
					case tensor.Float64:
						as[float64](want)[i] *= f
					case tensor.Float16:
						as[tensor.F16](want)[i] = tensor.F16FromFloat32(as[tensor.F16](buf)[i].Float32() * float32(f))
					case tensor.BFloat16:
						as[tensor.BF16](want)[i] = tensor.BF16FromFloat32(as[tensor.BF16](buf)[i].Float32() * float32(f))
					case tensor.Int8:
						as[int8](want)[i] = int8(float64(as[int8](buf)[i]) * f)
					case tensor.Uint8:
						as[uint8](want)[i] = uint8(float64(as[uint8](buf)[i]) * f)
					case tensor.Int32:
						as[int32](want)[i] = int32(float64(as[int32](buf)[i]) * f)
					case tensor.Int64:
						as[int64](want)[i] = int64(float64(as[int64](buf)[i]) * f)
					case tensor.Uint64:
						as[uint64](want)[i] = uint64(float64(as[uint64](buf)[i]) * f)
					}
				}
				if i, ok := sameValues(dt, got, want); !ok {
					t.Fatalf("Scale %s n=%d by %v: element %d differs", dt, n, f, i)
				}
			}
		}
	}
}

// TestSIMDMatchesGo runs every C kernel level against the Go kernels on
// inputs full of specials; results must be bit-identical (NaN payloads
// aside: the NaN must still be a NaN).
func TestSIMDMatchesGo(t *testing.T) {
	top := SIMDLevel(2)
	if top < 0 {
		t.Skip("no SIMD kernels in this build")
	}
	defer SIMDLevel(2)
	r := rand.New(rand.NewPCG(3, 3))
	for level := 0; level <= top; level++ {
		if got := SIMDLevel(level); got != level {
			t.Fatalf("SIMDLevel(%d) = %d", level, got)
		}
		for _, dt := range []tensor.DType{tensor.Float32, tensor.Float64, tensor.Float16, tensor.BFloat16} {
			for _, op := range []tensor.ReduceOp{tensor.Sum, tensor.Average, tensor.Min, tensor.Max, tensor.Product} {
				for _, n := range []int{1, 7, 8, 15, 16, 33, 5003} {
					a, b := randBuf(r, dt, n, true), randBuf(r, dt, n, true)
					simd, pure := append([]byte(nil), a...), append([]byte(nil), a...)
					if !reduceSIMD(dt, op, simd, b) {
						t.Fatalf("no SIMD kernel for %s %s", dt, op)
					}
					reduceGo(dt, op, pure, b)
					if i, ok := sameValues(dt, simd, pure); !ok {
						sz := dt.Size()
						t.Fatalf("level %d %s %s n=%d: element %d: simd % x, go % x (inputs % x, % x)", level, dt, op, n, i,
							simd[i*sz:(i+1)*sz], pure[i*sz:(i+1)*sz], a[i*sz:(i+1)*sz], b[i*sz:(i+1)*sz])
					}
					fused, out := append([]byte(nil), a...), make([]byte, len(a))
					if !reduceOutSIMD(dt, op, fused, b, out) {
						t.Fatalf("no SIMD reduce-out kernel for %s %s", dt, op)
					}
					if !bytes.Equal(fused, simd) || !bytes.Equal(out, simd) {
						t.Fatalf("level %d %s %s n=%d: reduce-out differs from reduce (dst equal %v, out equal %v)",
							level, dt, op, n, bytes.Equal(fused, simd), bytes.Equal(out, simd))
					}
				}
				buf := randBuf(r, dt, 1001, true)
				simd, pure := append([]byte(nil), buf...), append([]byte(nil), buf...)
				scaleSIMD(dt, simd, 0.37)
				scaleGo(dt, pure, 0.37)
				if i, ok := sameValues(dt, simd, pure); !ok {
					t.Fatalf("level %d scale %s: element %d differs", level, dt, i)
				}
			}
		}
	}
}

func TestF16Exhaustive(t *testing.T) {
	for u := 0; u < 1<<16; u++ {
		h := tensor.F16(u)
		f := h.Float32()
		// Reference value from the definition of binary16.
		sign := 1.0
		if u&0x8000 != 0 {
			sign = -1
		}
		e, m := (u>>10)&0x1f, u&0x3ff
		var want float64
		switch {
		case e == 0x1f && m == 0:
			want = math.Inf(int(sign))
		case e == 0x1f:
			if !math.IsNaN(float64(f)) {
				t.Fatalf("F16(%#04x).Float32() = %v, want NaN", u, f)
			}
			if back := tensor.F16FromFloat32(f); back&0x7c00 != 0x7c00 || back&0x3ff == 0 || (back&0x8000) != h&0x8000 {
				t.Fatalf("NaN %#04x round trip gave %#04x", u, back)
			}
			continue
		case e == 0:
			want = sign * float64(m) * math.Pow(2, -24)
		default:
			want = sign * (1 + float64(m)/1024) * math.Pow(2, float64(e)-15)
		}
		if float64(f) != want || math.Signbit(float64(f)) != (sign < 0) {
			t.Fatalf("F16(%#04x).Float32() = %v, want %v", u, f, want)
		}
		if back := tensor.F16FromFloat32(f); back != h {
			t.Fatalf("round trip of %#04x (%v) gave %#04x", u, f, back)
		}
	}
}

// TestF16Rounding checks narrowing against "nearest representable, ties to
// even" computed by brute force over the neighbouring halves.
func TestF16Rounding(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	check := func(x float32) {
		h := tensor.F16FromFloat32(x)
		if math.IsNaN(float64(x)) {
			if !math.IsNaN(float64(h.Float32())) {
				t.Fatalf("NaN narrowed to %#04x", h)
			}
			return
		}
		got := float64(h.Float32())
		if math.IsInf(float64(x), 0) {
			if got != float64(x) {
				t.Fatalf("%v narrowed to %v", x, got)
			}
			return
		}
		// Neighbours one ulp away in the half encoding (same sign).
		for _, nb := range []tensor.F16{h + 1, h - 1} {
			if nb&0x7fff > 0x7c00 || (h&0x7fff == 0 && nb == h-1) {
				continue
			}
			v := float64(nb.Float32())
			dGot, dNb := math.Abs(got-float64(x)), math.Abs(v-float64(x))
			if math.IsInf(got, 0) {
				// Overflow: x must be at least 65520 in magnitude.
				if math.Abs(float64(x)) < 65520 {
					t.Fatalf("%v narrowed to Inf", x)
				}
				return
			}
			if dNb < dGot || (dNb == dGot && h&1 == 1) {
				t.Fatalf("%v (%#08x) narrowed to %#04x (%v) but %#04x (%v) is nearer or the even tie", x, math.Float32bits(x), h, got, nb, v)
			}
		}
	}
	for range 200000 {
		check(math.Float32frombits(r.Uint32()))
	}
	// Ties and the subnormal, overflow and zero boundaries.
	for _, x := range []float32{65504, 65519.99, 65520, 65536, 1e-7, 5.960464477539063e-08, 2.9802322387695312e-08,
		2.98023259e-08, 6.103515625e-05, 6.1035153e-05, 1 + 1.0/2048, 1 + 3.0/2048, -0.0, 0} {
		check(x)
		check(-x)
	}
	// Every half-way point between consecutive finite halves is a tie.
	for u := 0; u < 0x7bff; u++ {
		a, b := float64(tensor.F16(u).Float32()), float64(tensor.F16(u+1).Float32())
		mid := float32((a + b) / 2)
		if float64(mid) != (a+b)/2 {
			continue
		}
		want := tensor.F16(u)
		if u&1 == 1 {
			want = tensor.F16(u + 1)
		}
		if got := tensor.F16FromFloat32(mid); got != want {
			t.Fatalf("tie %v between %#04x and %#04x narrowed to %#04x", mid, u, u+1, got)
		}
	}
}

func TestBF16(t *testing.T) {
	for u := 0; u < 1<<16; u++ {
		b := tensor.BF16(u)
		f := b.Float32()
		back := tensor.BF16FromFloat32(f)
		if math.IsNaN(float64(f)) {
			if !math.IsNaN(float64(back.Float32())) {
				t.Fatalf("NaN %#04x round trip gave %#04x", u, back)
			}
			continue
		}
		if back != b {
			t.Fatalf("round trip of %#04x gave %#04x", u, back)
		}
	}
	cases := []struct {
		in   uint32
		want tensor.BF16
	}{
		{0x3f808000, 0x3f80}, // tie, even stays
		{0x3f818000, 0x3f82}, // tie, odd rounds up
		{0x3f808001, 0x3f81}, // above half
		{0x7f7fffff, 0x7f80}, // max float32 rounds to Inf
		{0x00000001, 0x0000}, // tiny subnormal rounds to zero
		{0x007f8000, 0x0080}, // subnormal rounds up into the normal range
		{0xff800000, 0xff80}, // -Inf
		{0x7f800001, 0x7fc0}, // signalling NaN is quietened, not turned into Inf
	}
	for _, c := range cases {
		if got := tensor.BF16FromFloat32(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("BF16FromFloat32(%#08x) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
}

func BenchmarkReduce(b *testing.B) {
	for _, dt := range []tensor.DType{tensor.Float32, tensor.BFloat16, tensor.Float16, tensor.Float64, tensor.Int32} {
		for _, size := range []int{4 << 10, 256 << 10, 4 << 20} {
			for _, impl := range []string{"auto", "go"} {
				b.Run(fmt.Sprintf("%s/%dKiB/%s", dt, size>>10, impl), func(b *testing.B) {
					r := rand.New(rand.NewPCG(1, 2))
					dst, src := randBuf(r, dt, size/dt.Size(), false), randBuf(r, dt, size/dt.Size(), false)
					b.SetBytes(int64(size))
					for b.Loop() {
						if impl == "go" {
							reduceGo(dt, tensor.Sum, dst, src)
						} else {
							reduce(dt, tensor.Sum, dst, src)
						}
					}
				})
			}
		}
	}
}

// TestReduceSinkSplitElements feeds RecvReduce-style pieces that cut
// elements at random places; the result must equal one whole Reduce.
func TestReduceSinkSplitElements(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	for _, dt := range []tensor.DType{tensor.Float64, tensor.Float16, tensor.Int32, tensor.Int8, tensor.BFloat16} {
		for range 50 {
			n := r.IntN(300)
			dst, src := randBuf(r, dt, n, false), randBuf(r, dt, n, false)
			want := append([]byte(nil), dst...)
			reduceGo(dt, tensor.Sum, want, src)
			sink := reduceSink{dt: dt, op: tensor.Sum, dst: dst}
			for off := 0; off < len(src); {
				k := min(1+r.IntN(13), len(src)-off)
				sink.fn(dst[off:off+k], src[off:off+k])
				off += k
			}
			if !bytes.Equal(dst, want) {
				t.Fatalf("%s n=%d: split pieces reduce differently", dt, n)
			}
		}
	}
}
