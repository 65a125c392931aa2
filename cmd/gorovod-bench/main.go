// Command gorovod-bench measures Gorovod's collectives in the layout of
// nccl-tests. Run it under gorun:
//
//	gorun -np 2 bin/gorovod-bench allreduce -b 4K -e 256M -f 4 -d float32 -o sum -c 1
//
// Subcommands: allreduce, allgather, broadcast, reducescatter, alltoall
// (rows: size, count, type, redop, root, then time/algbw/busbw/#wrong out of
// place and in place), and negotiation (many small named tensors per step:
// steps/s and negotiation time per step). --direct bypasses negotiation and
// times the data plane alone.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"

	"github.com/gorovod/gorovod/collective"
)

var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gorovod-bench:", err)
		os.Exit(1)
	}
}

const usage = `usage: gorovod-bench SUBCOMMAND [flags]
subcommands: allreduce, allgather, broadcast, reducescatter, alltoall, negotiation
run under gorun, e.g.: gorun -np 2 gorovod-bench allreduce -b 4K -e 64M -f 4 -c 1`

type options struct {
	op            string
	minBytes      int64
	maxBytes      int64
	factor        int64
	dtype         tensor.DType
	redop         tensor.ReduceOp
	root          int
	check         bool
	iters, warmup int
	reps          int
	targetTime    time.Duration
	direct        bool
	inplaceOnly   bool
	jsonFile      string
	tensors       int   // negotiation
	tensorBytes   int64 // negotiation
	steps         int   // negotiation
}

func parse(args []string) (options, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return options{}, errors.New(usage)
	}
	o := options{op: args[0]}
	switch o.op {
	case "allreduce", "allgather", "broadcast", "reducescatter", "alltoall", "negotiation":
	default:
		return o, fmt.Errorf("unknown subcommand %q\n%s", o.op, usage)
	}
	fs := flag.NewFlagSet(o.op, flag.ContinueOnError)
	minB := fs.String("b", "4K", "smallest size in bytes (K, M, G suffixes)")
	maxB := fs.String("e", "64M", "largest size in bytes")
	fs.Int64Var(&o.factor, "f", 2, "multiplication factor between sizes")
	dt := fs.String("d", "float32", "data type")
	rop := fs.String("o", "sum", "reduce op: sum, avg, min, max, prod")
	fs.IntVar(&o.root, "r", 0, "root rank (broadcast)")
	check := fs.Int("c", 1, "check results: 1 on, 0 off")
	fs.IntVar(&o.iters, "n", 0, "timed iterations per size (0: enough for -t)")
	fs.IntVar(&o.warmup, "w", 3, "warm-up iterations per size")
	fs.DurationVar(&o.targetTime, "t", 200*time.Millisecond, "time to spend per size (per batch with -reps) when -n is 0")
	fs.IntVar(&o.reps, "reps", 1, "timed batches per size: a batch's time is the slowest rank's, the row shows the median batch (as the peers' harnesses do); 1: the mean over ranks of one batch, as nccl-tests")
	fs.BoolVar(&o.direct, "direct", false, "bypass negotiation: time the data plane (ops) alone")
	fs.BoolVar(&o.inplaceOnly, "I", false, "in place only (no out-of-place columns; halves memory)")
	fs.StringVar(&o.jsonFile, "J", "", "also write the rows as JSON to this file (rank 0)")
	fs.IntVar(&o.tensors, "tensors", 200, "negotiation: tensors per step")
	tb := fs.String("tensor-size", "4K", "negotiation: bytes per tensor")
	fs.IntVar(&o.steps, "steps", 200, "negotiation: timed steps")
	if err := fs.Parse(args[1:]); err != nil {
		return o, err
	}
	var err error
	if o.minBytes, err = parseSize(*minB); err != nil {
		return o, fmt.Errorf("-b: %w", err)
	}
	if o.maxBytes, err = parseSize(*maxB); err != nil {
		return o, fmt.Errorf("-e: %w", err)
	}
	if o.tensorBytes, err = parseSize(*tb); err != nil {
		return o, fmt.Errorf("-tensor-size: %w", err)
	}
	if o.minBytes > o.maxBytes {
		return o, fmt.Errorf("-b %d is larger than -e %d", o.minBytes, o.maxBytes)
	}
	if o.reps < 1 {
		return o, fmt.Errorf("-reps %d: at least 1", o.reps)
	}
	if o.factor < 2 {
		return o, fmt.Errorf("-f %d: factor must be at least 2", o.factor)
	}
	if o.dtype, err = tensor.ParseDType(*dt); err != nil {
		return o, fmt.Errorf("-d: %w", err)
	}
	if o.redop, err = tensor.ParseReduceOp(*rop); err != nil {
		return o, fmt.Errorf("-o: %w", err)
	}
	o.check = *check != 0
	return o, nil
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	u := strings.ToUpper(strings.TrimSpace(s))
	switch {
	case strings.HasSuffix(u, "K"):
		mult, u = 1<<10, u[:len(u)-1]
	case strings.HasSuffix(u, "M"):
		mult, u = 1<<20, u[:len(u)-1]
	case strings.HasSuffix(u, "G"):
		mult, u = 1<<30, u[:len(u)-1]
	}
	n, err := strconv.ParseInt(u, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (e.g. 4096, 4K, 16M)", s)
	}
	return n * mult, nil
}

// Row is one line of output.
type Row struct {
	Op        string  `json:"op"`
	Bytes     int64   `json:"size_bytes"`
	Count     int64   `json:"count"`
	Type      string  `json:"type"`
	RedOp     string  `json:"redop"`
	Root      int     `json:"root"`
	OOPTimeUs float64 `json:"oop_time_us,omitempty"`
	OOPAlgBW  float64 `json:"oop_algbw_GBps,omitempty"`
	OOPBusBW  float64 `json:"oop_busbw_GBps,omitempty"`
	OOPWrong  int64   `json:"oop_wrong"`
	IPTimeUs  float64 `json:"ip_time_us"`
	IPAlgBW   float64 `json:"ip_algbw_GBps"`
	IPBusBW   float64 `json:"ip_busbw_GBps"`
	IPWrong   int64   `json:"ip_wrong"`
	NP        int     `json:"np"`
	Direct    bool    `json:"direct"`
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 1 && (args[0] == "--version" || args[0] == "version") {
		fmt.Fprintln(stdout, "gorovod-bench", version)
		return nil
	}
	if len(args) > 0 && args[0] == "train" {
		return train(args[1:], stdout) // train.go
	}
	o, err := parse(args)
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
	if o.root < 0 || o.root >= collective.Size() {
		return fmt.Errorf("-r %d: root out of range [0,%d)", o.root, collective.Size())
	}
	out := stdout
	if collective.Rank() != 0 {
		out = io.Discard
	}
	if o.op == "negotiation" {
		return negotiation(ctx, o, out)
	}
	b := &bench{o: o, np: collective.Size(), rank: collective.Rank()}
	b.header(out)
	var rows []Row
	var wrongTotal int64
	var busSum float64
	for size := o.minBytes; size <= o.maxBytes; size *= o.factor {
		row, err := b.measure(ctx, size)
		if err != nil {
			return fmt.Errorf("%s %d bytes: %w", o.op, size, err)
		}
		b.print(out, row)
		rows = append(rows, row)
		wrongTotal += row.OOPWrong + row.IPWrong
		busSum += row.IPBusBW
	}
	fmt.Fprintf(out, "# Out of bounds values : %d %s\n", wrongTotal, map[bool]string{true: "OK", false: "FAILED"}[wrongTotal == 0])
	if len(rows) > 0 {
		fmt.Fprintf(out, "# Avg bus bandwidth    : %.4g\n", busSum/float64(len(rows)))
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		// every rank reports its own peak RSS (stderr, so rows stay parseable)
		fmt.Fprintf(os.Stderr, "# rank %d peak RSS: %.1f MiB\n", collective.Rank(), float64(ru.Maxrss)/1024)
	}
	if o.jsonFile != "" && collective.Rank() == 0 {
		data, _ := json.MarshalIndent(rows, "", "  ")
		if err := os.WriteFile(o.jsonFile, data, 0o644); err != nil {
			return err
		}
	}
	if wrongTotal != 0 {
		return fmt.Errorf("%d wrong values", wrongTotal)
	}
	return nil
}

type bench struct {
	o        options
	np, rank int
}

func (b *bench) header(w io.Writer) {
	mode := "negotiated (public API)"
	if b.o.direct {
		mode = "direct (data plane only, no negotiation)"
	}
	stat := "time: mean over ranks of one batch"
	if b.o.reps > 1 {
		stat = fmt.Sprintf("time: median of %d batches, each the slowest rank's", b.o.reps)
	}
	fmt.Fprintf(w, "# gorovod-bench %s %s: np %d, %s, %s, %s\n", version, b.o.op, b.np, mode, stat, time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "#%63s%33s\n", "out-of-place", "in-place")
	fmt.Fprintf(w, "#%11s %12s %8s %6s %6s %8s %7s %7s %6s %8s %7s %7s %6s\n",
		"size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "time", "algbw", "busbw", "#wrong")
	fmt.Fprintf(w, "#%11s %12s %8s %6s %6s %8s %7s %7s %6s %8s %7s %7s %6s\n",
		"(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)", "")
}

func (b *bench) print(w io.Writer, r Row) {
	oop := fmt.Sprintf("%8.1f %7.3f %7.3f %6d", r.OOPTimeUs, r.OOPAlgBW, r.OOPBusBW, r.OOPWrong)
	if b.o.inplaceOnly {
		oop = fmt.Sprintf("%8s %7s %7s %6s", "-", "-", "-", "-")
	}
	fmt.Fprintf(w, " %11d %12d %8s %6s %6d %s %8.1f %7.3f %7.3f %6d\n",
		r.Bytes, r.Count, r.Type, r.RedOp, r.Root, oop, r.IPTimeUs, r.IPAlgBW, r.IPBusBW, r.IPWrong)
}

// busFactor converts algorithm bandwidth to bus bandwidth (nccl-tests).
func (b *bench) busFactor() float64 {
	n := float64(b.np)
	switch b.o.op {
	case "allreduce":
		return 2 * (n - 1) / n
	case "allgather", "reducescatter", "alltoall":
		return (n - 1) / n
	}
	return 1
}

// measure times one size out of place and in place and checks results.
func (b *bench) measure(ctx context.Context, size int64) (Row, error) {
	es := int64(b.o.dtype.Size())
	count := size / es
	if b.o.op != "allreduce" && b.o.op != "broadcast" {
		count -= count % int64(b.np) // gathered/scattered sizes split evenly
	}
	size = count * es
	row := Row{Op: b.o.op, Bytes: size, Count: count, Type: b.o.dtype.String(), RedOp: b.o.redop.String(), Root: -1, NP: b.np, Direct: b.o.direct}
	if b.o.op == "broadcast" {
		row.Root = b.o.root
	}
	if b.o.op != "allreduce" && b.o.op != "reducescatter" {
		row.RedOp = "none"
	}
	c := newCase(b, size)
	for _, inplace := range []bool{false, true} {
		if !inplace && b.o.inplaceOnly {
			continue
		}
		name := fmt.Sprintf("bench/%s/%d/%v", b.o.op, size, inplace)
		t, err := c.time(ctx, name, inplace)
		if err != nil {
			return row, err
		}
		var wrong int64
		if b.o.check {
			if wrong, err = c.check(ctx, name+"/check", inplace); err != nil {
				return row, err
			}
		}
		us := t.Seconds() * 1e6
		alg := 0.0
		if t > 0 {
			alg = float64(size) / t.Seconds() / 1e9
		}
		if inplace {
			row.IPTimeUs, row.IPAlgBW, row.IPBusBW, row.IPWrong = us, alg, alg*b.busFactor(), wrong
		} else {
			row.OOPTimeUs, row.OOPAlgBW, row.OOPBusBW, row.OOPWrong = us, alg, alg*b.busFactor(), wrong
		}
	}
	return row, nil
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

var _ = math.Inf
