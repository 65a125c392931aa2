package dataparallel

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/gorovod/gorovod/collective"
)

// Gradients synchronizes a model's gradient buffers of element type T
// across ranks. Create it with New; see the package documentation.
type Gradients[T collective.Element] struct {
	cfg     config
	entries []*entry[T]
	byName  map[string]*entry[T]
	buckets []*bucket[T] // units of communication: single gradients and groups
	pending []inflight[T]
	pass    int    // current backward pass within the window, from 1
	window  uint64 // accumulation windows completed
	nready  int    // Ready calls in this pass
	stats   Stats
}

// entry is one registered gradient buffer.
type entry[T collective.Element] struct {
	name      string
	buf       []T
	ready     bool
	acc       []T    // sum of earlier passes of the window (accumulation)
	accWindow uint64 // window whose passes acc holds; stale otherwise
	bucket    *bucket[T]
}

// inflight is a started allreduce.
type inflight[T collective.Element] struct {
	b *bucket[T]
	h *collective.Handle
}

// New returns a helper with no buffers registered yet.
func New[T collective.Element](opts ...Option) (*Gradients[T], error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.compression != None && !compressible[T]() {
		var z T
		return nil, misuse(ErrNotCompressible, "compression %v of %T gradients", cfg.compression, z)
	}
	return &Gradients[T]{cfg: cfg, byName: map[string]*entry[T]{}, pass: 1}, nil
}

// Register adds a gradient buffer under name. Every rank registers the same
// names, with the same lengths, in the same order.
func (g *Gradients[T]) Register(name string, buf []T) error {
	if name == "" {
		return misuse(ErrBadOption, "empty gradient name")
	}
	if _, ok := g.byName[name]; ok {
		return misuse(ErrDuplicateName, "gradient %q", name)
	}
	if len(g.pending) > 0 || g.nready > 0 {
		return misuse(ErrBadOption, "registering %q in the middle of a pass (after Ready, before Synchronize)", name)
	}
	e := &entry[T]{name: name, buf: buf}
	if g.cfg.accumulate > 1 {
		e.acc = make([]T, len(buf))
	}
	e.bucket = &bucket[T]{op: g.cfg.prefix + name, members: []*entry[T]{e}}
	g.entries = append(g.entries, e)
	g.byName[name] = e
	g.buckets = append(g.buckets, e.bucket)
	return nil
}

// Rebind points name at a new buffer of the same length (after the model
// reallocated its gradients); a different length is ErrLengthChanged.
func (g *Gradients[T]) Rebind(name string, buf []T) error {
	e, ok := g.byName[name]
	if !ok {
		return misuse(ErrUnknownName, "rebinding %q", name)
	}
	if len(buf) != len(e.buf) {
		return misuse(ErrLengthChanged, "gradient %q was registered with %d elements, now has %d", name, len(e.buf), len(buf))
	}
	if e.ready {
		return misuse(ErrAlreadyReady, "rebinding %q while its allreduce is under way", name)
	}
	e.buf = buf
	return nil
}

// Group is a grouping hint: the named gradients (already registered, in no
// other group) travel as one allreduce, started once the last of them is
// ready. Every rank must declare the same groups.
func (g *Gradients[T]) Group(name string, members ...string) error {
	if len(members) < 2 {
		return misuse(ErrBadOption, "group %q has %d members, want at least 2", name, len(members))
	}
	if len(g.pending) > 0 || g.nready > 0 {
		return misuse(ErrBadOption, "grouping %q in the middle of a pass", name)
	}
	es := make([]*entry[T], len(members))
	seen := map[string]bool{}
	for i, m := range members {
		e, ok := g.byName[m]
		if !ok {
			return misuse(ErrUnknownName, "group %q member %q", name, m)
		}
		if seen[m] || len(e.bucket.members) > 1 {
			return misuse(ErrDuplicateName, "group %q: gradient %q is already in a group", name, m)
		}
		seen[m] = true
		es[i] = e
	}
	b := &bucket[T]{op: g.cfg.prefix + "group/" + name, members: es}
	dropped := map[*bucket[T]]bool{}
	for _, e := range es {
		dropped[e.bucket] = true
		e.bucket = b
	}
	kept := g.buckets[:0]
	for _, ob := range g.buckets {
		if !dropped[ob] {
			kept = append(kept, ob)
		}
	}
	g.buckets = append(kept, b)
	return nil
}

// Ready says that name's gradient for this backward pass is complete. On
// the last pass of an accumulation window (every pass without
// accumulation) it starts the allreduce at once, or, for a group member,
// once the whole group is ready; it does not wait for it.
func (g *Gradients[T]) Ready(ctx context.Context, name string) error {
	e, ok := g.byName[name]
	if !ok {
		return misuse(ErrUnknownName, "Ready(%q)", name)
	}
	if e.ready {
		return misuse(ErrAlreadyReady, "Ready(%q) twice in pass %d (call Synchronize after each backward pass)", name, g.pass)
	}
	g.markReady(ctx, e)
	return nil
}

func (g *Gradients[T]) markReady(ctx context.Context, e *entry[T]) {
	e.ready = true
	g.nready++
	g.observe(Event{Kind: EventReady, Names: []string{e.name}, Pass: g.pass})
	if g.pass < g.cfg.accumulate {
		g.accumulate(e)
		return
	}
	g.foldWindow(e)
	b := e.bucket
	b.nready++
	if b.nready == len(b.members) {
		g.start(ctx, b)
	}
}

// accumulate adds e's gradient of a pass before the window's last into its
// accumulator.
func (g *Gradients[T]) accumulate(e *entry[T]) {
	if e.accWindow != g.window || e.acc == nil {
		if e.acc == nil {
			e.acc = make([]T, len(e.buf))
		}
		copy(e.acc, e.buf)
		e.accWindow = g.window
		return
	}
	for i, v := range e.buf {
		e.acc[i] += v
	}
}

// foldWindow adds the window's earlier passes into e's buffer; the division
// by the number of passes is part of the prescale (scale).
func (g *Gradients[T]) foldWindow(e *entry[T]) {
	if g.cfg.accumulate == 1 || e.accWindow != g.window || e.acc == nil {
		return
	}
	for i, a := range e.acc {
		e.buf[i] += a
	}
}

// scale is the factor applied before the reduction: the prescale, and the
// mean over an accumulation window.
func (g *Gradients[T]) scale() float64 {
	return g.cfg.prescale / float64(g.cfg.accumulate)
}

// start launches b's allreduce.
func (g *Gradients[T]) start(ctx context.Context, b *bucket[T]) {
	h, bytes := b.launch(ctx, g.cfg, g.scale())
	g.pending = append(g.pending, inflight[T]{b: b, h: h})
	g.stats.Allreduces++
	g.stats.WireBytes += int64(bytes)
	g.observe(Event{Kind: EventStart, Names: b.names(), Op: b.op, Pass: g.pass, Done: h.Done()})
}

// Synchronize ends a backward pass. Before the last pass of an
// accumulation window it only resets the pass and returns false. On the
// last pass it starts the allreduce of every gradient not yet ready, waits
// for all of them and leaves the reduced gradients in the registered
// buffers: true means the buffers hold the job's gradient (apply the
// update). Ready must have been called at least once since the last
// Synchronize. On an error the pass is abandoned: the buffers' contents
// are undefined and the next pass starts a new window.
func (g *Gradients[T]) Synchronize(ctx context.Context) (bool, error) {
	if len(g.entries) == 0 {
		return false, misuse(ErrNoBuffers, "Synchronize")
	}
	if g.nready == 0 {
		return false, misuse(ErrNothingReady, "pass %d", g.pass)
	}
	if g.pass < g.cfg.accumulate {
		g.endPass()
		g.pass++
		g.observe(Event{Kind: EventSynchronized, Pass: g.pass - 1})
		return false, nil
	}
	for _, e := range g.entries {
		if !e.ready {
			g.markReady(ctx, e)
		}
	}
	var err error
	for _, p := range g.pending {
		if werr := p.h.Wait(ctx); werr != nil {
			err = errors.Join(err, fmt.Errorf("allreduce %q: %w", p.b.op, werr))
			continue
		}
		p.b.finish(g.cfg.compression)
	}
	pass := g.pass
	g.endPass()
	g.pending = g.pending[:0]
	g.pass = 1
	g.window++
	if err != nil {
		return false, err
	}
	g.stats.Passes += int64(pass)
	g.observe(Event{Kind: EventSynchronized, Pass: pass, Communicated: true})
	return true, nil
}

func (g *Gradients[T]) endPass() {
	for _, e := range g.entries {
		e.ready = false
	}
	for _, b := range g.buckets {
		b.nready = 0
	}
	g.nready = 0
}

// Reset abandons the pass in progress after a failure or a membership
// change (an elastic reset): allreduces still pending are no longer waited
// for, accumulated passes and error-feedback residuals are dropped, and the
// next Ready starts a new window. The registered buffers and groups stay.
// With opts, they replace the options of WithCallOptions (the new world or
// process set after a reset).
func (g *Gradients[T]) Reset(opts ...collective.CallOption) {
	g.endPass()
	g.pending = nil // a pending op may still write its wire buffer: drop them
	for _, b := range g.buckets {
		b.packed, b.f16, b.bf16, b.resid = nil, nil, nil, nil
	}
	g.pass = 1
	g.window++
	if len(opts) > 0 {
		g.cfg.callOpts = slices.Clone(opts)
	}
}

// Stats returns the helper's counters.
func (g *Gradients[T]) Stats() Stats { return g.stats }

// Names lists the registered gradients in registration order.
func (g *Gradients[T]) Names() []string {
	ns := make([]string, len(g.entries))
	for i, e := range g.entries {
		ns[i] = e.name
	}
	return ns
}

func (g *Gradients[T]) observe(ev Event) {
	if g.cfg.observer != nil {
		g.cfg.observer(ev)
	}
}
