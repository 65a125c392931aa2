package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"math/rand/v2"
)

// mlp is In -> Hidden (ReLU) -> 10 classes with softmax cross-entropy;
// weights row-major, input index first.
type mlp struct {
	in, hidden, classes int
	w1, b1, w2, b2      []float32
}

func newMLP(in, hidden, classes int) *mlp {
	return &mlp{in: in, hidden: hidden, classes: classes,
		w1: make([]float32, in*hidden), b1: make([]float32, hidden),
		w2: make([]float32, hidden*classes), b2: make([]float32, classes)}
}

func (m *mlp) init(seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range m.w1 {
		m.w1[i] = float32(math.Sqrt(2/float64(m.in)) * rng.NormFloat64())
	}
	for i := range m.w2 {
		m.w2[i] = float32(math.Sqrt(1/float64(m.hidden)) * rng.NormFloat64())
	}
}

func (m *mlp) params() [][]float32 { return [][]float32{m.w1, m.b1, m.w2, m.b2} }

// checksum is the SHA-256 of the parameters' float32 bits, in order.
func (m *mlp) checksum() string {
	h := sha256.New()
	var b [4]byte
	for _, p := range m.params() {
		for _, v := range p {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
			h.Write(b[:])
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// gradients adds the mean gradient of the loss over the batch to g (same
// shape as m) and returns the mean loss.
func (m *mlp) gradients(x [][]float32, y []int, g *mlp) float64 {
	h := make([]float32, m.hidden)
	logits := make([]float64, m.classes)
	dh := make([]float32, m.hidden)
	loss := 0.0
	scale := float32(1) / float32(max(len(x), 1))
	for n, in := range x {
		copy(h, m.b1)
		for i, v := range in {
			if v == 0 {
				continue
			}
			row := m.w1[i*m.hidden : (i+1)*m.hidden]
			for j := range h {
				h[j] += v * row[j]
			}
		}
		for j := range h {
			h[j] = max(h[j], 0)
		}
		mx := math.Inf(-1)
		for c := range logits {
			s := float64(m.b2[c])
			for j, hv := range h {
				s += float64(hv * m.w2[j*m.classes+c])
			}
			logits[c] = s
			mx = math.Max(mx, s)
		}
		sum := 0.0
		for c := range logits {
			logits[c] = math.Exp(logits[c] - mx)
			sum += logits[c]
		}
		loss -= math.Log(logits[y[n]]/sum + 1e-12)
		clear(dh)
		for c := range logits {
			d := float32(logits[c] / sum)
			if c == y[n] {
				d--
			}
			d *= scale
			g.b2[c] += d
			for j, hv := range h {
				g.w2[j*m.classes+c] += d * hv
				dh[j] += d * m.w2[j*m.classes+c]
			}
		}
		for j := range dh {
			if h[j] <= 0 {
				continue
			}
			g.b1[j] += dh[j]
			for i, v := range in {
				if v != 0 {
					g.w1[i*m.hidden+j] += dh[j] * v
				}
			}
		}
	}
	return loss / float64(max(len(x), 1))
}

// predict returns the class with the highest logit for one input.
func (m *mlp) predict(in []float32) int {
	h := make([]float32, m.hidden)
	copy(h, m.b1)
	for i, v := range in {
		if v == 0 {
			continue
		}
		row := m.w1[i*m.hidden : (i+1)*m.hidden]
		for j := range h {
			h[j] += v * row[j]
		}
	}
	best, bestV := 0, float32(math.Inf(-1))
	for c := 0; c < m.classes; c++ {
		s := m.b2[c]
		for j, hv := range h {
			if hv > 0 {
				s += hv * m.w2[j*m.classes+c]
			}
		}
		if s > bestV {
			best, bestV = c, s
		}
	}
	return best
}
