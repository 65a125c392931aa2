package main

import (
	"math"
	"math/rand/v2"
	"testing"
)

// tinyBatch returns a random batch of n samples with dim inputs, about a
// third of them exactly zero like background pixels.
func tinyBatch(n, dim, classes int, seed uint64) *Dataset {
	rng := rand.New(rand.NewPCG(seed, 1))
	d := &Dataset{X: make([]float32, n*dim), Y: make([]uint8, n), Dim: dim}
	for i := range d.X {
		if rng.IntN(3) > 0 {
			d.X[i] = rng.Float32()
		}
	}
	for i := range d.Y {
		d.Y[i] = uint8(rng.IntN(classes))
	}
	return d
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// TestGradientMatchesFiniteDifferences compares every analytic gradient
// entry of a small MLP with central differences of the mean loss.
func TestGradientMatchesFiniteDifferences(t *testing.T) {
	const n, in, hidden, classes = 5, 12, 70, 4 // hidden > colBlock covers the tile edge
	m := NewMLP(in, hidden, classes)
	m.InitRandom(3)
	rng := rand.New(rand.NewPCG(4, 4))
	for i := range m.B1 {
		m.B1[i] = 0.1 * float32(rng.NormFloat64())
	}
	for i := range m.B2 {
		m.B2[i] = 0.1 * float32(rng.NormFloat64())
	}
	data := tinyBatch(n, in, classes, 5)
	ws := m.NewWorkspace(8) // capacity above n exercises the transposed stride
	ws.Load(data, seq(n))
	g := NewMLP(in, hidden, classes)
	var readyOrder []string
	m.LossAndGrad(ws, g, func(t Tensor) { readyOrder = append(readyOrder, t.Name) })
	if got := len(readyOrder); got != 4 {
		t.Fatalf("ready called %d times (%v), want once per tensor", got, readyOrder)
	}

	meanLoss := func() float64 {
		l, _ := m.Evaluate(ws)
		return l / n
	}
	const eps = 1e-3
	params, grads := m.Tensors(), g.Tensors()
	checked, bad := 0, 0
	for k, p := range params {
		for i := range p.Data {
			orig := p.Data[i]
			p.Data[i] = orig + eps
			up := meanLoss()
			p.Data[i] = orig - eps
			down := meanLoss()
			p.Data[i] = orig
			// Divide by the step float32 really took, not the nominal 2*eps.
			num := (up - down) / float64((orig+eps)-(orig-eps))
			ana := float64(grads[k].Data[i])
			checked++
			if math.Abs(num-ana) > 2e-4+2e-3*math.Abs(num) {
				bad++
				if bad <= 5 {
					t.Errorf("%s[%d]: analytic gradient %.6f, finite difference %.6f", p.Name, i, ana, num)
				}
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d gradient entries differ", bad, checked)
	}
}

// TestForwardMatchesNaive checks the tiled, zero-skipping forward pass
// against a direct evaluation of the formula.
func TestForwardMatchesNaive(t *testing.T) {
	const n, in, hidden, classes = 3, 20, 130, 10
	m := NewMLP(in, hidden, classes)
	m.InitRandom(9)
	data := tinyBatch(n, in, classes, 10)
	ws := m.NewWorkspace(n)
	ws.Load(data, seq(n))
	gotLoss, _ := m.Evaluate(ws)

	var wantLoss float64
	for b := 0; b < n; b++ {
		x := data.Sample(b)
		h := make([]float64, hidden)
		for j := range h {
			s := float64(m.B1[j])
			for i := 0; i < in; i++ {
				s += float64(x[i]) * float64(m.W1[i*hidden+j])
			}
			h[j] = math.Max(s, 0)
		}
		z := make([]float64, classes)
		zmax := math.Inf(-1)
		for k := range z {
			z[k] = float64(m.B2[k])
			for j := range h {
				z[k] += h[j] * float64(m.W2[j*classes+k])
			}
			zmax = math.Max(zmax, z[k])
		}
		var sum float64
		for _, v := range z {
			sum += math.Exp(v - zmax)
		}
		wantLoss += math.Log(sum) + zmax - z[data.Y[b]]
		for k := range z {
			if p := math.Exp(z[k]-zmax) / sum; math.Abs(p-float64(ws.logits[b*classes+k])) > 1e-5 {
				t.Errorf("sample %d class %d: probability %.6f, want %.6f", b, k, ws.logits[b*classes+k], p)
			}
		}
	}
	if math.Abs(gotLoss-wantLoss) > 1e-4*wantLoss {
		t.Fatalf("summed loss %.6f, want %.6f", gotLoss, wantLoss)
	}
}

func TestChecksumCoversEveryParameter(t *testing.T) {
	m := NewMLP(4, 3, 2)
	m.InitRandom(1)
	base := m.Checksum()
	if base != m.Checksum() {
		t.Fatal("checksum of unchanged parameters differs between calls")
	}
	for _, p := range m.Tensors() {
		last := len(p.Data) - 1
		orig := p.Data[last]
		p.Data[last] = math.Float32frombits(math.Float32bits(orig) ^ 1) // one bit
		if m.Checksum() == base {
			t.Errorf("flipping the lowest bit of the last %s value left the checksum unchanged", p.Name)
		}
		p.Data[last] = orig
	}
	if len(base) != len("sha256:")+64 {
		t.Errorf("checksum %q is not sha256:<64 hex digits>", base)
	}
}
