package main

import "testing"

func TestModelShapes(t *testing.T) {
	r := resnet50()
	if len(r) != 161 || params(r) != 25557032 {
		t.Errorf("resnet50: %d tensors, %d parameters; want 161 and 25,557,032 (torchvision)", len(r), params(r))
	}
	if tr := transformer(12); len(tr) != 12*16 || params(tr) != 12*7087872 {
		t.Errorf("transformer(12): %d tensors, %d parameters", len(tr), params(tr))
	}
}

func TestParseTrain(t *testing.T) {
	o, err := parseTrain([]string{"-model", "transformer", "-layers", "4", "-compute", "20ms", "-steps", "3"})
	if err != nil || o.model != "transformer" || o.layers != 4 || o.compute.Milliseconds() != 20 || o.steps != 3 {
		t.Fatalf("parseTrain = %+v, %v", o, err)
	}
	for _, bad := range [][]string{{"-model", "vgg"}, {"-steps", "0"}, {"-compute", "-1s"}} {
		if _, err := parseTrain(bad); err == nil {
			t.Errorf("parseTrain(%v) accepted", bad)
		}
	}
	s := newTrainStep(resnet50(), trainOptions{compute: 100e6})
	if len(s.grads) != 161 || len(s.grads[0]) != 1000 || s.ends[len(s.ends)-1] != 100e6 {
		t.Errorf("backward order: first gradient has %d elements (want fc.bias, 1000), compute ends at %v", len(s.grads[0]), s.ends[len(s.ends)-1])
	}
}
