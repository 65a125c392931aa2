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

// synthetic makes n 28x28 images of 10 classes: each class a few bright
// blobs at fixed places, jittered, with noise; the same seed gives the
// same data on every rank.
func synthetic(n int, seed uint64) ([][]float32, []int) {
	rng := rand.New(rand.NewPCG(seed, 2))
	type blob struct{ x, y, r float64 }
	classes := make([][]blob, 10)
	for c := range classes {
		for k := 0; k < 3; k++ {
			classes[c] = append(classes[c], blob{4 + 20*rng.Float64(), 4 + 20*rng.Float64(), 2 + 2*rng.Float64()})
		}
	}
	xs, ys := make([][]float32, n), make([]int, n)
	for i := range xs {
		c := rng.IntN(10)
		img := make([]float32, 28*28)
		jx, jy := rng.Float64()*2-1, rng.Float64()*2-1
		for _, b := range classes[c] {
			for py := 0; py < 28; py++ {
				for px := 0; px < 28; px++ {
					dx, dy := float64(px)-b.x-jx, float64(py)-b.y-jy
					img[py*28+px] += float32(math.Exp(-(dx*dx + dy*dy) / (2 * b.r * b.r)))
				}
			}
		}
		for p := range img {
			v := img[p] + float32(0.1*rng.NormFloat64())
			img[p] = min(max(v, 0), 1)
			if img[p] < 0.05 {
				img[p] = 0
			}
		}
		xs[i], ys[i] = img, c
	}
	return xs, ys
}
