package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"math/rand/v2"
)

// MLP is a two-layer perceptron: In -> Hidden (ReLU) -> Classes, with a
// softmax cross-entropy loss. Weights are row-major with the input index
// first (W1 is In x Hidden, W2 is Hidden x Classes), so that a row of W is
// the contiguous fan-out of one input. The same struct holds gradients.
type MLP struct {
	In, Hidden, Classes int
	W1, B1, W2, B2      []float32
}

// Tensor is a named view of one parameter (or gradient) array.
type Tensor struct {
	Name string
	Data []float32
}

// NewMLP returns a zero MLP of the given shape.
func NewMLP(in, hidden, classes int) *MLP {
	return &MLP{
		In: in, Hidden: hidden, Classes: classes,
		W1: make([]float32, in*hidden), B1: make([]float32, hidden),
		W2: make([]float32, hidden*classes), B2: make([]float32, classes),
	}
}

// InitRandom draws the weights (He initialisation for the ReLU layer,
// Glorot-like for the output layer) from seed; biases are zero.
func (m *MLP) InitRandom(seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x6d6c70))
	s1 := math.Sqrt(2 / float64(m.In))
	for i := range m.W1 {
		m.W1[i] = float32(s1 * rng.NormFloat64())
	}
	s2 := math.Sqrt(1 / float64(m.Hidden))
	for i := range m.W2 {
		m.W2[i] = float32(s2 * rng.NormFloat64())
	}
	clear(m.B1)
	clear(m.B2)
}

// Tensors lists the parameters in a fixed order (the order of updates,
// collectives and the checksum).
func (m *MLP) Tensors() []Tensor {
	return []Tensor{{"w1", m.W1}, {"b1", m.B1}, {"w2", m.W2}, {"b2", m.B2}}
}

// NumParams is the number of scalar parameters.
func (m *MLP) NumParams() int { return len(m.W1) + len(m.B1) + len(m.W2) + len(m.B2) }

// Checksum is the SHA-256 of the parameters' raw little-endian float32
// bytes in Tensors order, as "sha256:<hex>".
func (m *MLP) Checksum() string {
	h := sha256.New()
	var b [4]byte
	for _, t := range m.Tensors() {
		for _, f := range t.Data {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(f))
			h.Write(b[:])
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// Workspace holds one batch (inputs transposed, so that a pixel's values
// over the batch are contiguous) and the activations of the passes over it.
type Workspace struct {
	cap, n  int
	xt      []float32 // In x cap: xt[i*cap+b] is pixel i of sample b
	y       []uint8
	h, dh   []float32 // cap x Hidden
	logits  []float32 // cap x Classes, softmax probabilities after forward
	dlogits []float32
}

// NewWorkspace allocates buffers for batches of up to batch samples.
func (m *MLP) NewWorkspace(batch int) *Workspace {
	return &Workspace{
		cap: batch,
		xt:  make([]float32, m.In*batch), y: make([]uint8, batch),
		h: make([]float32, batch*m.Hidden), dh: make([]float32, batch*m.Hidden),
		logits: make([]float32, batch*m.Classes), dlogits: make([]float32, batch*m.Classes),
	}
}

// Load copies the samples idx of d into the workspace (at most its capacity).
func (ws *Workspace) Load(d *Dataset, idx []int) {
	ws.n = len(idx)
	for b, s := range idx {
		x := d.Sample(s)
		for i, v := range x {
			ws.xt[i*ws.cap+b] = v
		}
		ws.y[b] = d.Y[s]
	}
}

// colBlock is the width of the column tiles of the hidden layer: a tile of
// the batch's activations (64 samples x 64 floats = 16 KiB) stays in L1.
const colBlock = 64

// axpy does dst += a*x.
func axpy(dst []float32, a float32, x []float32) {
	x = x[:len(dst)]
	i := 0
	for ; i+4 <= len(dst); i += 4 {
		d := dst[i : i+4 : i+4]
		s := x[i : i+4 : i+4]
		d[0] += a * s[0]
		d[1] += a * s[1]
		d[2] += a * s[2]
		d[3] += a * s[3]
	}
	for ; i < len(dst); i++ {
		dst[i] += a * x[i]
	}
}

// forward computes the hidden activations and the softmax probabilities,
// and returns the summed cross-entropy and the number of correct argmaxes.
func (m *MLP) forward(ws *Workspace) (loss float64, correct int) {
	n, H, C := ws.n, m.Hidden, m.Classes
	// Hidden layer: h = relu(X W1 + b1), tiled over columns; zero pixels
	// (about half of a Fashion-MNIST image) are skipped.
	for j0 := 0; j0 < H; j0 += colBlock {
		j1 := min(j0+colBlock, H)
		for b := 0; b < n; b++ {
			copy(ws.h[b*H+j0:b*H+j1], m.B1[j0:j1])
		}
		for i := 0; i < m.In; i++ {
			w := m.W1[i*H+j0 : i*H+j1]
			xs := ws.xt[i*ws.cap : i*ws.cap+n]
			for b, xv := range xs {
				if xv != 0 {
					axpy(ws.h[b*H+j0:b*H+j1], xv, w)
				}
			}
		}
	}
	for i, v := range ws.h[:n*H] {
		if v < 0 {
			ws.h[i] = 0
		}
	}
	// Output layer and softmax cross-entropy.
	for b := 0; b < n; b++ {
		z := ws.logits[b*C : (b+1)*C]
		copy(z, m.B2)
		for j, hv := range ws.h[b*H : (b+1)*H] {
			if hv != 0 {
				axpy(z, hv, m.W2[j*C:(j+1)*C])
			}
		}
		best := 0
		for k := range z {
			if z[k] > z[best] {
				best = k
			}
		}
		if best == int(ws.y[b]) {
			correct++
		}
		zmax := float64(z[best])
		var sum float64
		for _, v := range z {
			sum += math.Exp(float64(v) - zmax)
		}
		loss += math.Log(sum) - (float64(z[ws.y[b]]) - zmax)
		for k, v := range z {
			z[k] = float32(math.Exp(float64(v)-zmax) / sum)
		}
	}
	return loss, correct
}

// Evaluate runs the forward pass on the loaded batch.
func (m *MLP) Evaluate(ws *Workspace) (loss float64, correct int) { return m.forward(ws) }

// LossAndGrad runs forward and backward passes on the loaded batch and
// writes the gradient of the mean loss into g (same shape as m). It returns
// the summed loss and the number of correct predictions. ready, when not
// nil, is called with each gradient tensor as soon as it is final (output
// layer first), so that its allreduce can overlap the rest of the pass.
func (m *MLP) LossAndGrad(ws *Workspace, g *MLP, ready func(Tensor)) (loss float64, correct int) {
	if ready == nil {
		ready = func(Tensor) {}
	}
	loss, correct = m.forward(ws)
	n, H, C := ws.n, m.Hidden, m.Classes
	inv := 1 / float32(n)
	dl := ws.dlogits[:n*C]
	copy(dl, ws.logits[:n*C])
	for b := 0; b < n; b++ {
		dl[b*C+int(ws.y[b])] -= 1
	}
	for i := range dl {
		dl[i] *= inv
	}
	// Output layer: dW2 = H^T dl, db2 = colsum dl, dh = dl W2^T masked by ReLU.
	clear(g.W2)
	clear(g.B2)
	for b := 0; b < n; b++ {
		d := dl[b*C : (b+1)*C]
		axpy(g.B2, 1, d)
		h := ws.h[b*H : (b+1)*H]
		dh := ws.dh[b*H : (b+1)*H]
		for j, hv := range h {
			if hv == 0 {
				dh[j] = 0
				continue
			}
			axpy(g.W2[j*C:(j+1)*C], hv, d)
			w := m.W2[j*C : (j+1)*C]
			var s float32
			for k, dv := range d {
				s += dv * w[k]
			}
			dh[j] = s
		}
	}
	ready(Tensor{"w2", g.W2})
	ready(Tensor{"b2", g.B2})
	// Hidden layer: dW1 = X^T dh, db1 = colsum dh, tiled like the forward pass.
	clear(g.B1)
	for b := 0; b < n; b++ {
		axpy(g.B1, 1, ws.dh[b*H:(b+1)*H])
	}
	ready(Tensor{"b1", g.B1})
	for j0 := 0; j0 < H; j0 += colBlock {
		j1 := min(j0+colBlock, H)
		for i := 0; i < m.In; i++ {
			gw := g.W1[i*H+j0 : i*H+j1]
			clear(gw)
			xs := ws.xt[i*ws.cap : i*ws.cap+n]
			for b, xv := range xs {
				if xv != 0 {
					axpy(gw, xv, ws.dh[b*H+j0:b*H+j1])
				}
			}
		}
	}
	ready(Tensor{"w1", g.W1})
	return loss, correct
}
