package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"math/rand/v2"
)

// The network: three 3x3 convolutions (padding 1, ReLU), the first two
// followed by 2x2 max pooling, then a linear layer to the classes, with a
// softmax cross-entropy loss:
//
//	1x28x28 -conv1-> 8x28x28 -pool-> 8x14x14 -conv2-> 16x14x14 -pool-> 16x7x7 -conv3-> 16x7x7 -fc-> 10
//
// Its backward pass yields eight gradient tensors one after another (fc
// first, conv1 last), each handed to the synchronizer as soon as it is final.
const (
	side    = 28
	classes = 10
	c1, c2  = 8, 16
	c3      = 16
	kernel  = 3
)

// Layer shapes: channels in and out, spatial side of the convolution.
type convShape struct{ in, out, side int }

var (
	conv1Shape = convShape{1, c1, side}
	conv2Shape = convShape{c1, c2, side / 2}
	conv3Shape = convShape{c2, c3, side / 4}
	fcIn       = c3 * (side / 4) * (side / 4)
)

// Tensor is a named parameter or gradient array.
type Tensor struct {
	Name string
	Data []float32
}

// CNN holds the parameters (or, for a gradient, their derivatives).
type CNN struct {
	W1, B1, W2, B2, W3, B3, WF, BF []float32
}

// NewCNN returns a zero network.
func NewCNN() *CNN {
	conv := func(s convShape) []float32 { return make([]float32, s.out*s.in*kernel*kernel) }
	return &CNN{
		W1: conv(conv1Shape), B1: make([]float32, c1),
		W2: conv(conv2Shape), B2: make([]float32, c2),
		W3: conv(conv3Shape), B3: make([]float32, c3),
		WF: make([]float32, classes*fcIn), BF: make([]float32, classes),
	}
}

// InitRandom draws He-initialised weights from seed; biases are zero.
func (m *CNN) InitRandom(seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0xc22))
	fill := func(w []float32, fanIn int, gain float64) {
		s := math.Sqrt(gain / float64(fanIn))
		for i := range w {
			w[i] = float32(s * rng.NormFloat64())
		}
	}
	fill(m.W1, conv1Shape.in*kernel*kernel, 2)
	fill(m.W2, conv2Shape.in*kernel*kernel, 2)
	fill(m.W3, conv3Shape.in*kernel*kernel, 2)
	fill(m.WF, fcIn, 1)
	for _, b := range [][]float32{m.B1, m.B2, m.B3, m.BF} {
		clear(b)
	}
}

// Tensors lists the parameters in a fixed order (registration, broadcast
// and checksum order).
func (m *CNN) Tensors() []Tensor {
	return []Tensor{
		{"conv1.w", m.W1}, {"conv1.b", m.B1}, {"conv2.w", m.W2}, {"conv2.b", m.B2},
		{"conv3.w", m.W3}, {"conv3.b", m.B3}, {"fc.w", m.WF}, {"fc.b", m.BF},
	}
}

// Checksum is the SHA-256 of the parameters' little-endian float32 bytes.
func (m *CNN) Checksum() string {
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

// activations of one sample's forward pass, kept for its backward pass.
type activations struct {
	x              []float32 // input, 1 x 28 x 28
	a1, p1         []float32 // conv1 after ReLU; pooled
	a2, p2         []float32 // conv2 after ReLU; pooled
	a3             []float32 // conv3 after ReLU (the fc input)
	arg1, arg2     []int32   // argmax of each pooling window
	logits, dlogit []float32
	// backward scratch
	da3, dp2, da2, dp1, da1 []float32
}

func newActivations() *activations {
	n1, n2, n3 := c1*side*side, c2*(side/2)*(side/2), c3*(side/4)*(side/4)
	return &activations{
		a1: make([]float32, n1), p1: make([]float32, n1/4), arg1: make([]int32, n1/4),
		a2: make([]float32, n2), p2: make([]float32, n2/4), arg2: make([]int32, n2/4),
		a3: make([]float32, n3), logits: make([]float32, classes), dlogit: make([]float32, classes),
		da3: make([]float32, n3), dp2: make([]float32, n2/4), da2: make([]float32, n2),
		dp1: make([]float32, n1/4), da1: make([]float32, n1),
	}
}

// convForward computes out = ReLU(conv(in, w) + b) with padding 1.
func convForward(s convShape, in, w, b, out []float32) {
	n := s.side
	for co := 0; co < s.out; co++ {
		o := out[co*n*n : (co+1)*n*n]
		for i := range o {
			o[i] = b[co]
		}
		for ci := 0; ci < s.in; ci++ {
			src := in[ci*n*n : (ci+1)*n*n]
			for ky := 0; ky < kernel; ky++ {
				for kx := 0; kx < kernel; kx++ {
					wv := w[((co*s.in+ci)*kernel+ky)*kernel+kx]
					dx := kx - 1
					x0, x1 := max(0, -dx), min(n, n-dx)
					for y := max(0, 1-ky); y < min(n, n+1-ky); y++ {
						orow := o[y*n+x0 : y*n+x1]
						irow := src[(y+ky-1)*n+x0+dx : (y+ky-1)*n+x1+dx]
						for x, v := range irow {
							orow[x] += wv * v
						}
					}
				}
			}
		}
		for i, v := range o {
			if v < 0 {
				o[i] = 0
			}
		}
	}
}

// convBackward takes dout (the gradient at the ReLU output; zeroed here
// where the ReLU was off), adds the weight and bias gradients into dw, db
// and, when din is not nil, writes the gradient with respect to the input.
func convBackward(s convShape, in, out, w, dout, dw, db, din []float32) {
	n := s.side
	for i, v := range out {
		if v <= 0 {
			dout[i] = 0
		}
	}
	if din != nil {
		clear(din)
	}
	for co := 0; co < s.out; co++ {
		d := dout[co*n*n : (co+1)*n*n]
		var sum float32
		for _, v := range d {
			sum += v
		}
		db[co] += sum
		for ci := 0; ci < s.in; ci++ {
			src := in[ci*n*n : (ci+1)*n*n]
			var dst []float32
			if din != nil {
				dst = din[ci*n*n : (ci+1)*n*n]
			}
			for ky := 0; ky < kernel; ky++ {
				for kx := 0; kx < kernel; kx++ {
					wi := ((co*s.in+ci)*kernel+ky)*kernel + kx
					wv := w[wi]
					dx := kx - 1
					x0, x1 := max(0, -dx), min(n, n-dx)
					var g float32
					for y := max(0, 1-ky); y < min(n, n+1-ky); y++ {
						drow := d[y*n+x0 : y*n+x1]
						off := (y+ky-1)*n + x0 + dx
						irow := src[off : off+len(drow)]
						for x, dv := range drow {
							g += dv * irow[x]
						}
						if dst != nil {
							orow := dst[off : off+len(drow)]
							for x, dv := range drow {
								orow[x] += wv * dv
							}
						}
					}
					dw[wi] += g
				}
			}
		}
	}
}

// poolForward takes the maximum of each 2x2 window of ch channels of n x n.
func poolForward(ch, n int, in, out []float32, arg []int32) {
	h := n / 2
	for c := 0; c < ch; c++ {
		for y := 0; y < h; y++ {
			for x := 0; x < h; x++ {
				base := int32(c*n*n + 2*y*n + 2*x)
				best := base
				for _, o := range [3]int32{1, int32(n), int32(n) + 1} {
					if in[base+o] > in[best] {
						best = base + o
					}
				}
				i := (c*h+y)*h + x
				out[i], arg[i] = in[best], best
			}
		}
	}
}

// poolBackward routes each window's gradient to the input that won it.
func poolBackward(dout []float32, arg []int32, din []float32) {
	clear(din)
	for i, a := range arg {
		din[a] += dout[i]
	}
}

// forward runs the network on one sample and returns its loss and whether
// the prediction is right.
func (m *CNN) forward(a *activations, x []float32, y uint8) (loss float64, right bool) {
	a.x = x
	convForward(conv1Shape, x, m.W1, m.B1, a.a1)
	poolForward(c1, side, a.a1, a.p1, a.arg1)
	convForward(conv2Shape, a.p1, m.W2, m.B2, a.a2)
	poolForward(c2, side/2, a.a2, a.p2, a.arg2)
	convForward(conv3Shape, a.p2, m.W3, m.B3, a.a3)
	best := 0
	for k := 0; k < classes; k++ {
		s := m.BF[k]
		for i, v := range m.WF[k*fcIn : (k+1)*fcIn] {
			s += v * a.a3[i]
		}
		a.logits[k] = s
		if s > a.logits[best] {
			best = k
		}
	}
	// Softmax cross-entropy, shifted by the maximum for stability.
	top := a.logits[best]
	var z float64
	for _, l := range a.logits {
		z += math.Exp(float64(l - top))
	}
	for k, l := range a.logits {
		a.dlogit[k] = float32(math.Exp(float64(l-top)) / z)
	}
	a.dlogit[y]--
	return math.Log(z) - float64(a.logits[y]-top), best == int(y)
}

// Workspace holds the activations of a batch's samples.
type Workspace struct{ acts []*activations }

// NewWorkspace returns room for batches of up to n samples.
func NewWorkspace(n int) *Workspace {
	ws := &Workspace{acts: make([]*activations, n)}
	for i := range ws.acts {
		ws.acts[i] = newActivations()
	}
	return ws
}

// LossAndGrad runs the batch xs (labels ys) forward, then backward layer by
// layer over the whole batch, writing the gradient of the mean loss into g.
// ready, when not nil, is called with each gradient as soon as it is final:
// fc first, conv1 last. It returns the summed loss and the correct count.
func (m *CNN) LossAndGrad(ws *Workspace, xs [][]float32, ys []uint8, g *CNN, ready func(Tensor)) (loss float64, correct int) {
	if ready == nil {
		ready = func(Tensor) {}
	}
	n := len(xs)
	acts := ws.acts[:n]
	for i, a := range acts {
		l, ok := m.forward(a, xs[i], ys[i])
		loss += l
		if ok {
			correct++
		}
	}
	inv := 1 / float32(n)
	for _, t := range g.Tensors() {
		clear(t.Data)
	}
	for _, a := range acts {
		for k := range a.dlogit {
			a.dlogit[k] *= inv
		}
		clear(a.da3)
		for k, d := range a.dlogit {
			g.BF[k] += d
			w, gw := m.WF[k*fcIn:(k+1)*fcIn], g.WF[k*fcIn:(k+1)*fcIn]
			for i, v := range a.a3 {
				gw[i] += d * v
				a.da3[i] += d * w[i]
			}
		}
	}
	ready(Tensor{"fc.w", g.WF})
	ready(Tensor{"fc.b", g.BF})
	for _, a := range acts {
		convBackward(conv3Shape, a.p2, a.a3, m.W3, a.da3, g.W3, g.B3, a.dp2)
	}
	ready(Tensor{"conv3.w", g.W3})
	ready(Tensor{"conv3.b", g.B3})
	for _, a := range acts {
		poolBackward(a.dp2, a.arg2, a.da2)
		convBackward(conv2Shape, a.p1, a.a2, m.W2, a.da2, g.W2, g.B2, a.dp1)
	}
	ready(Tensor{"conv2.w", g.W2})
	ready(Tensor{"conv2.b", g.B2})
	for _, a := range acts {
		poolBackward(a.dp1, a.arg1, a.da1)
		convBackward(conv1Shape, a.x, a.a1, m.W1, a.da1, g.W1, g.B1, nil)
	}
	ready(Tensor{"conv1.w", g.W1})
	ready(Tensor{"conv1.b", g.B1})
	return loss, correct
}

// Evaluate returns the summed loss and the correct count of a batch.
func (m *CNN) Evaluate(ws *Workspace, xs [][]float32, ys []uint8) (loss float64, correct int) {
	for i, x := range xs {
		l, ok := m.forward(ws.acts[0], x, ys[i])
		loss += l
		if ok {
			correct++
		}
	}
	return loss, correct
}
