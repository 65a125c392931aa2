// Command elastic trains a small Fashion-MNIST-style classifier as an
// elastic job: workers may die, be added or leave while it trains, and the
// job goes on with the committed state. Run it under gorun:
//
//	gorun --min-np 2 --max-np 4 --host-discovery-script ./discover.sh ./elastic -steps 200
//
// Every rank prints one line per committed step ("commit step=N"), a line
// when it starts in a world ("start epoch=E rank=R size=S step=N"), the
// time from noticing a failure or change to the first committed step of
// the new world ("recovered in ..."), the wall-clock time of its first
// commit in every world ("first-commit epoch=E step=N unix-us=T"), and at
// the end the parameters' checksum and the mean step and Commit times
// ("done step=N checksum=... step-us=S commit-us=C").
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/elastic"
	"github.com/gorovod/gorovod/examples/internal/fashion"
)

type options struct {
	steps     int64
	batch     int
	hidden    int
	lr        float64
	data      string
	samples   int
	seed      uint64
	stepDelay time.Duration
	crashHost string
}

func main() {
	var o options
	flag.Int64Var(&o.steps, "steps", 100, "global steps to train")
	flag.IntVar(&o.batch, "batch", 16, "samples per rank per step")
	flag.IntVar(&o.hidden, "hidden", 32, "hidden units")
	flag.Float64Var(&o.lr, "lr", 0.05, "learning rate")
	flag.StringVar(&o.data, "data", fashion.DefaultDataDir, "directory of the Fashion-MNIST IDX files, or \"synthetic\" for the generated stand-in")
	flag.IntVar(&o.samples, "samples", 0, "train on the first N samples only (0: all; the synthetic set has 6000)")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the data and the initial weights")
	flag.DurationVar(&o.stepDelay, "step-delay", 0, "sleep this long in every step (tests: time to act mid-training)")
	flag.StringVar(&o.crashHost, "crash-on-host", "", "exit 1 at start when running on this host (tests: a failing host)")
	flag.Parse()
	if o.crashHost != "" && os.Getenv("GOROVOD_HOSTNAME") == o.crashHost {
		fmt.Fprintln(os.Stderr, "elastic example: -crash-on-host", o.crashHost)
		os.Exit(1)
	}
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "elastic example:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	train, test, err := loadData(o)
	if err != nil {
		return err
	}
	model := newMLP(fashion.ImageSize, o.hidden, fashion.NumClasses)
	model.init(o.seed)
	sampler := elastic.NewSampler(train.Len(), o.seed)
	st := elastic.NewState(elastic.Float32s("w1", model.w1), elastic.Float32s("b1", model.b1),
		elastic.Float32s("w2", model.w2), elastic.Float32s("b2", model.b2), sampler.Item())
	// after a reset, what is left of the data epoch is dealt over the new size
	st.OnReset(func(ctx context.Context, w *collective.World) error {
		sampler.SetWorld(w.Rank(), w.Size())
		return nil
	})
	grad := newMLP(fashion.ImageSize, o.hidden, fashion.NumClasses)
	var tm stepTimes
	return elastic.Run(ctx, st, func(ctx context.Context, w *collective.World) error {
		sampler.SetWorld(w.Rank(), w.Size())
		reset := st.LastReset()
		fmt.Printf("start epoch=%d rank=%d size=%d step=%d source=%d\n", w.Epoch(), w.Rank(), w.Size(), st.Step(), reset.Source)
		first := true
		for st.Step() < o.steps {
			if o.stepDelay > 0 {
				time.Sleep(o.stepDelay)
			}
			start := time.Now()
			if err := step(ctx, w, o, train, sampler, model, grad); err != nil {
				return err
			}
			committing := time.Now()
			err := st.Commit(ctx)
			if err != nil && !errors.Is(err, collective.ErrHostsUpdated) {
				return err
			}
			committed := time.Now()
			fmt.Printf("commit step=%d\n", st.Step())
			if first {
				first = false
				fmt.Printf("first-commit epoch=%d step=%d unix-us=%d\n", w.Epoch(), st.Step(), committed.UnixMicro())
				if reset.Cause != nil {
					fmt.Printf("recovered in %v (epoch %d, size %d, cause: %v)\n", committed.Sub(reset.Noticed).Round(time.Millisecond), w.Epoch(), w.Size(), reset.Cause)
				}
			} else {
				tm.add(committed.Sub(start), committed.Sub(committing))
			}
			if err != nil {
				fmt.Printf("hosts-updated step=%d\n", st.Step())
				return err
			}
		}
		fmt.Printf("done step=%d checksum=%s accuracy=%.3f %s\n", st.Step(), model.checksum(), accuracy(model, test), tm)
		return nil
	})
}

// step computes the gradients of this rank's next batch, averages them
// over the world and applies them.
func step(ctx context.Context, w *collective.World, o options, train *fashion.Dataset, sampler *elastic.Sampler, model, grad *mlp) error {
	idx := sampler.Batch(o.batch)
	bx, by := make([][]float32, len(idx)), make([]int, len(idx))
	for i, j := range idx {
		bx[i], by[i] = train.Sample(j), int(train.Y[j])
	}
	for _, p := range grad.params() {
		clear(p)
	}
	model.gradients(bx, by, grad)
	for i, p := range grad.params() {
		if err := collective.Allreduce(ctx, fmt.Sprintf("grad/%d", i), p, collective.Average, collective.InWorld(w)); err != nil {
			return err
		}
	}
	for i, p := range model.params() {
		g := grad.params()[i]
		for k := range p {
			p[k] -= float32(o.lr) * g[k]
		}
	}
	sampler.Advance(o.batch)
	return nil
}

// stepTimes sums the time of this rank's steps (without -step-delay) and
// of the Commit calls in them, leaving out the first step in each world.
type stepTimes struct {
	n              int
	steps, commits time.Duration
}

func (t *stepTimes) add(step, commit time.Duration) {
	t.n, t.steps, t.commits = t.n+1, t.steps+step, t.commits+commit
}

// String gives the means in microseconds: "steps=N step-us=S commit-us=C".
func (t stepTimes) String() string {
	n := time.Duration(max(t.n, 1))
	return fmt.Sprintf("timed-steps=%d step-us=%d commit-us=%d", t.n, (t.steps / n).Microseconds(), (t.commits / n).Microseconds())
}

func loadData(o options) (train, test *fashion.Dataset, err error) {
	if o.data == "synthetic" {
		n := 6000
		if o.samples > 0 {
			n = o.samples
		}
		train, test = fashion.Synthetic(n, 500, o.seed)
	} else if train, test, err = fashion.Load(o.data); err != nil {
		return nil, nil, fmt.Errorf("%w (use -data synthetic for the generated stand-in)", err)
	}
	return train.Head(o.samples), test.Head(1000), nil
}

// accuracy is the share of test samples the model classifies right.
func accuracy(m *mlp, test *fashion.Dataset) float64 {
	right := 0
	for i := 0; i < test.Len(); i++ {
		if m.predict(test.Sample(i)) == int(test.Y[i]) {
			right++
		}
	}
	return float64(right) / float64(max(test.Len(), 1))
}
