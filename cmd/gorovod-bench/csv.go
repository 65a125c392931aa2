package main

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// csvColumns are the columns --csv writes, one line per row and placement.
// plot needs only size_bytes and busbw_GBps, so a peer's harness can write
// the same file with fewer columns.
var csvColumns = []string{
	"collective", "size_bytes", "count", "dtype", "redop", "root", "placement",
	"time_us", "algbw_GBps", "busbw_GBps", "errors", "np", "mode", "label", "commit", "date",
}

// record is one CSV line: one placement of one row.
type record struct {
	collective, dtype, redop, placement, mode, label, commit, date string
	size, count, errors                                            int64
	root, np                                                       int
	timeUs, algBW, busBW                                           float64
}

func (r record) fields() []string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }
	return []string{
		r.collective, strconv.FormatInt(r.size, 10), strconv.FormatInt(r.count, 10), r.dtype, r.redop,
		strconv.Itoa(r.root), r.placement, f(r.timeUs), f(r.algBW), f(r.busBW),
		strconv.FormatInt(r.errors, 10), strconv.Itoa(r.np), r.mode, r.label, r.commit, r.date,
	}
}

// recordsOf turns rows into records, out of place first.
func recordsOf(b *bench, rows []Row) []record {
	var out []record
	for _, row := range rows {
		base := record{
			collective: row.Op, size: row.Bytes, count: row.Count, dtype: row.Type, redop: row.RedOp,
			root: row.Root, np: row.NP, mode: b.mode(), label: b.o.label, commit: buildCommit(),
			date: b.started.Format(time.RFC3339),
		}
		if !b.o.inplaceOnly {
			r := base
			r.placement, r.timeUs, r.algBW, r.busBW, r.errors = "out-of-place", row.OOPTimeUs, row.OOPAlgBW, row.OOPBusBW, row.OOPWrong
			out = append(out, r)
		}
		r := base
		r.placement, r.timeUs, r.algBW, r.busBW, r.errors = "in-place", row.IPTimeUs, row.IPAlgBW, row.IPBusBW, row.IPWrong
		out = append(out, r)
	}
	return out
}

// buildCommit names the commit the binary was built from (Go's VCS stamp),
// or its version when the build carries none.
func buildCommit() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return version
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return version
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "+dirty"
	}
	return rev
}

// csvWriter writes records as rows complete, flushing each, so a run that
// fails half way leaves the rows it measured.
type csvWriter struct {
	b      *bench
	f      *os.File
	w      *csv.Writer
	closed bool
}

func createCSV(path string, b *bench) (*csvWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--csv: %w", err)
	}
	c := &csvWriter{b: b, f: f, w: csv.NewWriter(f)}
	if err := c.w.Write(csvColumns); err != nil {
		f.Close()
		return nil, fmt.Errorf("--csv %s: %w", path, err)
	}
	return c, nil
}

func (c *csvWriter) write(row Row) error {
	for _, r := range recordsOf(c.b, []Row{row}) {
		if err := c.w.Write(r.fields()); err != nil {
			return fmt.Errorf("--csv %s: %w", c.f.Name(), err)
		}
	}
	c.w.Flush()
	if err := c.w.Error(); err != nil {
		return fmt.Errorf("--csv %s: %w", c.f.Name(), err)
	}
	return nil
}

func (c *csvWriter) close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	c.w.Flush()
	return errors.Join(c.w.Error(), c.f.Close())
}

// readCSV reads the records of one file; the label defaults to the file's
// name without its extension.
func readCSV(path string) ([]record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	recs, err := parseCSV(f, strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return recs, nil
}

func parseCSV(r io.Reader, defaultLabel string) ([]record, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("reading the header: %w", err)
	}
	col := map[string]int{}
	for i, h := range head {
		col[strings.TrimSpace(h)] = i
	}
	for _, need := range []string{"size_bytes", "busbw_GBps"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("no %s column (have %s)", need, strings.Join(head, ","))
		}
	}
	var recs []record
	for line := 2; ; line++ {
		fields, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return recs, nil
		}
		if err != nil {
			return nil, err
		}
		rec, err := recordFrom(fields, col, defaultLabel)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		recs = append(recs, rec)
	}
}

func recordFrom(fields []string, col map[string]int, defaultLabel string) (record, error) {
	get := func(name string) string {
		if i, ok := col[name]; ok && i < len(fields) {
			return strings.TrimSpace(fields[i])
		}
		return ""
	}
	r := record{
		collective: get("collective"), dtype: get("dtype"), redop: get("redop"), placement: get("placement"),
		mode: get("mode"), label: get("label"), commit: get("commit"), date: get("date"),
	}
	if r.label == "" {
		r.label = defaultLabel
	}
	var err error
	if r.size, err = strconv.ParseInt(get("size_bytes"), 10, 64); err != nil {
		return r, fmt.Errorf("size_bytes: %w", err)
	}
	if r.busBW, err = strconv.ParseFloat(get("busbw_GBps"), 64); err != nil {
		return r, fmt.Errorf("busbw_GBps: %w", err)
	}
	for name, dst := range map[string]*float64{"time_us": &r.timeUs, "algbw_GBps": &r.algBW} {
		if s := get(name); s != "" {
			if *dst, err = strconv.ParseFloat(s, 64); err != nil {
				return r, fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	for name, dst := range map[string]*int64{"count": &r.count, "errors": &r.errors} {
		if s := get(name); s != "" {
			if *dst, err = strconv.ParseInt(s, 10, 64); err != nil {
				return r, fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	for name, dst := range map[string]*int{"np": &r.np, "root": &r.root} {
		if s := get(name); s != "" {
			if *dst, err = strconv.Atoi(s); err != nil {
				return r, fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	return r, nil
}
