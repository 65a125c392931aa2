package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func randomize(rng *rand.Rand, vs ...[]float32) {
	for _, v := range vs {
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
	}
}

// centralDiff is the derivative of loss along a change of *p.
func centralDiff(p *float32, h float32, loss func() float64) float64 {
	old := *p
	*p = old + h
	up := loss()
	*p = old - h
	down := loss()
	*p = old
	return (up - down) / float64(2*h)
}

// TestConvAndPoolBackward checks one convolution + ReLU + max pooling layer
// against central differences of a linear loss of its output: weights,
// biases and the input gradient, every element.
func TestConvAndPoolBackward(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	s := convShape{in: 3, out: 4, side: 6}
	in := make([]float32, s.in*s.side*s.side)
	w := make([]float32, s.out*s.in*kernel*kernel)
	b := make([]float32, s.out)
	r := make([]float32, s.out*s.side*s.side/4)
	randomize(rng, in, w, b, r)
	out := make([]float32, s.out*s.side*s.side)
	pooled, arg := make([]float32, len(r)), make([]int32, len(r))
	loss := func() float64 {
		convForward(s, in, w, b, out)
		poolForward(s.out, s.side, out, pooled, arg)
		var l float64
		for i, v := range pooled {
			l += float64(v * r[i])
		}
		return l
	}
	loss()
	dout := make([]float32, len(out))
	poolBackward(r, arg, dout)
	dw, db, din := make([]float32, len(w)), make([]float32, len(b)), make([]float32, len(in))
	convBackward(s, in, out, w, dout, dw, db, din)
	for _, c := range []struct {
		name      string
		param, bp []float32
	}{{"weight", w, dw}, {"bias", b, db}, {"input", in, din}} {
		for i := range c.param {
			if fd := centralDiff(&c.param[i], 1e-3, loss); math.Abs(fd-float64(c.bp[i])) > 1e-2 {
				t.Errorf("%s %d: backprop %v, finite difference %v", c.name, i, c.bp[i], fd)
			}
		}
	}
}

// TestModelGradient checks the whole network's backward pass: the order in
// which gradients become final, and, at random coordinates of every tensor,
// agreement with central differences of the mean loss. ReLU kinks and
// near-ties in max pooling make a few coordinates disagree at any step
// size, so a small share of misses is allowed (the layers are checked
// element by element above).
func TestModelGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	m := NewCNN()
	m.InitRandom(3)
	for _, b := range [][]float32{m.B1, m.B2, m.B3, m.BF} {
		for i := range b {
			b[i] = float32(0.1 * rng.NormFloat64())
		}
	}
	xs := [][]float32{make([]float32, side*side), make([]float32, side*side)}
	ys := []uint8{3, 7}
	randomize(rng, xs...)
	ws := NewWorkspace(len(xs))
	g := NewCNN()
	var order []string
	m.LossAndGrad(ws, xs, ys, g, func(t Tensor) { order = append(order, t.Name) })
	want := []string{"fc.w", "fc.b", "conv3.w", "conv3.b", "conv2.w", "conv2.b", "conv1.w", "conv1.b"}
	if !slices.Equal(order, want) {
		t.Errorf("gradients ready in order %v, want %v", order, want)
	}
	meanLoss := func() float64 {
		l, _ := m.Evaluate(ws, xs, ys)
		return l / float64(len(xs))
	}
	checked, missed := 0, 0
	for ti, p := range m.Tensors() {
		gd := g.Tensors()[ti].Data
		for k := 0; k < 8; k++ {
			i := rng.IntN(len(p.Data))
			fd := centralDiff(&p.Data[i], 1e-3, meanLoss)
			checked++
			if math.Abs(fd-float64(gd[i])) > 2e-3+0.05*math.Abs(fd) {
				missed++
				t.Logf("%s[%d]: backprop %v, finite difference %v", p.Name, i, gd[i], fd)
			}
		}
	}
	if missed > checked/10 {
		t.Errorf("%d of %d coordinates disagree with finite differences", missed, checked)
	}
}
