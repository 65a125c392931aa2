package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gorovod/gorovod/collective"
)

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

type bench struct {
	o        options
	np, rank int
	started  time.Time
}

func (b *bench) mode() string {
	if b.o.direct {
		return "direct"
	}
	return "api"
}

// header prints what nccl-tests prints before its table: the parameters
// and the ranks, then the column heads.
func (b *bench) header(ctx context.Context, w io.Writer) error {
	mode := "negotiated (public API)"
	if b.o.direct {
		mode = "direct (data plane only, no negotiation)"
	}
	stat := "time: mean over ranks of one batch"
	if b.o.reps > 1 {
		stat = fmt.Sprintf("time: median of %d batches, each the slowest rank's", b.o.reps)
	}
	step := fmt.Sprintf("%d(factor)", b.o.factor)
	if b.o.factor == 0 {
		step = fmt.Sprintf("%d(bytes)", b.o.stepBytes)
	}
	iters := fmt.Sprint(b.o.iters)
	if b.o.iters == 0 {
		iters = fmt.Sprintf("auto(%v per size)", b.o.targetTime)
	}
	fmt.Fprintf(w, "# gorovod-bench %s %s: np %d, %s, %s, %s\n", version, b.o.op, b.np, mode, stat, b.started.Format(time.RFC3339))
	fmt.Fprintf(w, "# nThread 1 nGpus 0 minBytes %d maxBytes %d step: %s warmup iters: %d iters: %s reps: %d validation: %d\n",
		b.o.minBytes, b.o.maxBytes, step, b.o.warmup, iters, b.o.reps, map[bool]int{true: 1, false: 0}[b.o.check])
	fmt.Fprintf(w, "# datatypes: %s  ops: %s  root: %d\n#\n# Using ranks\n", join(b.o.dtypes), join(b.o.redops), b.o.root)
	ranks, err := b.rankLines(ctx)
	if err != nil {
		return err
	}
	for _, l := range ranks {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintf(w, "#\n#%63s%33s\n", "out-of-place", "in-place")
	fmt.Fprintf(w, "#%11s %12s %8s %6s %6s %8s %7s %7s %6s %8s %7s %7s %6s\n",
		"size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "time", "algbw", "busbw", "#wrong")
	fmt.Fprintf(w, "#%11s %12s %8s %6s %6s %8s %7s %7s %6s %8s %7s %7s %6s\n",
		"(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)", "")
	return nil
}

func join[T fmt.Stringer](v []T) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = x.String()
	}
	return strings.Join(s, ",")
}

// rankLines gathers every rank's pid and host: "#  Rank  0 Pid  1234 on vm".
func (b *bench) rankLines(ctx context.Context) ([]string, error) {
	const width = 128
	host, _ := os.Hostname()
	mine := make([]uint8, width)
	copy(mine, fmt.Sprintf("%d %s", os.Getpid(), host))
	all, err := collective.Allgather(ctx, "bench/ranks", mine)
	if err != nil {
		return nil, fmt.Errorf("gathering rank info: %w", err)
	}
	var lines []string
	for r := 0; r*width+width <= len(all); r++ {
		rec := string(bytes.TrimRight(all[r*width:(r+1)*width], "\x00"))
		pid, host, _ := strings.Cut(rec, " ")
		lines = append(lines, fmt.Sprintf("#  Rank %2d Pid %6s on %10s", r, pid, host))
	}
	return lines, nil
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
	defer c.release()
	for _, inplace := range []bool{false, true} {
		if !inplace && b.o.inplaceOnly {
			continue
		}
		name := fmt.Sprintf("bench/%s/%s/%s/%d/%v", b.o.op, b.o.dtype, b.o.redop, size, inplace)
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
