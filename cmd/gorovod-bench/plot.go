package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

const plotUsage = `usage: gorovod-bench plot FILE.csv... -o OUT.svg [--title TITLE]

Draws bus bandwidth against message size (log scale) for the rows of one or
more CSV files, as gorovod-bench --csv writes them. A file needs the columns
size_bytes and busbw_GBps; a series is named by the label column (else the
file name), plus the collective, dtype, redop, placement, mode or np where
rows drawn have different values there. The output format follows the file's
extension (svg, png, pdf).

Flags:
`

// plotCommand is "gorovod-bench plot a.csv b.csv -o out.svg".
func plotCommand(args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("plot", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	output := fs.StringP("output", "o", "", "the picture to write (OUT.svg)")
	title := fs.String("title", "gorovod-bench: bus bandwidth", "the plot's title")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(stdout, plotUsage+fs.FlagUsages())
			return nil
		}
		return fmt.Errorf("plot: %w (-h for help)", err)
	}
	if *output == "" || fs.NArg() == 0 {
		return fmt.Errorf("plot: want CSV files and -o OUT.svg (-h for help)")
	}
	var recs []record
	for _, f := range fs.Args() {
		r, err := readCSV(f)
		if err != nil {
			return fmt.Errorf("plot: %w", err)
		}
		recs = append(recs, r...)
	}
	return plotRecords(recs, *output, *title)
}

// series is one line of the plot.
type series struct {
	name string
	xys  plotter.XYs
}

// seriesOf groups records into named series, in order of first appearance.
// Records of size 0 have no place on a log axis and are left out.
func seriesOf(recs []record) []series {
	keys := []func(r record) string{
		func(r record) string { return r.collective },
		func(r record) string { return r.dtype },
		func(r record) string { return r.redop },
		func(r record) string { return r.placement },
		func(r record) string { return r.mode },
		func(r record) string {
			if r.np == 0 {
				return ""
			}
			return fmt.Sprintf("np %d", r.np)
		},
	}
	varies := make([]bool, len(keys))
	for i, k := range keys {
		seen := map[string]bool{}
		for _, r := range recs {
			if v := k(r); v != "" { // a peer's file may lack the column
				seen[v] = true
			}
		}
		varies[i] = len(seen) > 1
	}
	var out []series
	index := map[string]int{}
	for _, r := range recs {
		if r.size <= 0 {
			continue
		}
		parts := []string{r.label}
		for i, k := range keys {
			if v := k(r); varies[i] && v != "" {
				parts = append(parts, v)
			}
		}
		name := strings.Join(parts, " ")
		i, ok := index[name]
		if !ok {
			i = len(out)
			index[name] = i
			out = append(out, series{name: name})
		}
		out[i].xys = append(out[i].xys, plotter.XY{X: float64(r.size), Y: r.busBW})
	}
	for _, s := range out {
		sort.SliceStable(s.xys, func(a, b int) bool { return s.xys[a].X < s.xys[b].X })
	}
	return out
}

// plotRecords draws busbw against size and saves the picture to path.
func plotRecords(recs []record, path, title string) (err error) {
	ss := seriesOf(recs)
	if len(ss) == 0 {
		return fmt.Errorf("plot %s: no rows with a size above 0", path)
	}
	defer func() { // gonum/plot panics on some degenerate input; report it as an error
		if p := recover(); p != nil {
			err = fmt.Errorf("plot %s: %v", path, p)
		}
	}()
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "message size (bytes)"
	p.Y.Label.Text = "busbw (GB/s)"
	p.X.Scale = plot.LogScale{}
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	lo, hi := math.Inf(1), 0.0
	var args []any
	for _, s := range ss {
		args = append(args, s.name, s.xys)
		lo, hi = math.Min(lo, s.xys[0].X), math.Max(hi, s.xys[len(s.xys)-1].X)
	}
	if lo == hi { // one size: give the log axis a range
		lo, hi = lo/2, hi*2
	}
	p.X.Min, p.X.Max = lo, hi
	p.X.Tick.Marker = plot.TickerFunc(sizeTicks)
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	if err := p.Save(8*vg.Inch, 5*vg.Inch, path); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return nil
}

// sizeTicks marks powers of two, labelled 4K, 1M, ..., at most about 10.
func sizeTicks(lo, hi float64) []plot.Tick {
	first := math.Ceil(math.Log2(lo))
	last := math.Floor(math.Log2(hi))
	step := math.Max(1, math.Ceil((last-first+1)/10))
	var ticks []plot.Tick
	for e := first; e <= last; e++ {
		t := plot.Tick{Value: math.Exp2(e)}
		if math.Mod(e-first, step) == 0 {
			t.Label = humanSize(int64(t.Value))
		}
		ticks = append(ticks, t)
	}
	return ticks
}

// humanSize writes 4096 as 4K and 1<<20 as 1M.
func humanSize(n int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.suffix)
		}
	}
	return fmt.Sprint(n)
}
