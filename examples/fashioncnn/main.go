// Command fashioncnn trains a small convolutional network on Fashion-MNIST,
// data-parallel over the ranks of a Gorovod job, with the training helper
// (package collective/dataparallel):
//
//	gorun -np 2 ./fashioncnn -steps 300
//
// Run without gorun it is a world of one. Rank 0 broadcasts its initial
// weights; every step each rank computes the gradient of its own batch, and
// the backward pass hands each of the eight gradient tensors to the helper
// as soon as it is final (fc first, conv1 last), so their allreduces
// overlap the rest of the backward pass; every rank then applies the same
// averaged update and ends with the same parameters (printed checksum).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/collective/dataparallel"
	"github.com/gorovod/gorovod/examples/internal/fashion"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the command-line flags; every rank must use the same.
type options struct {
	steps, batch, accumulate int
	evalEvery, testLimit     int
	lr, momentum             float64
	seed                     uint64
	data, compression        string
	comp                     dataparallel.Compression
	observer                 func(dataparallel.Event) // tests: the helper's events
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("fashioncnn", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: fashioncnn [flags]   (data-parallel under: gorun -np N fashioncnn [flags])\n")
		fs.PrintDefaults()
	}
	fs.IntVar(&o.steps, "steps", 300, "backward passes per rank")
	fs.IntVar(&o.batch, "batch", 32, "samples per rank per backward pass")
	fs.IntVar(&o.accumulate, "accumulate", 1, "backward passes per update (gradient accumulation)")
	fs.IntVar(&o.evalEvery, "eval-every", 100, "evaluate on the test samples every this many steps (0: only at the end)")
	fs.IntVar(&o.testLimit, "test-limit", 2000, "test samples to evaluate on (0: all)")
	fs.Float64Var(&o.lr, "lr", 0.02, "learning rate for one rank's batch (multiplied by ranks x passes per update)")
	fs.Float64Var(&o.momentum, "momentum", 0.9, "SGD momentum")
	fs.Uint64Var(&o.seed, "seed", 1, "seed for initial weights, shuffling and generated data")
	fs.StringVar(&o.data, "data", fashion.DefaultDataDir, "directory with the Fashion-MNIST IDX files (plain or .gz)")
	fs.StringVar(&o.compression, "compression", "none", "wire format of the gradients: none, fp16 or bf16")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if o.comp, err = dataparallel.ParseCompression(o.compression); err != nil {
		return o, fmt.Errorf("-compression: %w", err)
	}
	switch {
	case o.steps < 1 || o.batch < 1 || o.accumulate < 1:
		return o, fmt.Errorf("-steps %d, -batch %d, -accumulate %d: want at least 1 each", o.steps, o.batch, o.accumulate)
	case o.steps%o.accumulate != 0:
		return o, fmt.Errorf("-steps %d is not a multiple of -accumulate %d", o.steps, o.accumulate)
	case o.evalEvery < 0 || o.testLimit < 0:
		return o, fmt.Errorf("-eval-every %d, -test-limit %d: want 0 or more", o.evalEvery, o.testLimit)
	case !(o.lr > 0) || !(o.momentum >= 0 && o.momentum < 1):
		return o, fmt.Errorf("-lr %v, -momentum %v: want lr > 0 and 0 <= momentum < 1", o.lr, o.momentum)
	}
	return o, nil
}

// run is the whole program: join the job, train, leave.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "fashioncnn: %v\n", err)
		return 2
	}
	if err := collective.Init(ctx); err != nil {
		fmt.Fprintf(stderr, "fashioncnn: joining the job: %v\n", err)
		return 1
	}
	err = train(ctx, o, stdout, stderr)
	if serr := collective.Shutdown(ctx); serr != nil && err == nil {
		err = fmt.Errorf("shutting down: %w", serr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "fashioncnn: rank %d: %v\n", collective.Rank(), err)
		return 1
	}
	return 0
}

// loadData reads Fashion-MNIST, or, when any rank cannot, has every rank
// generate the same stand-in (all ranks must train on the same data).
func loadData(ctx context.Context, o options, stderr io.Writer) (train, test *fashion.Dataset, name string, err error) {
	train, test, loadErr := fashion.Load(o.data)
	missing := []int32{0}
	if loadErr != nil {
		missing[0] = 1
	}
	if err := collective.Allreduce(ctx, "data/missing", missing, collective.Sum); err != nil {
		return nil, nil, "", fmt.Errorf("agreeing on the data set: %w", err)
	}
	if missing[0] == 0 {
		return train, test.Head(o.testLimit), "Fashion-MNIST", nil
	}
	if loadErr != nil {
		fmt.Fprintf(stderr, "fashioncnn: cannot read Fashion-MNIST (%v); training on generated data instead (install dataset-fashion-mnist or pass -data DIR)\n", loadErr)
	}
	nTest := 10000
	if o.testLimit > 0 {
		nTest = min(nTest, o.testLimit)
	}
	// One pass over what the steps consume is enough.
	train, test = fashion.Synthetic(min(60000, o.steps*o.batch*collective.Size()), nTest, o.seed)
	return train, test, "generated data", nil
}
