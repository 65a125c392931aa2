package timeline

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

type event struct {
	Ph   string         `json:"ph"`
	Pid  int            `json:"pid"`
	Tid  int            `json:"tid"`
	Ts   float64        `json:"ts"`
	Dur  *float64       `json:"dur"`
	Name string         `json:"name"`
	S    string         `json:"s"`
	Args map[string]any `json:"args"`
}

func parse(t *testing.T, data []byte) []event {
	t.Helper()
	var evs []event
	if err := json.Unmarshal(data, &evs); err != nil {
		t.Fatalf("timeline is not valid JSON: %v\n%s", err, data)
	}
	return evs
}

// rows renders each tensor's events as "B NAME" / "X NAME" / "E NAME" lines,
// naming E by the span it closes, and fails on unbalanced or unordered
// spans.
func rows(t *testing.T, evs []event) map[string][]string {
	t.Helper()
	names := map[int]string{}
	stacks := map[int][]string{}
	last := map[int]float64{}
	out := map[string][]string{}
	for _, e := range evs {
		if e.Ph == "M" {
			if e.Name == "process_name" {
				names[e.Pid] = e.Args["name"].(string)
			}
			continue
		}
		if e.Ts < last[e.Pid] {
			t.Errorf("pid %d: ts %v after %v", e.Pid, e.Ts, last[e.Pid])
		}
		last[e.Pid] = e.Ts
		n, ok := names[e.Pid]
		if !ok {
			t.Fatalf("event %+v before its process metadata", e)
		}
		switch e.Ph {
		case "B":
			stacks[e.Pid] = append(stacks[e.Pid], e.Name)
		case "E":
			st := stacks[e.Pid]
			if len(st) == 0 {
				t.Fatalf("%s: E without B", n)
			}
			e.Name, stacks[e.Pid] = st[len(st)-1], st[:len(st)-1]
		case "X":
			if e.Dur == nil || *e.Dur != 0 {
				t.Errorf("%s: X event %q without dur 0", n, e.Name)
			}
		}
		out[n] = append(out[n], e.Ph+" "+e.Name)
	}
	for pid, st := range stacks {
		if len(st) > 0 {
			t.Errorf("%s: spans left open: %v", names[pid], st)
		}
	}
	return out
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(us int) time.Time { return t0.Add(time.Duration(us) * time.Microsecond) }

func open(t *testing.T, opts Options) (*Timeline, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "timeline.json")
	if opts.Origin.IsZero() {
		opts.Origin = t0
	}
	tl, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	return tl, path
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// script plays one negotiation and execution, as rank 0 of 3 sees it: a and
// b fused (rank 1 late for b), then c served from the cache.
func script(tl *Timeline) {
	tl.OnCycleStart(at(0))
	tl.OnNegotiateStart(at(0), "a", "allreduce")
	tl.OnRankReady(at(0), "a", 0)
	tl.OnRankReady(at(0), "a", 2)
	tl.OnNegotiateStart(at(0), "b", "allreduce")
	tl.OnRankReady(at(0), "b", 0)
	tl.OnCycleStart(at(1000))
	tl.OnRankReady(at(1000), "a", 1)
	tl.OnRankReady(at(1000), "b", 2)
	tl.OnRankReady(at(1000), "b", 1)
	tl.OnNegotiateEnd(at(1000), "a")
	tl.OnNegotiateEnd(at(1000), "b")
	r := Op{Op: "allreduce", Names: []string{"a", "b"}, DType: "float32", Counts: []int64{4, 8}}
	tl.OpStart(at(1010), r)
	tl.Activity(at(1020), r.Names, MemcpyIn)
	tl.Activity(at(1030), r.Names, "CPU_ALLREDUCE")
	tl.Activity(at(1040), r.Names, MemcpyOut)
	tl.OpEnd(at(1050), r.Names, nil)

	tl.OnCycleStart(at(2000))
	tl.OnNegotiateStart(at(2000), "c", "broadcast")
	tl.OnNegotiateEnd(at(2000), "c")
	rc := Op{Op: "broadcast", Names: []string{"c"}, DType: "int32", Counts: []int64{3}}
	tl.OpStart(at(2001), rc)
	tl.Activity(at(2002), rc.Names, "CPU_BROADCAST")
	tl.OpEnd(at(2003), rc.Names, errors.New(`peer "x" lost`))
}

func TestScript(t *testing.T) {
	tl, path := open(t, Options{MarkCycles: true})
	script(tl)
	if err := tl.Close(); err != nil {
		t.Fatal(err)
	}
	evs := parse(t, read(t, path))
	got := rows(t, evs)
	fused := []string{
		"B ALLREDUCE", "B QUEUE", "E QUEUE",
		"B MEMCPY_IN_FUSION_BUFFER", "E MEMCPY_IN_FUSION_BUFFER",
		"B CPU_ALLREDUCE", "E CPU_ALLREDUCE",
		"B MEMCPY_OUT_FUSION_BUFFER", "E MEMCPY_OUT_FUSION_BUFFER", "E ALLREDUCE",
	}
	want := map[string][]string{
		"gorovod": {"i CYCLE_START", "i CYCLE_START", "i CYCLE_START"},
		"a":       append([]string{"B NEGOTIATE_ALLREDUCE", "X 0", "X 2", "X 1", "E NEGOTIATE_ALLREDUCE"}, fused...),
		"b":       append([]string{"B NEGOTIATE_ALLREDUCE", "X 0", "X 2", "X 1", "E NEGOTIATE_ALLREDUCE"}, fused...),
		"c": {"B NEGOTIATE_BROADCAST", "E NEGOTIATE_BROADCAST", "B BROADCAST", "B QUEUE", "E QUEUE",
			"B CPU_BROADCAST", "E CPU_BROADCAST", "E BROADCAST"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rows:\n got %q\nwant %q", got, want)
	}

	// Spot-check times, args and metadata.
	var sawArgs, sawErr, sawRank, sawSort bool
	for _, e := range evs {
		switch {
		case e.Ph == "B" && e.Name == "ALLREDUCE" && e.Pid == 2:
			sawArgs = true
			if e.Ts != 1010 || e.Args["dtype"] != "float32" || e.Args["count"] != 8.0 || e.Args["fused"] != 2.0 {
				t.Errorf("op span of b: %+v", e)
			}
		case e.Ph == "E" && e.Args["error"] != nil:
			sawErr = true
			if e.Args["error"] != `peer "x" lost` || e.Ts != 2003 {
				t.Errorf("error end: %+v", e)
			}
		case e.Ph == "X" && e.Pid == 1 && e.Name == "1":
			sawRank = true
			if e.Args["rank"] != 1.0 || e.Ts != 1000 {
				t.Errorf("rank mark: %+v", e)
			}
		case e.Ph == "M" && e.Name == "process_sort_index" && e.Pid == 3:
			sawSort = e.Args["sort_index"] == 3.0
		case e.Ph == "i":
			if e.S != "g" || e.Pid != 0 {
				t.Errorf("cycle mark: %+v", e)
			}
		}
	}
	if !sawArgs || !sawErr || !sawRank || !sawSort {
		t.Errorf("missing events: op args %v, error %v, rank mark %v, sort index %v", sawArgs, sawErr, sawRank, sawSort)
	}
	if st := tl.Stats(); st.Truncated || st.Dropped != 0 || st.Bytes != int64(len(read(t, path))) {
		t.Errorf("stats %+v, file %d bytes", st, len(read(t, path)))
	}
}

func TestFractionalTimestamps(t *testing.T) {
	var buf bytes.Buffer
	tl, err := New(&buf, Options{Origin: t0})
	if err != nil {
		t.Fatal(err)
	}
	tl.OnNegotiateStart(t0.Add(1234567*time.Nanosecond), "a", "allreduce")
	tl.OnNegotiateEnd(t0.Add(2*time.Millisecond+5*time.Nanosecond), "a")
	_ = tl.Close()
	var ts []float64
	for _, e := range parse(t, buf.Bytes()) {
		if e.Ph != "M" {
			ts = append(ts, e.Ts)
		}
	}
	if want := []float64{1234.567, 2000.005}; !reflect.DeepEqual(ts, want) {
		t.Errorf("ts %v, want %v", ts, want)
	}
}

func TestCloseEndsOpenSpansAndIsIdempotent(t *testing.T) {
	tl, path := open(t, Options{})
	tl.OnNegotiateStart(at(1), "n", "allgather")
	tl.OpStart(at(2), Op{Op: "allreduce", Names: []string{"o"}})
	tl.Activity(at(3), []string{"o"}, "CPU_ALLREDUCE")
	if err := tl.Close(); err != nil {
		t.Fatal(err)
	}
	first := read(t, path)
	got := rows(t, parse(t, first))
	want := map[string][]string{
		"n": {"B NEGOTIATE_ALLGATHER", "E NEGOTIATE_ALLGATHER"},
		"o": {"B ALLREDUCE", "B QUEUE", "E QUEUE", "B CPU_ALLREDUCE", "E CPU_ALLREDUCE", "E ALLREDUCE"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rows:\n got %q\nwant %q", got, want)
	}
	if err := tl.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	script(tl) // after Close: no-ops
	if err := tl.Flush(); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush after Close: %v, want ErrClosed", err)
	}
	if tl.Enabled() {
		t.Error("Enabled after Close")
	}
	if !bytes.Equal(read(t, path), first) {
		t.Error("file changed after Close")
	}
}

// Out-of-order calls (ends without starts, a restart over an open span)
// still give balanced spans.
func TestRepairsSequences(t *testing.T) {
	tl, path := open(t, Options{})
	tl.OnRankReady(at(1), "x", 0)                  // unknown: ignored
	tl.OnNegotiateEnd(at(1), "x")                  // ignored
	tl.Activity(at(1), []string{"x"}, "ALLREDUCE") // ignored
	tl.OpEnd(at(1), []string{"x"}, nil)            // ignored
	tl.OnNegotiateStart(at(2), "x", "allreduce")
	tl.OpStart(at(3), Op{Op: "allreduce", Names: []string{"x"}}) // closes negotiation
	tl.OnNegotiateStart(at(4), "x", "allreduce")                 // closes the op
	tl.OnNegotiateEnd(at(5), "x")
	if err := tl.Close(); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"x": {
		"B NEGOTIATE_ALLREDUCE", "E NEGOTIATE_ALLREDUCE",
		"B ALLREDUCE", "B QUEUE", "E QUEUE", "E ALLREDUCE",
		"B NEGOTIATE_ALLREDUCE", "E NEGOTIATE_ALLREDUCE",
	}}
	if got := rows(t, parse(t, read(t, path))); !reflect.DeepEqual(got, want) {
		t.Errorf("rows:\n got %q\nwant %q", got, want)
	}
}

func TestNilReceivers(t *testing.T) {
	var tl *Timeline
	script(tl)
	if tl.Enabled() || tl.Close() != nil || tl.Flush() != nil || tl.Stats() != (Stats{}) {
		t.Error("nil *Timeline is not a no-op")
	}
	var sw *Switch
	sw.OnNegotiateStart(t0, "a", "allreduce")
	sw.OnRankReady(t0, "a", 0)
	sw.OnNegotiateEnd(t0, "a")
	sw.OnCycleStart(t0)
	sw.OpStart(t0, Op{Names: []string{"a"}})
	sw.Activity(t0, []string{"a"}, MemcpyIn)
	sw.OpEnd(t0, []string{"a"}, nil)
	if sw.Enabled() || sw.Timeline() != nil {
		t.Error("nil *Switch is not a no-op")
	}
	var zero Switch
	script(zero.Timeline())
	if zero.Stop() != nil || zero.Enabled() {
		t.Error("zero Switch is not a no-op")
	}
}

func TestSizeCap(t *testing.T) {
	const max = 8 << 10
	tl, path := open(t, Options{MaxBytes: max, BufferBytes: 512})
	for i := 0; i < 200; i++ {
		name := fmt.Sprintf("layer%03d/weights", i%50)
		tl.OnNegotiateStart(at(i*10), name, "allreduce")
		tl.OnRankReady(at(i*10), name, 0)
		tl.OnNegotiateEnd(at(i*10+1), name)
		r := Op{Op: "allreduce", Names: []string{name}, DType: "float32", Counts: []int64{1}}
		tl.OpStart(at(i*10+2), r)
		tl.Activity(at(i*10+3), r.Names, "CPU_ALLREDUCE")
		// Left open on some: truncation must end them.
		if i%3 != 0 {
			tl.OpEnd(at(i*10+4), r.Names, errors.New(strings.Repeat("long error ", 20)))
		}
	}
	st := tl.Stats()
	if err := tl.Close(); err != nil {
		t.Fatal(err)
	}
	data := read(t, path)
	if len(data) > max {
		t.Errorf("file is %d bytes, cap %d", len(data), max)
	}
	if len(data) < max/2 {
		t.Errorf("file is only %d bytes of %d: cap too conservative", len(data), max)
	}
	evs := parse(t, data)
	rows(t, evs) // balanced
	lastEv := evs[len(evs)-1]
	if lastEv.Name != "timeline truncated" || lastEv.Ph != "i" || lastEv.Args["max_bytes"] != float64(max) {
		t.Errorf("last event %+v, want the truncation marker", lastEv)
	}
	if !st.Truncated || st.Dropped < 100 {
		t.Errorf("stats %+v: want truncated with many dropped", st)
	}
	if tl.Enabled() {
		t.Error("Enabled after truncation")
	}
}

// A process that dies without Close leaves a file of whole events that
// parses once the closing bracket is supplied (as Perfetto does).
func TestCrashLeavesWholeEvents(t *testing.T) {
	tl, path := open(t, Options{BufferBytes: 300, FlushInterval: -1})
	for i := 0; i < 20; i++ {
		script(tl)
		data := read(t, path)
		if !bytes.HasPrefix(data, []byte("[\n")) {
			t.Fatalf("file starts with %q", data[:min(len(data), 10)])
		}
		parse(t, append(data, "\n]"...))
	}
	// Flush, and a late event, make everything so far durable.
	if err := tl.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := len(parse(t, append(read(t, path), "\n]"...))); int64(n) < tl.Stats().Events {
		t.Errorf("after Flush the file has %d events of %d", n, tl.Stats().Events)
	}
	_ = tl.Close()
}

func TestFlushInterval(t *testing.T) {
	tl, path := open(t, Options{FlushInterval: time.Second})
	tl.OnNegotiateStart(at(0), "a", "allreduce")
	if len(read(t, path)) != 0 {
		t.Fatal("written before the interval")
	}
	tl.OnNegotiateEnd(t0.Add(time.Second), "a")
	if got := len(parse(t, append(read(t, path), "\n]"...))); got != 6 {
		t.Errorf("after the interval the file has %d events, want 6", got)
	}
	_ = tl.Close()
}

func TestEscapesNames(t *testing.T) {
	names := []string{`quote"back\slash`, "new\nline\ttab\x01", "ünïcødé/日本", "bad\xffutf8", ""}
	var buf bytes.Buffer
	tl, _ := New(&buf, Options{})
	for _, n := range names {
		tl.OnNegotiateStart(t0, n, "allreduce")
		tl.OpEnd(t0, []string{n}, errors.New(n))
	}
	_ = tl.Close()
	var got []string
	for _, e := range parse(t, buf.Bytes()) {
		if e.Name == "process_name" && e.Pid > 0 {
			got = append(got, e.Args["name"].(string))
		}
	}
	want := slicesClone(names)
	want[3] = "bad\uFFFDutf8"
	if !reflect.DeepEqual(got, want) {
		t.Errorf("names %q, want %q", got, want)
	}
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

type failWriter struct{ closed bool }

func (f *failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }
func (f *failWriter) Close() error              { f.closed = true; return nil }

func TestWriteErrorReported(t *testing.T) {
	w := &failWriter{}
	tl, err := New(w, Options{BufferBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	script(tl)
	if tl.Enabled() {
		t.Error("Enabled after a write error")
	}
	err = tl.Close()
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Close: %v, want the write error", err)
	}
	if !w.closed {
		t.Error("writer not closed")
	}
	if err2 := tl.Close(); err2 != err {
		t.Errorf("second Close: %v, want %v", err2, err)
	}
}

func TestOptionErrors(t *testing.T) {
	if _, err := New(nil, Options{}); err == nil {
		t.Error("nil writer accepted")
	}
	if _, err := New(&bytes.Buffer{}, Options{MaxBytes: 100}); err == nil || !strings.Contains(err.Error(), "100") {
		t.Errorf("tiny MaxBytes: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "no", "such", "dir", "t.json")
	if _, err := Open(bad, Options{}); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("Open(%s): %v, want an error naming the path", bad, err)
	}
}

// The loop records while another goroutine starts and stops timelines;
// every file must come out valid and balanced. Run with -race.
func TestSwitchConcurrent(t *testing.T) {
	var sw Switch
	dir := t.TempDir()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("t%d", i%7)
			now := at(i)
			sw.OnCycleStart(now)
			sw.OnNegotiateStart(now, name, "allreduce")
			sw.OnRankReady(now, name, 0)
			sw.OnNegotiateEnd(now, name)
			r := Op{Op: "allreduce", Names: []string{name}}
			sw.OpStart(now, r)
			sw.Activity(now, r.Names, MemcpyIn)
			if i%5 != 0 {
				sw.OpEnd(now, r.Names, nil)
			}
		}
	}()
	var paths []string
	for i := 0; i < 20; i++ {
		p := filepath.Join(dir, fmt.Sprintf("t%d.json", i))
		if err := sw.Start(p, Options{MarkCycles: true, Origin: t0}); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
		for sw.Timeline().Stats().Events < 50 { // let the loop record some
			if !sw.Enabled() {
				t.Fatal("switch not enabled after Start")
			}
		}
	}
	if err := sw.Stop(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	for _, p := range paths {
		evs := parse(t, read(t, p))
		if len(rows(t, evs)) == 0 {
			t.Errorf("%s: no rows", p)
		}
	}
}

func BenchmarkDisabled(b *testing.B) {
	var tl *Timeline
	r := Op{Op: "allreduce", Names: []string{"a", "b"}}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		tl.OnNegotiateStart(t0, "a", "allreduce")
		tl.OnNegotiateEnd(t0, "a")
		tl.OpStart(t0, r)
		tl.Activity(t0, r.Names, MemcpyIn)
		tl.OpEnd(t0, r.Names, nil)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func BenchmarkEnabled(b *testing.B) {
	tl, _ := New(discard{}, Options{MaxBytes: -1, Origin: t0})
	r := Op{Op: "allreduce", Names: []string{"a", "b"}, DType: "float32", Counts: []int64{1, 2}}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		now := at(i)
		tl.OnNegotiateStart(now, "a", "allreduce")
		tl.OnRankReady(now, "a", 0)
		tl.OnNegotiateEnd(now, "a")
		tl.OpStart(now, r)
		tl.Activity(now, r.Names, MemcpyIn)
		tl.OpEnd(now, r.Names, nil)
	}
	b.StopTimer()
	_ = tl.Close()
}
