package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/gorovod/gorovod/internal/tensor"
)

// errHelp asks for the usage text on stdout and exit code 0; errVersion
// for the version.
var (
	errHelp    = errors.New("help requested")
	errVersion = errors.New("version requested")
)

// collectives are the subcommands that sweep sizes.
var collectives = []string{"allreduce", "allgather", "broadcast", "reducescatter", "alltoall"}

// The reductions and types that "-o all" and "-d all" sweep.
var (
	allRedops = []tensor.ReduceOp{tensor.Sum, tensor.Product, tensor.Min, tensor.Max, tensor.Average}
	allDtypes = []tensor.DType{tensor.Float32, tensor.Float64, tensor.Int32, tensor.Int64, tensor.Int8, tensor.Uint8, tensor.Float16, tensor.BFloat16}
)

const usageHead = `usage: gorovod-bench [SUBCOMMAND] [flags]
       gorovod-bench plot FILE.csv... -o OUT.svg

Measures Gorovod's collectives in the layout of nccl-tests; run it under gorun
(alone it is a world of one):

  gorun -np 2 gorovod-bench --minbytes 4K --maxbytes 64M --stepfactor 4 --check 1

Subcommands: allreduce (the default), allgather, broadcast, reducescatter,
alltoall, negotiation (many small named tensors per step: steps/s and
negotiation time per step), plot (draw busbw against size from CSV files).

Flags (nccl-tests' short and long names where nccl-tests has them):
`

// options are one run's settings; dtype and redop are the pair being
// measured, taken in turn from dtypes and redops.
type options struct {
	op            string
	minBytes      int64
	maxBytes      int64
	factor        int64 // > 1: multiply; 0: add stepBytes
	stepBytes     int64
	dtypes        []tensor.DType
	redops        []tensor.ReduceOp
	dtype         tensor.DType
	redop         tensor.ReduceOp
	root          int
	check         bool
	iters, warmup int
	reps          int
	targetTime    time.Duration
	direct        bool
	inplaceOnly   bool
	sharedBufs    bool
	jsonFile      string
	csvFile       string
	plotFile      string
	label         string
	tensors       int   // negotiation
	tensorBytes   int64 // negotiation
	steps         int   // negotiation
}

// rawFlags are the flag values before they are checked and converted.
type rawFlags struct {
	minB, maxB, stepB, tensorB string
	dtype, redop               string
	check, nthreads, ngpus     int
}

func newFlagSet(o *options, r *rawFlags) *pflag.FlagSet {
	fs := pflag.NewFlagSet("gorovod-bench", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.SetOutput(io.Discard) // errors are returned; usage goes to stdout on -h
	fs.Usage = func() {}
	fs.StringVarP(&r.minB, "minbytes", "b", "4K", "smallest size in bytes (K, M, G suffixes)")
	fs.StringVarP(&r.maxB, "maxbytes", "e", "64M", "largest size in bytes")
	fs.Int64VarP(&o.factor, "stepfactor", "f", 2, "multiplication factor between sizes")
	fs.StringVarP(&r.stepB, "stepbytes", "i", "", "fixed increment between sizes, instead of --stepfactor")
	fs.IntVarP(&o.iters, "iters", "n", 0, "timed iterations per size (0: enough for --target-time)")
	fs.IntVarP(&o.warmup, "warmup_iters", "w", 3, "warm-up iterations per size")
	fs.IntVarP(&r.check, "check", "c", 1, "check results (0: off)")
	fs.StringVarP(&r.redop, "op", "o", "sum", "reduction: sum, prod, min, max, avg, or all")
	fs.StringVarP(&r.dtype, "datatype", "d", "float32", "data type: float32, float64, int32, int64, int8, uint8, float16, bfloat16, or all")
	fs.IntVarP(&o.root, "root", "r", 0, "root rank (broadcast)")
	fs.IntVarP(&r.nthreads, "nthreads", "t", 1, "threads per process: 1 (one rank per process)")
	fs.IntVarP(&r.ngpus, "ngpus", "g", 1, "GPUs per thread: 1 (accepted for nccl-tests command lines; CPU buffers)")
	fs.BoolVarP(&o.inplaceOnly, "inplace-only", "I", false, "in place only (no out-of-place columns; halves memory)")
	fs.BoolVar(&o.sharedBufs, "shared-buffers", true, "allocate the buffers with collective.Alloc (shared memory the ranks of a host run on directly, as MPI_Alloc_mem); false: the Go heap")
	fs.StringVar(&o.csvFile, "csv", "", "also write the rows to this CSV file (rank 0)")
	fs.StringVar(&o.plotFile, "plot", "", "also draw busbw against size into this SVG file (rank 0)")
	fs.StringVar(&o.label, "label", "gorovod", "series name in the CSV file and the plot")
	fs.StringVarP(&o.jsonFile, "json", "J", "", "also write the rows as JSON to this file (rank 0)")
	fs.IntVar(&o.reps, "reps", 1, "timed batches per size: a batch's time is the slowest rank's, the row shows the median batch (as the peers' harnesses do); 1: the mean over ranks of one batch, as nccl-tests")
	fs.DurationVar(&o.targetTime, "target-time", 200*time.Millisecond, "time to spend per size (per batch with --reps) when --iters is 0")
	fs.BoolVar(&o.direct, "direct", false, "bypass negotiation: time the data plane (ops) alone")
	fs.IntVar(&o.tensors, "tensors", 200, "negotiation: tensors per step")
	fs.StringVar(&r.tensorB, "tensor-size", "4K", "negotiation: bytes per tensor")
	fs.IntVar(&o.steps, "steps", 200, "negotiation: timed steps")
	fs.BoolP("help", "h", false, "show this help")
	fs.Bool("version", false, "print the version")
	return fs
}

// usage is the help text.
func usage() string {
	var o options
	var r rawFlags
	return usageHead + newFlagSet(&o, &r).FlagUsages()
}

// parse reads a benchmark's command line: an optional subcommand, then
// flags. It returns errHelp for -h and errVersion for --version.
func parse(args []string) (options, error) {
	o := options{op: "allreduce"}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		o.op = args[0]
		args = args[1:]
		if o.op != "negotiation" && !isCollective(o.op) {
			return o, fmt.Errorf("unknown subcommand %q (want %s, negotiation or plot; -h for help)", o.op, strings.Join(collectives, ", "))
		}
	}
	var r rawFlags
	fs := newFlagSet(&o, &r)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return o, errHelp
		}
		return o, fmt.Errorf("%w (-h for help)", err)
	}
	if h, _ := fs.GetBool("help"); h {
		return o, errHelp
	}
	if v, _ := fs.GetBool("version"); v {
		return o, errVersion
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q (-h for help)", fs.Arg(0))
	}
	if err := r.apply(&o, fs); err != nil {
		return o, err
	}
	return o, o.validate()
}

func isCollective(s string) bool {
	for _, c := range collectives {
		if s == c {
			return true
		}
	}
	return false
}

// apply converts the raw values into o.
func (r *rawFlags) apply(o *options, fs *pflag.FlagSet) error {
	var err error
	if o.minBytes, err = parseSize(r.minB); err != nil {
		return fmt.Errorf("--minbytes: %w", err)
	}
	if o.maxBytes, err = parseSize(r.maxB); err != nil {
		return fmt.Errorf("--maxbytes: %w", err)
	}
	if o.tensorBytes, err = parseSize(r.tensorB); err != nil {
		return fmt.Errorf("--tensor-size: %w", err)
	}
	if fs.Changed("stepbytes") && !fs.Changed("stepfactor") { // nccl-tests: a factor wins over an increment
		if o.stepBytes, err = parseSize(r.stepB); err != nil || o.stepBytes < 1 {
			return fmt.Errorf("--stepbytes %q: want a positive size", r.stepB)
		}
		o.factor = 0
	}
	if r.nthreads != 1 || r.ngpus != 1 {
		return fmt.Errorf("--nthreads %d --ngpus %d: Gorovod runs one rank per process on CPU buffers; start more ranks with gorun -np", r.nthreads, r.ngpus)
	}
	if o.dtypes, err = parseList(r.dtype, allDtypes, tensor.ParseDType); err != nil {
		return fmt.Errorf("--datatype: %w", err)
	}
	if o.redops, err = parseList(r.redop, allRedops, tensor.ParseReduceOp); err != nil {
		return fmt.Errorf("--op: %w", err)
	}
	if o.op != "allreduce" && o.op != "reducescatter" {
		o.redops = o.redops[:1] // the reduction does not apply: measure once
	}
	o.dtype, o.redop = o.dtypes[0], o.redops[0]
	o.check = r.check != 0
	return nil
}

func (o *options) validate() error {
	switch {
	case o.minBytes > o.maxBytes:
		return fmt.Errorf("--minbytes %d is larger than --maxbytes %d", o.minBytes, o.maxBytes)
	case o.reps < 1:
		return fmt.Errorf("--reps %d: at least 1", o.reps)
	case o.factor != 0 && o.factor < 2:
		return fmt.Errorf("--stepfactor %d: factor must be at least 2", o.factor)
	case o.iters < 0 || o.warmup < 0:
		return fmt.Errorf("--iters %d --warmup_iters %d: not negative", o.iters, o.warmup)
	}
	return nil
}

// sizes lists the sizes of a sweep, as nccl-tests steps them.
func (o *options) sizes() []int64 {
	var s []int64
	for size := o.minBytes; size <= o.maxBytes; {
		s = append(s, size)
		next := size + o.stepBytes
		if o.factor > 1 {
			next = size * o.factor
		}
		if next <= size { // 0 with a factor, or an overflow
			break
		}
		size = next
	}
	return s
}

// parseList reads "all" or one name.
func parseList[T any](s string, all []T, parseOne func(string) (T, error)) ([]T, error) {
	if strings.EqualFold(s, "all") {
		return all, nil
	}
	v, err := parseOne(s)
	if err != nil {
		return nil, err
	}
	return []T{v}, nil
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
