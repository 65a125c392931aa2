package main

import (
	"context"
	"encoding/csv"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/tensor"
)

var binDir string // gorun and gorovod-bench, built for these tests

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gorovod-bench-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/gorovod/gorovod/cmd/gorun", "github.com/gorovod/gorovod/cmd/gorovod-bench")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building test binaries:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestParseShortAndLongNames(t *testing.T) {
	short, err := parse([]string{"-b", "4K", "-e", "1M", "-f", "4", "-c", "1", "-n", "7", "-w", "2", "-o", "max", "-d", "int32"})
	if err != nil {
		t.Fatal(err)
	}
	long, err := parse([]string{"--minbytes", "4K", "--maxbytes=1M", "--stepfactor", "4", "--check", "1", "--iters", "7", "--warmup_iters", "2", "--op", "max", "--datatype", "int32"})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(short) != fmt.Sprint(long) {
		t.Errorf("short %+v\nlong  %+v", short, long)
	}
	if long.op != "allreduce" || long.minBytes != 4096 || long.maxBytes != 1<<20 || long.factor != 4 || !long.check ||
		long.iters != 7 || long.warmup != 2 || long.redop != tensor.Max || long.dtype != tensor.Int32 {
		t.Errorf("parsed %+v", long)
	}
	if got := long.sizes(); fmt.Sprint(got) != "[4096 16384 65536 262144 1048576]" {
		t.Errorf("sizes %v", got)
	}
}

func TestParseAllAndSteps(t *testing.T) {
	o, err := parse([]string{"allreduce", "-d", "all", "-o", "all"})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.dtypes) != 8 || len(o.redops) != 5 {
		t.Errorf("-d all -o all: %v %v", o.dtypes, o.redops)
	}
	o, err = parse([]string{"allgather", "-o", "all"})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.redops) != 1 {
		t.Errorf("allgather sweeps %d reductions, want 1", len(o.redops))
	}
	o, err = parse([]string{"-b", "1K", "-e", "4K", "-i", "1K"})
	if err != nil {
		t.Fatal(err)
	}
	if got := o.sizes(); fmt.Sprint(got) != "[1024 2048 3072 4096]" {
		t.Errorf("--stepbytes sizes %v", got)
	}
	o, err = parse([]string{"-b", "1K", "-e", "4K", "-i", "1K", "-f", "4"}) // a factor wins, as in nccl-tests
	if err != nil {
		t.Fatal(err)
	}
	if got := o.sizes(); fmt.Sprint(got) != "[1024 4096]" {
		t.Errorf("-i with -f sizes %v", got)
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"allsum"}, `unknown subcommand "allsum"`},
		{[]string{"-b", "8M", "-e", "1M"}, "larger than --maxbytes"},
		{[]string{"--minbytes", "lots"}, `"lots" is not a size`},
		{[]string{"-d", "complex64"}, "--datatype"},
		{[]string{"-o", "xor"}, "--op"},
		{[]string{"-f", "1"}, "at least 2"},
		{[]string{"-g", "8"}, "one rank per process"},
		{[]string{"-reps", "5"}, "-h for help"}, // single-dash long names are shorthand clusters now
		{[]string{"allreduce", "extra"}, `unexpected argument "extra"`},
	} {
		_, err := parse(c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parse(%q) = %v, want an error mentioning %q", c.args, err, c.want)
		}
	}
	if _, err := parse([]string{"-h"}); !errors.Is(err, errHelp) {
		t.Errorf("-h: %v", err)
	}
	if _, err := parse([]string{"broadcast", "--help"}); !errors.Is(err, errHelp) {
		t.Errorf("--help: %v", err)
	}
}

// runBin runs one of the test binaries with a bound and returns its stdout,
// stderr and exit code.
func runBin(t *testing.T, bound time.Duration, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, name), args...)
	cmd.Dir = t.TempDir()
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %q did not finish within %v:\n%s\n%s", name, args, bound, out.String(), errb.String())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestHelpExitsZero(t *testing.T) {
	out, _, code := runBin(t, time.Minute, "gorovod-bench", "-h")
	if code != 0 || !strings.Contains(out, "-b, --minbytes") || !strings.Contains(out, "-w, --warmup_iters") {
		t.Errorf("-h: exit %d, stdout:\n%s", code, out)
	}
	out, _, code = runBin(t, time.Minute, "gorovod-bench", "plot", "--help")
	if code != 0 || !strings.Contains(out, "-o, --output") {
		t.Errorf("plot --help: exit %d, stdout:\n%s", code, out)
	}
	_, errOut, code := runBin(t, time.Minute, "gorovod-bench", "--nosuchflag")
	if code == 0 || !strings.Contains(errOut, "nosuchflag") {
		t.Errorf("--nosuchflag: exit %d, stderr:\n%s", code, errOut)
	}
}

var (
	prefix = regexp.MustCompile(`(?m)^\[\d+\]<stdout>:`)
	rowRe  = regexp.MustCompile(`^\s+(\d+)\s+(\d+)\s+(\w+)\s+(\w+)\s+(-?\d+)\s+`)
)

// checkTable checks the output's shape: parameter header, rows of the
// wanted sizes, then the summary and the peak-RSS comment after the table.
func checkTable(t *testing.T, out string, np int, sizes []int64, rowsPerSize int) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(prefix.ReplaceAllString(out, ""), "\n"), "\n")
	if !strings.Contains(out, fmt.Sprintf("np %d,", np)) || !strings.Contains(out, "# nThread 1 nGpus 0 minBytes") {
		t.Errorf("no parameter header:\n%s", out)
	}
	var rowSizes []int64
	lastRow, summary, rss := -1, -1, -1
	for i, l := range lines {
		switch {
		case rowRe.MatchString(l):
			var s int64
			fmt.Sscan(rowRe.FindStringSubmatch(l)[1], &s)
			rowSizes = append(rowSizes, s)
			lastRow = i
		case strings.HasPrefix(l, "# Out of bounds values : 0 OK"):
			summary = i
		case strings.HasPrefix(l, "# Peak RSS (largest rank): "):
			rss = i
		case !strings.HasPrefix(l, "#"):
			t.Errorf("line %d is neither a row nor a comment: %q", i, l)
		}
	}
	var want []int64
	for range rowsPerSize {
		want = append(want, sizes...)
	}
	slices.Sort(want)
	slices.Sort(rowSizes)
	if !slices.Equal(rowSizes, want) {
		t.Errorf("row sizes %v, want %v:\n%s", rowSizes, want, out)
	}
	if lastRow < 0 || summary < lastRow || rss < summary {
		t.Errorf("rows end at line %d, summary at %d, peak RSS at %d: want table, summary, RSS:\n%s", lastRow, summary, rss, out)
	}
	if n := strings.Count(out, "Peak RSS"); n != 1 {
		t.Errorf("%d peak-RSS lines, want 1 (rank 0's)", n)
	}
}

// readRecords parses a CSV file that --csv wrote.
func readRecords(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	all, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(all) == 0 || !slices.Equal(all[0], csvColumns) {
		t.Fatalf("%s: header %v, want %v", path, all[0], csvColumns)
	}
	return all[1:]
}

// svgTexts parses an SVG file as XML and returns its text elements' content.
func svgTexts(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := xml.NewDecoder(f)
	var texts []string
	root := ""
	inText := false
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s is not XML: %v", path, err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
			}
			inText = tok.Name.Local == "text"
		case xml.EndElement:
			inText = false
		case xml.CharData:
			if inText {
				texts = append(texts, strings.TrimSpace(string(tok)))
			}
		}
	}
	if root != "svg" {
		t.Fatalf("%s: root element %q, want svg", path, root)
	}
	return texts
}

// The acceptance command, in a world of one and under gorun -np 2, with
// the CSV and the plot it writes.
func TestAcceptanceCommand(t *testing.T) {
	args := []string{"--minbytes", "4K", "--maxbytes", "1M", "--stepfactor", "4", "--check", "1"}
	sizes := []int64{4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20}
	for _, np := range []int{1, 2} {
		t.Run(fmt.Sprintf("np%d", np), func(t *testing.T) {
			dir := t.TempDir()
			csvPath, svgPath := filepath.Join(dir, "run.csv"), filepath.Join(dir, "run.svg")
			runArgs := append(slices.Clone(args), "--csv", csvPath, "--plot", svgPath, "--label", "gorovod-test")
			var out, errOut string
			var code int
			if np == 1 {
				out, errOut, code = runBin(t, 2*time.Minute, "gorovod-bench", runArgs...)
			} else {
				gargs := append([]string{"-np", "2", filepath.Join(binDir, "gorovod-bench")}, runArgs...)
				out, errOut, code = runBin(t, 2*time.Minute, "gorun", gargs...)
			}
			if code != 0 {
				t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
			}
			checkTable(t, out, np, sizes, 1)
			recs := readRecords(t, csvPath)
			if len(recs) != 2*len(sizes) {
				t.Fatalf("%d CSV records, want %d", len(recs), 2*len(sizes))
			}
			for i, r := range recs {
				want := []string{"allreduce", fmt.Sprint(sizes[i/2]), fmt.Sprint(sizes[i/2] / 4), "float32", "sum"}
				if !slices.Equal(r[:5], want) || r[6] != [2]string{"out-of-place", "in-place"}[i%2] ||
					r[10] != "0" || r[11] != fmt.Sprint(np) || r[13] != "gorovod-test" || r[15] == "" {
					t.Errorf("record %d: %v", i, r)
				}
			}
			texts := svgTexts(t, svgPath)
			for _, want := range []string{"gorovod-test out-of-place", "gorovod-test in-place", "busbw (GB/s)"} {
				if !slices.Contains(texts, want) {
					t.Errorf("SVG lacks text %q: %q", want, texts)
				}
			}
		})
	}
}

// In-place allgather on the data plane alone (--direct) checks its result:
// the check puts each rank's fresh input into its part of the output first.
func TestDirectInPlaceAllgatherChecks(t *testing.T) {
	out, errOut, code := runBin(t, 2*time.Minute, "gorun", "-np", "2", filepath.Join(binDir, "gorovod-bench"),
		"allgather", "-b", "4K", "-e", "64K", "-f", "16", "-c", "1", "-n", "1", "-w", "1", "-I", "--direct")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	checkTable(t, out, 2, []int64{4 << 10, 64 << 10}, 1)
}

// -d all -o all sweeps every type and reduction, every result checked.
func TestAllTypesAndOps(t *testing.T) {
	out, errOut, code := runBin(t, 2*time.Minute, "gorun", "-np", "2", filepath.Join(binDir, "gorovod-bench"),
		"-b", "1K", "-e", "16K", "-f", "16", "-c", "1", "-n", "1", "-w", "1", "-d", "all", "-o", "all")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	checkTable(t, out, 2, []int64{1 << 10, 16 << 10}, len(allDtypes)*len(allRedops))
	for _, dt := range allDtypes {
		for _, op := range allRedops {
			if !regexp.MustCompile(fmt.Sprintf(`(?m)^(\[0\]<stdout>:)?\s+16384\s+\d+\s+%s\s+%s\s`, dt, op)).MatchString(out) {
				t.Errorf("no 16K row for %s %s", dt, op)
			}
		}
	}
}

// plot draws several runs, including a peer's CSV with only the columns it
// needs, into one SVG.
func TestPlotSeveralRuns(t *testing.T) {
	dir := t.TempDir()
	ours := filepath.Join(dir, "gorovod.csv")
	peer := filepath.Join(dir, "openmpi.csv")
	var b strings.Builder
	w := csv.NewWriter(&b)
	w.Write(csvColumns)
	for _, s := range []int64{4096, 65536, 1 << 20} {
		r := record{collective: "allreduce", size: s, count: s / 4, dtype: "float32", redop: "sum", placement: "in-place",
			busBW: float64(s) / 1e6, np: 2, mode: "api", label: "gorovod", date: "2026-12-07T00:00:00Z"}
		w.Write(r.fields())
	}
	w.Flush()
	if err := os.WriteFile(ours, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(peer, []byte("size_bytes,busbw_GBps\n4096,0.5\n65536,1.5\n1048576,2.5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	svg := filepath.Join(dir, "cmp.svg")
	out, errOut, code := runBin(t, time.Minute, "gorovod-bench", "plot", ours, peer, "-o", svg)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	texts := svgTexts(t, svg)
	for _, want := range []string{"gorovod", "openmpi", "4K", "1M"} {
		if !slices.Contains(texts, want) {
			t.Errorf("SVG lacks text %q: %q", want, texts)
		}
	}
	_, errOut, code = runBin(t, time.Minute, "gorovod-bench", "plot", filepath.Join(dir, "missing.csv"), "-o", svg)
	if code == 0 || !strings.Contains(errOut, "missing.csv") {
		t.Errorf("missing file: exit %d, stderr %s", code, errOut)
	}
}

func TestSeriesNames(t *testing.T) {
	recs := []record{
		{label: "a", size: 8, busBW: 1, placement: "in-place", dtype: "float32"},
		{label: "a", size: 4, busBW: 1, placement: "out-of-place", dtype: "float32"},
		{label: "b", size: 4, busBW: 2, dtype: "float32"},
		{label: "b", size: 0, busBW: 2, dtype: "float32"}, // no place on a log axis
	}
	var got []string
	for _, s := range seriesOf(recs) {
		got = append(got, fmt.Sprintf("%s:%v", s.name, s.xys))
	}
	want := []string{"a in-place:[{8 1}]", "a out-of-place:[{4 1}]", "b:[{4 2}]"}
	if !slices.Equal(got, want) {
		t.Errorf("series %q, want %q", got, want)
	}
	if humanSize(4096) != "4K" || humanSize(3<<20) != "3M" || humanSize(1000) != "1000" {
		t.Error("humanSize")
	}
}
