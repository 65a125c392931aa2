package dataparallel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/gorovod/gorovod/collective"
)

// The tests run in the default world of one (collective.Init without a
// launcher): the helper's own arithmetic (accumulation, compression,
// scaling, grouping) and its errors are what they check; the reduction
// across ranks is collective's, tested there.
func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	if err := collective.Init(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "collective.Init:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := collective.Shutdown(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "collective.Shutdown:", err)
		code = 1
	}
	cancel()
	os.Exit(code)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// linearGrad is the gradient of the mean squared error of y = w.x over the
// samples xs (targets ys), written into g: a stand-in for a backward pass.
func linearGrad(g, w []float64, xs [][]float64, ys []float64) {
	clear(g)
	for s, x := range xs {
		pred := 0.0
		for i := range w {
			pred += w[i] * x[i]
		}
		d := 2 * (pred - ys[s]) / float64(len(xs))
		for i := range g {
			g[i] += d * x[i]
		}
	}
}

func TestAccumulationOverKPassesEqualsOneBigBatch(t *testing.T) {
	ctx := testCtx(t)
	const k, batch, dim = 4, 8, 5
	rng := rand.New(rand.NewPCG(1, 2))
	w := make([]float64, dim)
	for i := range w {
		w[i] = rng.NormFloat64()
	}
	xs := make([][]float64, k*batch)
	ys := make([]float64, k*batch)
	for s := range xs {
		xs[s] = make([]float64, dim)
		for i := range xs[s] {
			xs[s][i] = rng.NormFloat64()
		}
		ys[s] = rng.NormFloat64()
	}

	big := make([]float64, dim)
	one, err := New[float64](WithPrefix("big/"))
	if err != nil {
		t.Fatal(err)
	}
	if err := one.Register("w", big); err != nil {
		t.Fatal(err)
	}
	linearGrad(big, w, xs, ys)
	if err := one.Ready(ctx, "w"); err != nil {
		t.Fatal(err)
	}
	if synced, err := one.Synchronize(ctx); err != nil || !synced {
		t.Fatalf("one pass: synced %v, error %v", synced, err)
	}

	acc := make([]float64, dim)
	var starts int
	h, err := New[float64](WithAccumulation(k), WithPrefix("acc/"),
		WithObserver(func(ev Event) {
			if ev.Kind == EventStart {
				starts++
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Register("w", acc); err != nil {
		t.Fatal(err)
	}
	for pass := 1; pass <= k; pass++ {
		linearGrad(acc, w, xs[(pass-1)*batch:pass*batch], ys[(pass-1)*batch:pass*batch])
		if err := h.Ready(ctx, "w"); err != nil {
			t.Fatal(err)
		}
		synced, err := h.Synchronize(ctx)
		if err != nil {
			t.Fatalf("pass %d: %v", pass, err)
		}
		if synced != (pass == k) {
			t.Fatalf("pass %d of %d: Synchronize says synced=%v", pass, k, synced)
		}
	}
	if starts != 1 {
		t.Errorf("%d allreduces over %d passes, want 1", starts, k)
	}
	for i := range big {
		if math.Abs(big[i]-acc[i]) > 1e-12*math.Max(1, math.Abs(big[i])) {
			t.Errorf("element %d: %d passes give %v, one pass over %d samples %v", i, k, acc[i], k*batch, big[i])
		}
	}
	if st := h.Stats(); st.Passes != k || st.Allreduces != 1 || st.WireBytes != 8*dim {
		t.Errorf("stats %+v, want %d passes, 1 allreduce, %d bytes", st, k, 8*dim)
	}
}

// TestAccumulationWindowsDoNotLeak: the second window's result must not
// contain the first window's passes.
func TestAccumulationWindowsDoNotLeak(t *testing.T) {
	ctx := testCtx(t)
	buf := make([]float32, 3)
	h, err := New[float32](WithAccumulation(2), WithPrefix("leak/"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Register("g", buf); err != nil {
		t.Fatal(err)
	}
	for window, vals := range [][2]float32{{1, 3}, {10, 30}} {
		for _, v := range vals {
			for i := range buf {
				buf[i] = v
			}
			if err := h.Ready(ctx, "g"); err != nil {
				t.Fatal(err)
			}
			if _, err := h.Synchronize(ctx); err != nil {
				t.Fatal(err)
			}
		}
		want := (vals[0] + vals[1]) / 2
		if !slices.Equal(buf, []float32{want, want, want}) {
			t.Errorf("window %d: %v, want the mean %v", window, buf, want)
		}
	}
}

func TestCompressionRoundTripsWithinPrecision(t *testing.T) {
	ctx := testCtx(t)
	for _, tc := range []struct {
		c   Compression
		eps float64 // relative rounding error bound: half an ulp
	}{{FP16, 1.0 / 2048}, {BF16, 1.0 / 256}} {
		t.Run(tc.c.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			a, b := make([]float32, 1000), make([]float64, 300)
			orig := make([]float64, 0, len(a)+len(b))
			for i := range a {
				a[i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(7)-4)))
				orig = append(orig, float64(a[i]))
			}
			for i := range b {
				b[i] = rng.NormFloat64()
				orig = append(orig, b[i])
			}
			ha, err := New[float32](WithCompression(tc.c), WithPrefix("rt32/"+tc.c.String()+"/"))
			if err != nil {
				t.Fatal(err)
			}
			hb, err := New[float64](WithCompression(tc.c), WithPrefix("rt64/"+tc.c.String()+"/"))
			if err != nil {
				t.Fatal(err)
			}
			if err := errors.Join(ha.Register("a", a), hb.Register("b", b), ha.Ready(ctx, "a"), hb.Ready(ctx, "b")); err != nil {
				t.Fatal(err)
			}
			for _, h := range []interface {
				Synchronize(context.Context) (bool, error)
			}{ha, hb} {
				if _, err := h.Synchronize(ctx); err != nil {
					t.Fatal(err)
				}
			}
			got := make([]float64, 0, len(orig))
			for _, v := range a {
				got = append(got, float64(v))
			}
			got = append(got, b...)
			for i, x := range orig {
				// Below the normal range precision is absolute (fp16's smallest
				// normal is 2^-14).
				tol := math.Max(math.Abs(x)*tc.eps, math.Ldexp(1, -25))
				if d := math.Abs(got[i] - x); d > tol {
					t.Fatalf("element %d: %v came back as %v (error %g > %g)", i, x, got[i], d, tol)
				}
			}
			if st := ha.Stats(); st.WireBytes != 2*int64(len(a)) {
				t.Errorf("%d float32 values sent as %d bytes, want %d", len(a), st.WireBytes, 2*len(a))
			}
		})
	}
}

// TestErrorFeedbackKeepsTheSum sends the same gradient many times: with
// error feedback the sum of what arrived stays within one rounding of the
// true sum; without it the rounding error grows with every step.
func TestErrorFeedbackKeepsTheSum(t *testing.T) {
	ctx := testCtx(t)
	const steps = 200
	const g = float32(1.0 / 3)
	run := func(ef bool) float64 {
		opts := []Option{WithCompression(FP16), WithPrefix(fmt.Sprintf("ef%v/", ef))}
		if ef {
			opts = append(opts, WithErrorFeedback())
		}
		buf := make([]float32, 1)
		h, err := New[float32](opts...)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Register("g", buf); err != nil {
			t.Fatal(err)
		}
		sum := 0.0
		for s := 0; s < steps; s++ {
			buf[0] = g
			if err := h.Ready(ctx, "g"); err != nil {
				t.Fatal(err)
			}
			if _, err := h.Synchronize(ctx); err != nil {
				t.Fatal(err)
			}
			sum += float64(buf[0])
		}
		return math.Abs(sum - steps*float64(g))
	}
	ulp := 1.0 / 2048 / 2 // of values near 1/3
	if e := run(true); e > ulp {
		t.Errorf("with error feedback the sum of %d steps is off by %g, want at most %g", steps, e, ulp)
	}
	if e := run(false); e < 10*ulp {
		t.Errorf("without error feedback the sum is off by only %g: the test no longer shows the difference", e)
	}
}

func TestSumWithPreAndPostscale(t *testing.T) {
	ctx := testCtx(t)
	buf := []float32{1, 2, 4}
	h, err := New[float32](WithOp(collective.Sum), WithPrescale(0.5), WithPostscale(3), WithPrefix("scale/"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Register("g", buf); err != nil {
		t.Fatal(err)
	}
	if err := h.Ready(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Synchronize(ctx); err != nil {
		t.Fatal(err)
	}
	if want := []float32{1.5, 3, 6}; !slices.Equal(buf, want) {
		t.Errorf("got %v, want %v (x0.5, sum over one rank, x3)", buf, want)
	}
}

func TestGroupGoesAsOneAllreduceAfterItsLastMember(t *testing.T) {
	ctx := testCtx(t)
	a, b, c := []float32{1, 2}, []float32{3}, []float32{4, 5, 6}
	var events []Event
	h, err := New[float32](WithPrefix("grp/"), WithCompression(FP16), WithObserver(func(ev Event) { events = append(events, ev) }))
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(h.Register("a", a), h.Register("b", b), h.Register("c", c), h.Group("ab", "a", "b")); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "c", "b"} {
		if err := h.Ready(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.Synchronize(ctx); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range events {
		switch ev.Kind {
		case EventReady:
			got = append(got, "ready "+ev.Names[0])
		case EventStart:
			got = append(got, fmt.Sprintf("start %s %v", ev.Op, ev.Names))
		}
	}
	want := []string{"ready a", "ready c", "start grp/c [c]", "ready b", "start grp/group/ab [a b]"}
	if !slices.Equal(got, want) {
		t.Errorf("events\n%q\nwant\n%q", got, want)
	}
	if !slices.Equal(a, []float32{1, 2}) || !slices.Equal(b, []float32{3}) || !slices.Equal(c, []float32{4, 5, 6}) {
		t.Errorf("values changed: %v %v %v", a, b, c)
	}
}

// TestSynchronizeSendsGradientsNeverMarkedReady: every rank must send the
// same set, so Synchronize starts the rest.
func TestSynchronizeSendsGradientsNeverMarkedReady(t *testing.T) {
	ctx := testCtx(t)
	var starts []string
	h, err := New[float32](WithPrefix("rest/"), WithObserver(func(ev Event) {
		if ev.Kind == EventStart {
			starts = append(starts, ev.Op)
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(h.Register("a", []float32{1}), h.Register("b", []float32{2}), h.Ready(ctx, "b")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Synchronize(ctx); err != nil {
		t.Fatal(err)
	}
	if want := []string{"rest/b", "rest/a"}; !slices.Equal(starts, want) {
		t.Errorf("started %v, want %v", starts, want)
	}
}

func TestMisuseIsAClearError(t *testing.T) {
	ctx := testCtx(t)
	h, err := New[float32](WithPrefix("misuse/"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Synchronize(ctx); !errors.Is(err, ErrNoBuffers) {
		t.Errorf("Synchronize with nothing registered: %v", err)
	}
	if err := h.Register("w", make([]float32, 4)); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		what string
		err  error
		want error
	}{
		{"register twice", h.Register("w", make([]float32, 4)), ErrDuplicateName},
		{"buffer changes length", h.Rebind("w", make([]float32, 5)), ErrLengthChanged},
		{"rebind unknown", h.Rebind("v", nil), ErrUnknownName},
		{"ready unknown", h.Ready(ctx, "v"), ErrUnknownName},
		{"group unknown", h.Group("g", "w", "v"), ErrUnknownName},
		{"group of one", h.Group("g", "w"), ErrBadOption},
		{"empty name", h.Register("", nil), ErrBadOption},
	}
	_, err = h.Synchronize(ctx)
	checks = append(checks, struct {
		what string
		err  error
		want error
	}{"synchronize with nothing ready", err, ErrNothingReady})
	if err := h.Ready(ctx, "w"); err != nil {
		t.Fatal(err)
	}
	checks = append(checks, struct {
		what string
		err  error
		want error
	}{"ready twice", h.Ready(ctx, "w"), ErrAlreadyReady})
	if _, err := h.Synchronize(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range checks {
		if !errors.Is(c.err, c.want) || !errors.Is(c.err, collective.ErrInvalid) {
			t.Errorf("%s: error %v, want %v (and collective.ErrInvalid)", c.what, c.err, c.want)
		}
	}
	if err := h.Rebind("w", make([]float32, 4)); err != nil {
		t.Errorf("rebinding to a buffer of the same length: %v", err)
	}
}

func TestNewRejectsUnusableOptions(t *testing.T) {
	bad := map[string][]Option{
		"accumulate 0":           {WithAccumulation(0)},
		"op max":                 {WithOp(collective.Max)},
		"prescale NaN":           {WithPrescale(math.NaN())},
		"postscale 0":            {WithPostscale(0)},
		"feedback without codec": {WithErrorFeedback()},
		"compression 7":          {WithCompression(7)},
	}
	for what, opts := range bad {
		if _, err := New[float32](opts...); !errors.Is(err, ErrBadOption) {
			t.Errorf("%s: error %v, want ErrBadOption", what, err)
		}
	}
	if _, err := New[int32](WithCompression(FP16)); !errors.Is(err, ErrNotCompressible) {
		t.Errorf("fp16 compression of int32: error %v, want ErrNotCompressible", err)
	}
	for _, s := range []string{"none", "fp16", "bf16", "float16", "BFloat16"} {
		if _, err := ParseCompression(s); err != nil {
			t.Errorf("ParseCompression(%q): %v", s, err)
		}
	}
	if _, err := ParseCompression("int8"); !errors.Is(err, ErrBadOption) {
		t.Errorf("ParseCompression(int8): %v", err)
	}
}

func TestIntegerGradients(t *testing.T) {
	ctx := testCtx(t)
	buf := []int32{2, 4, 6}
	h, err := New[int32](WithAccumulation(2), WithPrefix("int/"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Register("g", buf); err != nil {
		t.Fatal(err)
	}
	for pass := 0; pass < 2; pass++ {
		if err := h.Ready(ctx, "g"); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Synchronize(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if want := []int32{2, 4, 6}; !slices.Equal(buf, want) {
		t.Errorf("mean of two equal passes: %v, want %v", buf, want)
	}
}

func TestBroadcastParameters(t *testing.T) {
	ctx := testCtx(t)
	w, b := []float32{1, 2}, []float32{3}
	if err := BroadcastParameters(ctx, 0, w, b); err != nil {
		t.Fatal(err)
	}
	if err := BroadcastParameters(ctx, 1, w); !errors.Is(err, collective.ErrInvalid) {
		t.Errorf("root 1 in a world of one: %v", err)
	}
}

// TestAllreduceStartsBeforeBackwardEnds reads the timeline: a three-layer
// "backward pass" marks the last layer ready, waits until that allreduce has
// finished, and only then produces the other layers' gradients. The
// timeline must show the first allreduce over before the last gradient was
// even submitted: Ready starts communication at once, not at Synchronize.
func TestAllreduceStartsBeforeBackwardEnds(t *testing.T) {
	ctx := testCtx(t)
	path := filepath.Join(t.TempDir(), "timeline.json")
	if err := collective.StartTimeline(path); err != nil {
		t.Fatal(err)
	}
	done := map[string]<-chan struct{}{}
	h, err := New[float32](WithPrefix("tl/"), WithObserver(func(ev Event) {
		if ev.Kind == EventStart {
			done[ev.Names[0]] = ev.Done
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	layers := []string{"l3", "l2", "l1"} // backward order
	for _, l := range layers {
		if err := h.Register(l, make([]float32, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	for i, l := range layers {
		if err := h.Ready(ctx, l); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			select {
			case <-done[l]:
			case <-ctx.Done():
				t.Fatalf("the allreduce of %s did not finish before Synchronize: %v", l, ctx.Err())
			}
		}
	}
	if _, err := h.Synchronize(ctx); err != nil {
		t.Fatal(err)
	}
	if err := collective.StopTimeline(); err != nil {
		t.Fatal(err)
	}
	spans := readSpans(t, path)
	first, last := spans["tl/l3"]["ALLREDUCE"], spans["tl/l1"]["NEGOTIATE_ALLREDUCE"]
	if first.end == 0 || last.begin == 0 {
		t.Fatalf("timeline lacks the spans: %+v", spans)
	}
	if first.end > last.begin {
		t.Errorf("allreduce of l3 ended at %v us, after the last gradient's negotiation began at %v us", first.end, last.begin)
	}
}

type span struct{ begin, end float64 }

// readSpans returns, per tensor name, its spans by name (the last of each).
func readSpans(t *testing.T, path string) map[string]map[string]span {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var evs []struct {
		Ph   string  `json:"ph"`
		Pid  int     `json:"pid"`
		Ts   float64 `json:"ts"`
		Name string  `json:"name"`
		Args struct {
			Name string `json:"name"`
		} `json:"args"`
	}
	if err := json.Unmarshal(raw, &evs); err != nil {
		t.Fatalf("timeline is not JSON: %v", err)
	}
	names := map[int]string{}
	stacks := map[int][]string{}
	out := map[string]map[string]span{}
	for _, ev := range evs {
		tensor := names[ev.Pid]
		switch ev.Ph {
		case "M":
			if ev.Name == "process_name" {
				names[ev.Pid] = ev.Args.Name
				out[ev.Args.Name] = map[string]span{}
			}
		case "B":
			stacks[ev.Pid] = append(stacks[ev.Pid], ev.Name)
			if out[tensor] != nil {
				out[tensor][ev.Name] = span{begin: ev.Ts}
			}
		case "E":
			st := stacks[ev.Pid]
			if len(st) == 0 {
				continue
			}
			n := st[len(st)-1]
			stacks[ev.Pid] = st[:len(st)-1]
			if out[tensor] != nil {
				s := out[tensor][n]
				s.end = ev.Ts
				out[tensor][n] = s
			}
		}
	}
	return out
}
