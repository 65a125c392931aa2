// Command gorovod-bench measures Gorovod's collectives in the layout of
// nccl-tests, with nccl-tests' short and long options. Run it under gorun:
//
//	gorun -np 2 bin/gorovod-bench allreduce -b 4K -e 256M -f 4 -d float32 -o sum -c 1
//	gorun -np 2 bin/gorovod-bench --minbytes 4K --maxbytes 1M --stepfactor 4 -d all -o all
//
// Subcommands: allreduce (the default), allgather, broadcast, reducescatter,
// alltoall (rows: size, count, type, redop, root, then time/algbw/busbw/#wrong
// out of place and in place), negotiation (many small named tensors per
// step: steps/s and negotiation time per step), and plot (busbw against size
// from the CSV files that --csv writes, as SVG). --direct bypasses
// negotiation and times the data plane alone.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/gorovod/gorovod/collective"
	"github.com/gorovod/gorovod/ops"
)

var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gorovod-bench:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "version" {
		args[0] = "--version"
	}
	if len(args) > 0 && args[0] == "plot" {
		return plotCommand(args[1:], stdout)
	}
	if len(args) > 0 && args[0] == "train" {
		return train(args[1:], stdout) // train.go
	}
	o, err := parse(args)
	switch {
	case errors.Is(err, errHelp):
		fmt.Fprint(stdout, usage())
		return nil
	case errors.Is(err, errVersion):
		fmt.Fprintln(stdout, "gorovod-bench", version)
		return nil
	case err != nil:
		return err
	}
	ctx := context.Background()
	initCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := collective.Init(initCtx); err != nil {
		return err
	}
	defer collective.Shutdown(ctx)
	if o.root < 0 || o.root >= collective.Size() {
		return fmt.Errorf("--root %d: root out of range [0,%d)", o.root, collective.Size())
	}
	out := stdout
	if collective.Rank() != 0 {
		out = io.Discard
	}
	if o.op == "negotiation" {
		return negotiation(ctx, o, out)
	}
	return sweep(ctx, o, out)
}

// sweep measures every (dtype, redop) pair over every size, as nccl-tests
// does, and writes the table, then the CSV, JSON and plot files.
func sweep(ctx context.Context, o options, out io.Writer) error {
	b := &bench{o: o, np: collective.Size(), rank: collective.Rank(), started: time.Now().UTC()}
	if err := b.header(ctx, out); err != nil {
		return err
	}
	rec, err := newRecorder(b)
	if err != nil {
		return err
	}
	defer rec.close()
	var rows []Row
	for _, dt := range o.dtypes {
		for _, rop := range o.redops {
			b.o.dtype, b.o.redop = dt, rop
			for _, size := range o.sizes() {
				row, err := b.measure(ctx, size)
				if err != nil {
					return fmt.Errorf("%s %s %s %d bytes: %w", o.op, dt, rop, size, err)
				}
				b.print(out, row)
				rows = append(rows, row)
				if err := rec.add(row); err != nil {
					return err
				}
			}
		}
	}
	wrong := b.summary(out, rows)
	if err := singleCopyLine(ctx, out); err != nil {
		return err
	}
	if err := b.peakRSS(ctx, out); err != nil {
		return err
	}
	if err := rec.finish(rows); err != nil {
		return err
	}
	if wrong != 0 {
		return fmt.Errorf("%d wrong values", wrong)
	}
	return nil
}

// summary prints nccl-tests' closing lines and returns the wrong count.
func (b *bench) summary(out io.Writer, rows []Row) int64 {
	var wrong int64
	var busSum float64
	for _, r := range rows {
		wrong += r.OOPWrong + r.IPWrong
		busSum += r.IPBusBW
	}
	fmt.Fprintf(out, "# Out of bounds values : %d %s\n", wrong, map[bool]string{true: "OK", false: "FAILED"}[wrong == 0])
	if len(rows) > 0 {
		fmt.Fprintf(out, "# Avg bus bandwidth    : %.4g\n", busSum/float64(len(rows)))
	}
	return wrong
}

// peakRSS prints, after the table, the largest peak resident set size over
// the ranks, as a comment line.
func (b *bench) peakRSS(ctx context.Context, out io.Writer) error {
	var ru syscall.Rusage
	mib := 0.0
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		mib = float64(ru.Maxrss) / 1024 // Linux reports KiB
	}
	largest, err := agreeMax(ctx, "bench/rss", mib)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "# Peak RSS (largest rank): %.1f MiB\n", largest)
	return nil
}

// recorder writes rank 0's rows to the CSV file as they come and the JSON
// and plot files at the end.
type recorder struct {
	b   *bench
	csv *csvWriter
}

func newRecorder(b *bench) (*recorder, error) {
	r := &recorder{b: b}
	if b.rank != 0 || b.o.csvFile == "" {
		return r, nil
	}
	w, err := createCSV(b.o.csvFile, b)
	if err != nil {
		return nil, err
	}
	r.csv = w
	return r, nil
}

func (r *recorder) add(row Row) error {
	if r.csv == nil {
		return nil
	}
	return r.csv.write(row)
}

func (r *recorder) close() {
	if r.csv != nil {
		r.csv.close()
	}
}

func (r *recorder) finish(rows []Row) error {
	if r.b.rank != 0 {
		return nil
	}
	if r.csv != nil {
		if err := r.csv.close(); err != nil {
			return err
		}
	}
	if f := r.b.o.jsonFile; f != "" {
		data, err := json.MarshalIndent(rows, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(f, data, 0o644); err != nil {
			return err
		}
	}
	if f := r.b.o.plotFile; f != "" {
		return plotRecords(recordsOf(r.b, rows), f, fmt.Sprintf("gorovod-bench %s, np %d", r.b.o.op, r.b.np))
	}
	return nil
}

// agreeMax returns the largest of every rank's v (through the public API,
// so it is safe outside exclusive sections).
func agreeMax(ctx context.Context, name string, v float64) (float64, error) {
	buf := []float64{v}
	err := collective.Allreduce(ctx, name, buf, collective.Max)
	return buf[0], err
}

// maxEach replaces every v[i] by its largest value over all ranks.
func maxEach(ctx context.Context, name string, v []float64) error {
	return collective.Allreduce(ctx, name, v, collective.Max)
}

func avgAcross(ctx context.Context, name string, v float64) (float64, error) {
	buf := []float64{v}
	err := collective.Allreduce(ctx, name, buf, collective.Average)
	return buf[0], err
}

// singleCopyLine says whether the data plane read peers' memory (the
// probe's and calibration's outcome: it differs between launches).
func singleCopyLine(ctx context.Context, out io.Writer) error {
	var st ops.SingleCopyStatus
	err := collective.RunExclusive(ctx, "bench/single-copy", func(_ context.Context, c *ops.Comm) error {
		st = c.SingleCopy()
		return nil
	})
	if err != nil {
		return err
	}
	switch {
	case !st.Probed:
		fmt.Fprintf(out, "# Single copy          : not probed\n")
	case !st.Permitted || st.MaxBytes == 0:
		fmt.Fprintf(out, "# Single copy          : off (%s)\n", st.Reason)
	default:
		fmt.Fprintf(out, "# Single copy          : up to %d bytes (calibration: %v single copy, %v slots)\n", st.MaxBytes, st.SingleCopyTime, st.SlotsTime)
	}
	return nil
}
