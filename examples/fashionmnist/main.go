// Command fashionmnist trains a multilayer perceptron on Fashion-MNIST,
// data-parallel over the ranks of a Gorovod job:
//
//	gorun -np 2 ./fashionmnist -epochs 4
//
// Run without gorun it is a world of one. Rank 0 broadcasts its initial
// weights, every rank trains on its own share of each shuffled epoch, and
// the gradients are averaged with one allreduce per parameter tensor every
// step, so all ranks apply identical updates; each prints a checksum of its
// final parameters to show it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gorovod/gorovod/collective/dataparallel"
)

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, startComm)
	stop()
	os.Exit(code)
}

// options are the command-line flags.
type options struct {
	TrainConfig
	data        string
	limit       int
	compression string
	gradStats   bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("fashionmnist", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: fashionmnist [flags]   (data-parallel under: gorun -np N fashionmnist [flags])\n")
		fs.PrintDefaults()
	}
	fs.IntVar(&o.Epochs, "epochs", 4, "passes over the training set")
	fs.IntVar(&o.Batch, "batch", 64, "samples per rank per step")
	fs.Float64Var(&o.LR, "lr", 0.05, "learning rate for one rank's batch (multiplied by the number of ranks, cosine decay)")
	fs.Float64Var(&o.Momentum, "momentum", 0.9, "SGD momentum")
	fs.IntVar(&o.Hidden, "hidden", 256, "hidden units")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed for initial weights, shuffling and generated data")
	fs.StringVar(&o.data, "data", DefaultDataDir, "directory with the Fashion-MNIST IDX files (plain or .gz)")
	fs.IntVar(&o.limit, "limit", 0, "use at most this many samples of each set (0: all)")
	fs.StringVar(&o.compression, "compression", "none", "wire format of the gradients: none, fp16 or bf16")
	fs.IntVar(&o.Accumulate, "accumulate", 1, "backward passes per update (gradient accumulation)")
	fs.BoolVar(&o.gradStats, "grad-stats", false, "print each rank's gradient bytes sent and bytes allreduced at the end")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	if o.Compression, err = dataparallel.ParseCompression(o.compression); err != nil {
		return o, fmt.Errorf("-compression: %w", err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.limit < 0 {
		return o, fmt.Errorf("-limit is %d, want 0 (all) or more", o.limit)
	}
	if err := o.Validate(); err != nil {
		return o, err
	}
	return o, nil
}

// run is the whole program; start joins the job.
func run(ctx context.Context, args []string, stdout, stderr io.Writer,
	start func(context.Context) (Comm, func() error, error)) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "fashionmnist: %v\n", err)
		return 2
	}
	comm, shutdown, err := start(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "fashionmnist: joining the job: %v\n", err)
		return 1
	}
	err = train(ctx, o, comm, stdout, stderr)
	if serr := shutdown(); serr != nil && err == nil {
		err = fmt.Errorf("shutting down: %w", serr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "fashionmnist: rank %d: %v\n", comm.Rank(), err)
		return 1
	}
	return 0
}

func train(ctx context.Context, o options, comm Comm, stdout, stderr io.Writer) error {
	began := time.Now()
	rank := comm.Rank()
	trainSet, testSet, name, err := loadData(ctx, o, comm, stderr)
	if err != nil {
		return err
	}
	t, err := NewTrainer(o.TrainConfig, comm, trainSet, testSet)
	if err != nil {
		return err
	}
	var report func(Progress)
	if rank == 0 {
		fmt.Fprintf(stdout, "fashionmnist %s: %d-%d-%d MLP on %s (%d training, %d test samples), %d rank(s) x batch %d, lr %g x %d ranks, %d epochs\n",
			version, trainSet.Dim, o.Hidden, numClasses, name, trainSet.Len(), testSet.Len(),
			comm.Size(), o.Batch, o.LR, comm.Size(), o.Epochs)
		report = newProgressPrinter(stdout, isTerminal(stdout)).report
	}
	last, err := t.Run(ctx, report)
	if err != nil {
		return err
	}
	if rank == 0 {
		fmt.Fprintf(stdout, "test accuracy %.4f (loss %.4f) after %d epochs in %s\n",
			last.TestAcc, last.TestLoss, o.Epochs, time.Since(began).Round(100*time.Millisecond))
	}
	fmt.Fprintf(stdout, "rank %d: parameter checksum %s\n", rank, t.Model.Checksum())
	if o.gradStats {
		printGradStats(stdout, rank, t, comm)
	}
	return comm.Barrier(ctx)
}

// printGradStats reports the gradient bytes this rank handed to the
// collectives and, where the collective layer counts them
// (gorovod_bytes_total), all bytes it allreduced or broadcast.
func printGradStats(w io.Writer, rank int, t *Trainer, comm Comm) {
	st := t.GradStats()
	fmt.Fprintf(w, "rank %d: gradients %d bytes in %d allreduces (compression %s, %d passes per update)",
		rank, st.WireBytes, st.Allreduces, t.cfg.Compression, t.cfg.Accumulate)
	if c, ok := comm.(interface{ CollectiveBytes() int64 }); ok {
		fmt.Fprintf(w, "; collective bytes %d", c.CollectiveBytes())
	}
	fmt.Fprintln(w)
}

// loadData reads Fashion-MNIST, or, when any rank cannot (all ranks must
// train on the same data), generates a stand-in on every rank.
func loadData(ctx context.Context, o options, comm Comm, stderr io.Writer) (train, test *Dataset, name string, err error) {
	train, test, loadErr := LoadFashionMNIST(o.data)
	missing := []float64{0}
	if loadErr != nil {
		missing[0] = 1
	}
	if err := comm.Sum64(ctx, "data/missing", missing); err != nil {
		return nil, nil, "", fmt.Errorf("agreeing on the data set: %w", err)
	}
	if missing[0] == 0 {
		return train.Head(o.limit), test.Head(o.limit), "Fashion-MNIST", nil
	}
	if loadErr != nil {
		fmt.Fprintf(stderr, "fashionmnist: cannot read Fashion-MNIST (%v); training on generated data instead (install dataset-fashion-mnist or pass -data DIR)\n", loadErr)
	} else if comm.Rank() == 0 {
		fmt.Fprintf(stderr, "fashionmnist: %d rank(s) cannot read Fashion-MNIST; all ranks train on generated data instead\n", int(missing[0]))
	}
	nTrain, nTest := 60000, 10000
	if o.limit > 0 {
		nTrain, nTest = min(nTrain, o.limit), min(nTest, o.limit)
	}
	train, test = Synthetic(nTrain, nTest, o.Seed)
	return train, test, "generated data", nil
}

// isTerminal tells whether w is a character device (a terminal), where
// progress is redrawn in place rather than printed line by line.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progressPrinter shows training progress: a line per epoch, and on a
// terminal a bar redrawn in place (at most every 100 ms) during the epoch.
type progressPrinter struct {
	w     io.Writer
	tty   bool
	drawn time.Time
}

func newProgressPrinter(w io.Writer, tty bool) *progressPrinter {
	return &progressPrinter{w: w, tty: tty}
}

func (pp *progressPrinter) report(p Progress) {
	if p.EpochEnd {
		prefix := ""
		if pp.tty {
			prefix = "\r\x1b[K"
		}
		fmt.Fprintf(pp.w, "%sepoch %d/%d  loss %.4f  acc %.4f  test acc %.4f  %.0f samples/s  comm %.1f%%\n",
			prefix, p.Epoch, p.Epochs, p.Loss, p.Acc, p.TestAcc, p.SamplesPerSec, 100*p.CommShare)
		return
	}
	if !pp.tty || time.Since(pp.drawn) < 100*time.Millisecond {
		return
	}
	pp.drawn = time.Now()
	const width = 30
	done := width * p.Step / p.Steps
	fmt.Fprintf(pp.w, "\r\x1b[Kepoch %d/%d [%s%s] %d/%d  loss %.4f  acc %.4f  %.0f samples/s  comm %.1f%%",
		p.Epoch, p.Epochs, strings.Repeat("=", done), strings.Repeat(" ", width-done), p.Step, p.Steps,
		p.Loss, p.Acc, p.SamplesPerSec, 100*p.CommShare)
}
