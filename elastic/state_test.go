package elastic

import (
	"errors"
	"math"
	"slices"
	"testing"
)

func TestStateItemsRoundTrip(t *testing.T) {
	f32 := []float32{1.5, float32(math.Inf(-1)), -0, 3e-39}
	f64 := []float64{math.Pi, math.NaN(), -2}
	type opt struct {
		Moments []float64
		Step    int
	}
	v := opt{Moments: []float64{0.1}, Step: 7}
	st := NewState(Float32s("a", f32), Float64s("b", f64), Value("c", &v))
	snap, err := st.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	st.committed = snap
	want32, want64 := slices.Clone(f32), slices.Clone(f64)
	f32[0], f64[0], v.Step, v.Moments = 9, 9, 9, nil
	if err := st.restore(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f32, want32) || f64[0] != want64[0] || !math.IsNaN(f64[1]) || v.Step != 7 || len(v.Moments) != 1 {
		t.Fatalf("restored %v %v %+v", f32, f64, v)
	}
	blob, err := st.encodeCommitted()
	if err != nil {
		t.Fatal(err)
	}
	g32, g64 := make([]float32, 4), make([]float64, 3)
	var gv opt
	other := NewState(Float32s("a", g32), Float64s("b", g64), Value("c", &gv))
	if err := other.adopt(blob, 5); err != nil || !slices.Equal(g32, want32) || gv.Step != 7 || other.Step() != 5 {
		t.Fatalf("adopted: %v %v %+v step %d, %v", g32, g64, gv, other.Step(), err)
	}
	short := NewState(Float32s("a", make([]float32, 3)), Float64s("b", g64), Value("c", &gv))
	if err := short.adopt(blob, 5); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a state of another shape was adopted: %v", err)
	}
}
