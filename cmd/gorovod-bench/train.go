package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/gorovod/gorovod/collective"
)

// trainOptions are the flags of the train subcommand.
type trainOptions struct {
	model    string
	layers   int
	compute  time.Duration
	spin     bool
	steps    int
	warmup   int
	baseline time.Duration
	shared   bool
}

func parseTrain(args []string) (trainOptions, error) {
	var o trainOptions
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.StringVar(&o.model, "model", "resnet50", "gradients of: resnet50 (161 tensors, 25.6 M parameters) or transformer (-layers encoder layers of BERT-base shape)")
	fs.BoolVar(&o.shared, "shared-buffers", true, "gradients from collective.Alloc (shared memory the ranks of a host run on directly); false: the Go heap")
	fs.IntVar(&o.layers, "layers", 12, "transformer: encoder layers")
	fs.DurationVar(&o.compute, "compute", 150*time.Millisecond, "backward compute per step, spread over the tensors in proportion to their size")
	fs.BoolVar(&o.spin, "spin", false, "compute by spinning a core (CPU training) instead of sleeping (an accelerator computes; the cores are free)")
	fs.IntVar(&o.steps, "steps", 10, "timed steps")
	fs.IntVar(&o.warmup, "warmup", 2, "untimed steps first")
	fs.DurationVar(&o.baseline, "baseline", 0, "step time of the same job at np 1, for the scaling efficiency")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case o.model != "resnet50" && o.model != "transformer":
		return o, fmt.Errorf("-model %q: resnet50 or transformer", o.model)
	case o.layers < 1 || o.steps < 1 || o.warmup < 0 || o.compute < 0:
		return o, fmt.Errorf("-layers, -steps at least 1; -warmup, -compute not negative")
	}
	return o, nil
}

// train runs a data-parallel training step's communication as a framework
// would: the backward pass produces the gradients last layer first, each
// after its share of the compute, and each is submitted with
// AllreduceAsync as soon as it exists (fusion batches those that arrive
// together, and the allreduces overlap the rest of the backward pass); the
// step ends when every gradient is averaged. It reports the step time (the
// slowest rank's, median over steps), the compute in it, the communication
// not hidden by compute (step minus compute), and with -baseline the
// scaling efficiency (weak scaling: the baseline step time over this one).
func train(args []string, w io.Writer) error {
	o, err := parseTrain(args)
	if err != nil {
		return err
	}
	ctx := context.Background()
	initCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := collective.Init(initCtx); err != nil {
		return err
	}
	defer collective.Shutdown(ctx)
	if collective.Rank() != 0 {
		w = io.Discard
	}
	model := resnet50()
	if o.model == "transformer" {
		model = transformer(o.layers)
	}
	s := newTrainStep(model, o)
	defer s.release()
	for range o.warmup {
		if _, err := s.run(ctx); err != nil {
			return err
		}
	}
	steps := make([]float64, o.steps)
	for i := range steps {
		d, err := s.run(ctx)
		if err != nil {
			return err
		}
		slowest := []float64{d.Seconds()}
		if err := collective.Allreduce(ctx, "train/step-time", slowest, collective.Max); err != nil {
			return err
		}
		steps[i] = slowest[0]
	}
	slices.Sort(steps)
	step := time.Duration(steps[len(steps)/2] * float64(time.Second))
	mode := "sleep"
	if o.spin {
		mode = "spin"
	}
	fmt.Fprintf(w, "# gorovod-bench %s train: %s, %d tensors, %.1f M parameters (%.0f MB float32), np %d, backward compute %v (%s) per step, median of %d steps, %s\n",
		version, o.model, len(model), float64(params(model))/1e6, float64(4*params(model))/1e6, collective.Size(), o.compute, mode, o.steps, time.Now().UTC().Format(time.RFC3339))
	exposed := max(step-o.compute, 0)
	eff := "-"
	if o.baseline > 0 {
		eff = fmt.Sprintf("%.3f", o.baseline.Seconds()/step.Seconds())
	}
	fmt.Fprintf(w, "%-8s %-12s %4s %10s %12s %12s %10s\n", "#label", "model", "np", "step_ms", "compute_ms", "exposed_ms", "efficiency")
	fmt.Fprintf(w, "TRAIN gorovod %-12s %4d %10.2f %12.2f %12.2f %10s\n", o.model, collective.Size(),
		ms(step), ms(o.compute), ms(exposed), eff)
	return nil
}

func ms(d time.Duration) float64 { return d.Seconds() * 1e3 }

// trainStep holds a model's gradients and the compute schedule of its
// backward pass.
type trainStep struct {
	model   []gradient
	grads   [][]float32
	ends    []time.Duration // compute done before gradient i (backward order) is ready
	spin    bool
	handles []*collective.Handle
	bufs    buffers
}

// release frees the gradients from collective.Alloc.
func (s *trainStep) release() { s.bufs.release() }

func newTrainStep(model []gradient, o trainOptions) *trainStep {
	s := &trainStep{model: model, spin: o.spin, handles: make([]*collective.Handle, len(model)), bufs: buffers{shared: o.shared}}
	total := params(model)
	done := 0
	for i := len(model) - 1; i >= 0; i-- { // backward order: last layer first
		s.grads = append(s.grads, get[float32](&s.bufs, model[i].count))
		done += model[i].count
		s.ends = append(s.ends, time.Duration(float64(o.compute)*float64(done)/float64(total)))
	}
	return s
}

// run is one step: it returns this rank's step time.
func (s *trainStep) run(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	for k, g := range s.grads {
		s.computeUntil(start.Add(s.ends[k]))
		for j := range g {
			g[j] = 1
		}
		s.handles[k] = collective.AllreduceAsync(ctx, s.model[len(s.model)-1-k].name, g, collective.Average)
	}
	for _, h := range s.handles {
		if err := h.Wait(ctx); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// computeUntil stands in for the backward pass's compute up to t.
func (s *trainStep) computeUntil(t time.Time) {
	if s.spin {
		for time.Now().Before(t) {
		}
		return
	}
	if d := time.Until(t); d > 0 {
		time.Sleep(d)
	}
}
