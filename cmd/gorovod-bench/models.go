package main

import "fmt"

// gradient is one parameter tensor of a model: its name and element count.
type gradient struct {
	name  string
	count int
}

// resnet50 lists ResNet-50's 161 parameter tensors in forward order, with
// torchvision's shapes: the 7x7 stem, bottleneck blocks [3, 4, 6, 3] of
// widths 64..512 (expansion 4, a 1x1 downsample in each stage's first
// block), a batch norm (weight, bias) after every convolution, and the
// 2048x1000 classifier: 25,557,032 parameters.
func resnet50() []gradient {
	var g []gradient
	conv := func(name string, out, in, k int) {
		g = append(g, gradient{name + ".weight", out * in * k * k})
	}
	bn := func(name string, c int) {
		g = append(g, gradient{name + ".weight", c}, gradient{name + ".bias", c})
	}
	conv("conv1", 64, 3, 7)
	bn("bn1", 64)
	in := 64
	for stage, blocks := range []int{3, 4, 6, 3} {
		w := 64 << stage
		for b := range blocks {
			p := fmt.Sprintf("layer%d.%d.", stage+1, b)
			conv(p+"conv1", w, in, 1)
			bn(p+"bn1", w)
			conv(p+"conv2", w, w, 3)
			bn(p+"bn2", w)
			conv(p+"conv3", 4*w, w, 1)
			bn(p+"bn3", 4*w)
			if b == 0 {
				conv(p+"downsample.0", 4*w, in, 1)
				bn(p+"downsample.1", 4*w)
			}
			in = 4 * w
		}
	}
	g = append(g, gradient{"fc.weight", 1000 * 2048}, gradient{"fc.bias", 1000})
	return g
}

// transformer lists the parameter tensors of a stack of encoder layers
// (BERT-base shapes: d_model 768, 12 heads, feed-forward 3072), 16 tensors
// and 7,087,872 parameters per layer, embeddings left out.
func transformer(layers int) []gradient {
	const d, ff = 768, 3072
	var g []gradient
	for l := range layers {
		p := fmt.Sprintf("layer%d.", l)
		for _, m := range []string{"q", "k", "v", "o"} {
			g = append(g, gradient{p + "attn." + m + ".weight", d * d}, gradient{p + "attn." + m + ".bias", d})
		}
		g = append(g,
			gradient{p + "ln1.weight", d}, gradient{p + "ln1.bias", d},
			gradient{p + "ff1.weight", ff * d}, gradient{p + "ff1.bias", ff},
			gradient{p + "ff2.weight", d * ff}, gradient{p + "ff2.bias", d},
			gradient{p + "ln2.weight", d}, gradient{p + "ln2.bias", d})
	}
	return g
}

func params(g []gradient) int {
	n := 0
	for _, t := range g {
		n += t.count
	}
	return n
}
