package inmem

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gorovod/gorovod/internal/transport"
)

// DefaultPipeBytes is the capacity of each direction of a link unless
// WithPipeBytes says otherwise. Small on purpose: algorithms that forget to
// send and receive concurrently deadlock in tests instead of in production.
const DefaultPipeBytes = 64 << 10

// Option configures a World.
type Option func(*options) error

type options struct {
	pipeBytes   int
	hosts       []string
	perHost     int
	recvReducer bool
	duplex      bool
}

// WithPipeBytes sets the capacity of each direction of every link (> 0).
func WithPipeBytes(n int) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("inmem: WithPipeBytes(%d): capacity must be positive", n)
		}
		o.pipeBytes = n
		return nil
	}
}

// WithHosts names the host of every rank (len(hosts) must equal the world
// size), so tests can fake several machines.
func WithHosts(hosts ...string) Option {
	return func(o *options) error {
		o.hosts, o.perHost = append([]string(nil), hosts...), 0
		return nil
	}
}

// WithRanksPerHost puts ranks [0,k) on "host0", [k,2k) on "host1", and so on.
func WithRanksPerHost(k int) Option {
	return func(o *options) error {
		if k <= 0 {
			return fmt.Errorf("inmem: WithRanksPerHost(%d): must be positive", k)
		}
		o.hosts, o.perHost = nil, k
		return nil
	}
}

// WithRecvReducer makes every link implement transport.RecvReducer, as
// shared-memory links do.
func WithRecvReducer() Option {
	return func(o *options) error {
		o.recvReducer = true
		return nil
	}
}

// WithDuplex makes every link implement transport.Duplex, as TCP links
// do; with WithRecvReducer too, transport.DuplexForwarder (so
// DuplexReducer) and RecvReducer, as shared-memory links do. The nonblocking calls ignore Delay.
func WithDuplex() Option {
	return func(o *options) error {
		o.duplex = true
		return nil
	}
}

// World is an in-process set of ranks connected by in-memory links, with
// fault hooks. All methods are safe for concurrent use.
type World struct {
	n      int
	hosts  []string
	meshes []*Mesh
	// pipes[a][b] carries bytes from rank a to rank b.
	pipes [][]*pipe
}

// NewWorld makes n fully connected ranks.
func NewWorld(n int, opts ...Option) (*World, error) {
	if n <= 0 {
		return nil, fmt.Errorf("inmem: world size %d: must be positive", n)
	}
	o := options{pipeBytes: DefaultPipeBytes}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	hosts := make([]string, n)
	switch {
	case o.perHost > 0:
		for i := range hosts {
			hosts[i] = fmt.Sprintf("host%d", i/o.perHost)
		}
	case o.hosts == nil:
		for i := range hosts {
			hosts[i] = "host0"
		}
	case len(o.hosts) != n:
		return nil, fmt.Errorf("inmem: WithHosts got %d hosts for %d ranks", len(o.hosts), n)
	default:
		copy(hosts, o.hosts)
	}

	w := &World{n: n, hosts: hosts, pipes: make([][]*pipe, n)}
	for a := range n {
		w.pipes[a] = make([]*pipe, n)
		for b := range n {
			if a != b {
				w.pipes[a][b] = newPipe(o.pipeBytes)
			}
		}
	}
	w.meshes = make([]*Mesh, n)
	for a := range n {
		m := &Mesh{w: w, rank: a, links: make([]transport.Link, n)}
		for b := range n {
			if a == b {
				continue
			}
			l := &Link{
				ep:   endpoint{peer: b, host: hosts[b]},
				out:  w.pipes[a][b],
				in:   w.pipes[b][a],
				size: o.pipeBytes,
			}
			switch {
			case o.duplex && o.recvReducer:
				m.links[b] = &duplexReducerLink{duplexLink{l}}
			case o.duplex:
				m.links[b] = &duplexLink{l}
			case o.recvReducer:
				m.links[b] = &reducerLink{l}
			default:
				m.links[b] = l
			}
			m.own = append(m.own, l)
		}
		w.meshes[a] = m
	}
	return w, nil
}

// MustWorld is NewWorld for tests with fixed, valid arguments; it panics on
// an error.
func MustWorld(n int, opts ...Option) *World {
	w, err := NewWorld(n, opts...)
	if err != nil {
		panic(err)
	}
	return w
}

// Size is the number of ranks.
func (w *World) Size() int { return w.n }

// Mesh is rank's view of the world.
func (w *World) Mesh(rank int) *Mesh { return w.meshes[rank] }

// Meshes returns every rank's mesh, indexed by rank.
func (w *World) Meshes() []transport.Mesh {
	out := make([]transport.Mesh, w.n)
	for i, m := range w.meshes {
		out[i] = m
	}
	return out
}

// Close closes every mesh.
func (w *World) Close() error {
	for _, m := range w.meshes {
		_ = m.Close()
	}
	return nil
}

func (w *World) check(ranks ...int) {
	for _, r := range ranks {
		if r < 0 || r >= w.n {
			panic(fmt.Sprintf("inmem: rank %d out of range [0,%d)", r, w.n))
		}
	}
}

// Delay makes every Send between a and b (both directions) wait d first.
func (w *World) Delay(a, b int, d time.Duration) {
	w.check(a, b)
	w.pipes[a][b].delay.Store(int64(d))
	w.pipes[b][a].delay.Store(int64(d))
}

// Cut breaks the link between a and b: blocked and later calls on both
// sides fail with ErrPeerLost, and bytes in flight are lost.
func (w *World) Cut(a, b int) {
	w.check(a, b)
	for _, p := range []*pipe{w.pipes[a][b], w.pipes[b][a]} {
		p.event(func() { p.cut = true })
	}
}

// CutAfter cuts the link between a and b once n more bytes have travelled
// from a to b.
func (w *World) CutAfter(a, b int, n int64) {
	w.check(a, b)
	bud := &budget{fire: func() { w.Cut(a, b) }}
	bud.left.Store(n)
	p := w.pipes[a][b]
	p.mu.Lock()
	p.budget = bud
	p.mu.Unlock()
}

// Kill simulates the crash of rank: all its links are cut (its peers see
// ErrPeerLost) and its own calls fail with ErrClosed.
func (w *World) Kill(rank int) {
	w.check(rank)
	for _, l := range w.meshes[rank].own {
		l.ep.closed.Store(true)
	}
	for b := range w.n {
		if b != rank {
			w.Cut(rank, b)
		}
	}
}

// KillAfter kills rank once it has sent n more bytes in total over all its
// links.
func (w *World) KillAfter(rank int, n int64) {
	w.check(rank)
	bud := &budget{fire: func() { w.Kill(rank) }}
	bud.left.Store(n)
	for b := range w.n {
		if b == rank {
			continue
		}
		p := w.pipes[rank][b]
		p.mu.Lock()
		p.budget = bud
		p.mu.Unlock()
	}
}

// Mesh is one rank's transport.Mesh.
type Mesh struct {
	w     *World
	rank  int
	links []transport.Link
	own   []*Link
	once  sync.Once
}

var _ transport.Mesh = (*Mesh)(nil)

// Rank is this mesh's rank.
func (m *Mesh) Rank() int { return m.rank }

// Size is the world size.
func (m *Mesh) Size() int { return m.w.n }

// Link returns the link to peer; nil for the mesh's own rank or a rank out
// of range.
func (m *Mesh) Link(peer int) transport.Link {
	if peer < 0 || peer >= m.w.n {
		return nil
	}
	return m.links[peer]
}

// Host returns peer's host name ("" for a rank out of range).
func (m *Mesh) Host(peer int) string {
	if peer < 0 || peer >= m.w.n {
		return ""
	}
	return m.w.hosts[peer]
}

// Close closes every link of this rank. Idempotent.
func (m *Mesh) Close() error {
	m.once.Do(func() {
		for _, l := range m.own {
			_ = l.Close()
		}
	})
	return nil
}

// Link is one rank's end of an in-memory link. It implements
// transport.Link and transport.Buffered.
type Link struct {
	ep   endpoint
	out  *pipe
	in   *pipe
	size int
	once sync.Once
}

var (
	_ transport.Link            = (*Link)(nil)
	_ transport.Buffered        = (*Link)(nil)
	_ transport.RecvReducer     = (*reducerLink)(nil)
	_ transport.Duplex          = (*duplexLink)(nil)
	_ transport.DuplexReducer   = (*duplexReducerLink)(nil)
	_ transport.DuplexForwarder = (*duplexReducerLink)(nil)
	_ transport.RecvReducer     = (*duplexReducerLink)(nil)
)

// Send writes all of p, blocking while the pipe is full.
func (l *Link) Send(ctx context.Context, p []byte) error { return l.out.write(ctx, &l.ep, p) }

// Recv reads exactly len(p) bytes.
func (l *Link) Recv(ctx context.Context, p []byte) error { return l.in.read(ctx, &l.ep, p, nil) }

// BufferedBytes is the pipe capacity: a Send that fits completes without a
// receiver when the link is idle.
func (l *Link) BufferedBytes() int { return l.size }

// Close closes this end: local calls fail with ErrClosed; the peer reads
// what was already sent, then gets ErrPeerLost. Idempotent.
func (l *Link) Close() error {
	l.once.Do(func() {
		l.ep.closed.Store(true)
		l.out.event(func() { l.out.wClosed = true })
		l.in.event(func() { l.in.rClosed = true })
	})
	return nil
}

// reducerLink adds transport.RecvReducer to a Link.
type reducerLink struct{ *Link }

// RecvReduce receives len(dst) bytes, handing them to fn straight from the
// pipe's memory.
func (l *reducerLink) RecvReduce(ctx context.Context, dst []byte, fn func(dst, src []byte)) error {
	return l.in.read(ctx, &l.ep, dst, fn)
}

// duplexLink adds transport.Duplex to a Link.
type duplexLink struct{ *Link }

// TrySend writes what fits in the pipe now.
func (l *duplexLink) TrySend(p []byte) (int, error) { return l.out.writeSome(&l.ep, p) }

// TryRecv reads what the pipe holds now.
func (l *duplexLink) TryRecv(p []byte) (int, error) { return l.in.readSome(&l.ep, p, nil) }

// Await waits for bytes to read (recvBytes > 0), space to write (send),
// an event on either pipe, ctx or the timeout.
func (l *duplexLink) Await(ctx context.Context, recvBytes int, send bool, timeout time.Duration) error {
	if err := ctx.Err(); err != nil {
		return l.ep.fail("poll", err)
	}
	var data, space chan struct{}
	if recvBytes > 0 {
		data = l.in.dataReady
	}
	if send {
		space = l.out.spaceReady
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-data:
	case <-space:
	case <-l.in.done:
	case <-l.out.done:
	case <-t.C:
	case <-ctx.Done():
		return l.ep.fail("poll", ctx.Err())
	}
	return nil
}

// duplexReducerLink is a duplexLink that also reduces from the pipe's
// memory, blocking or not.
type duplexReducerLink struct{ duplexLink }

// RecvReduce is reducerLink's.
func (l *duplexReducerLink) RecvReduce(ctx context.Context, dst []byte, fn func(dst, src []byte)) error {
	return l.in.read(ctx, &l.ep, dst, fn)
}

// TryRecvReduce hands what the pipe holds now, up to len(dst), to fn.
func (l *duplexReducerLink) TryRecvReduce(dst []byte, fn func(dst, src []byte)) (int, error) {
	return l.in.readSome(&l.ep, dst, fn)
}

// TryRecvReduceSend hands what the pipe holds now, in whole units up to
// len(dst) and to the free space of the outgoing pipe, to fn, then writes
// what fn put in out: one contiguous run of the ring per call.
func (l *duplexReducerLink) TryRecvReduceSend(dst []byte, unit int, fn func(dst, src, out []byte)) (int, error) {
	k := min(len(dst), l.out.space())
	var out []byte
	n, err := l.in.readUnits(&l.ep, dst[:k], max(unit, 1), func(d, s []byte) {
		out = make([]byte, len(d))
		fn(d, s, out)
	})
	if err != nil || n == 0 {
		return n, err
	}
	// Only this goroutine writes: the space seen above is still there, and
	// a short write is an injected fault, which writeSome then reports.
	w, err := l.out.writeSome(&l.ep, out)
	if err == nil && w < n {
		if err = l.out.writeErr(&l.ep); err == nil {
			err = l.ep.fail("send", fmt.Errorf("%w: %d of %d forwarded bytes written", transport.ErrPeerLost, w, n))
		}
	}
	return n, err
}
