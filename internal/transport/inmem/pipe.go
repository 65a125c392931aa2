package inmem

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorovod/gorovod/internal/transport"
)

// pipe is one direction of a link: a bounded ring of bytes with exactly one
// writer and one reader. Bytes are copied outside the lock (the writer only
// touches free space, the reader only filled space), so a sender and a
// receiver on the same pipe overlap like the two ends of a socket.
type pipe struct {
	mu      sync.Mutex
	buf     []byte
	r, n    int  // read position and filled bytes
	wClosed bool // the writing endpoint was closed: reader drains, then ErrPeerLost
	rClosed bool // the reading endpoint was closed: writer gets ErrPeerLost
	cut     bool // fault: both ends get ErrPeerLost at once
	// budget, when set, counts the bytes that may still pass before a
	// CutAfter/KillAfter fault fires; it may be shared by several pipes.
	budget *budget

	dataReady  chan struct{} // cap 1: the reader may find bytes
	spaceReady chan struct{} // cap 1: the writer may find space
	done       chan struct{} // closed on the first close or cut
	doneOnce   sync.Once

	delay atomic.Int64 // nanoseconds each Send waits before writing
}

func newPipe(capacity int) *pipe {
	return &pipe{
		buf:        make([]byte, capacity),
		dataReady:  make(chan struct{}, 1),
		spaceReady: make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// event marks a state change that ends all waiting on this pipe.
func (p *pipe) event(f func()) {
	p.mu.Lock()
	f()
	p.mu.Unlock()
	p.doneOnce.Do(func() { close(p.done) })
}

// endpoint is the state the two pipes of a link share on one side.
type endpoint struct {
	peer   int
	host   string
	closed atomic.Bool
}

func (e *endpoint) fail(op string, err error) error {
	return &transport.PeerError{Rank: e.peer, Host: e.host, Op: op, Err: err}
}

// wait blocks until ch is signalled, the pipe has an event or ctx is done.
func wait(ctx context.Context, ch, done chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pipe) write(ctx context.Context, e *endpoint, src []byte) error {
	if err := ctx.Err(); err != nil {
		return e.fail("send", err)
	}
	if d := time.Duration(p.delay.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return e.fail("send", ctx.Err())
		case <-p.done:
			t.Stop()
		}
	}
	if len(src) == 0 {
		return p.writeErr(e)
	}
	for len(src) > 0 {
		k, err := p.writeSome(e, src)
		if err != nil {
			return err
		}
		if k == 0 {
			if err := wait(ctx, p.spaceReady, p.done); err != nil {
				return e.fail("send", err)
			}
			continue
		}
		src = src[k:]
	}
	// Every byte is in the pipe: like a TCP send into the socket buffer,
	// it succeeded even if the reader closes now (it may have read them
	// already: the last message before a coordinated shutdown). A cut
	// (a crash) still fails it.
	return p.cutErr(e)
}

// cutErr is the error of a link cut (a crash of either side), if any.
func (p *pipe) cutErr(e *endpoint) error {
	p.mu.Lock()
	cut := p.cut
	p.mu.Unlock()
	if cut {
		return e.fail("send", fmt.Errorf("%w: link cut", transport.ErrPeerLost))
	}
	return nil
}

// writeErr is the error a write would meet now (closed, cut), if any.
func (p *pipe) writeErr(e *endpoint) error {
	_, err := p.writeSome(e, nil)
	return err
}

// writeSome copies what fits of src into the ring without waiting.
func (p *pipe) writeSome(e *endpoint, src []byte) (int, error) {
	p.mu.Lock()
	switch {
	case e.closed.Load():
		p.mu.Unlock()
		return 0, e.fail("send", transport.ErrClosed)
	case p.cut:
		p.mu.Unlock()
		return 0, e.fail("send", fmt.Errorf("%w: link cut", transport.ErrPeerLost))
	case p.rClosed:
		p.mu.Unlock()
		return 0, e.fail("send", fmt.Errorf("%w: peer closed the link", transport.ErrPeerLost))
	}
	k := min(len(p.buf)-p.n, len(src))
	if k == 0 {
		p.mu.Unlock()
		return 0, nil
	}
	var trip func()
	if p.budget != nil {
		k, trip = p.budget.take(k)
	}
	w := (p.r + p.n) % len(p.buf)
	p.mu.Unlock()

	// Free space may wrap around the end of the ring.
	c := copy(p.buf[w:], src[:k])
	copy(p.buf, src[c:k])

	p.mu.Lock()
	p.n += k
	p.mu.Unlock()
	signal(p.dataReady)
	if trip != nil {
		trip()
	}
	if k == 0 { // the fault fired: report it
		return 0, p.writeErr(e)
	}
	return k, nil
}

// read fills dst; with fn it hands pieces of the ring to fn instead of
// copying (RecvReduce).
func (p *pipe) read(ctx context.Context, e *endpoint, dst []byte, fn func(dst, src []byte)) error {
	if err := ctx.Err(); err != nil {
		return e.fail("recv", err)
	}
	for len(dst) > 0 {
		k, err := p.readSome(e, dst, fn)
		if err != nil {
			return err
		}
		if k == 0 {
			if err := wait(ctx, p.dataReady, p.done); err != nil {
				return e.fail("recv", err)
			}
			continue
		}
		dst = dst[k:]
	}
	_, err := p.readSome(e, nil, nil)
	return err
}

// space is the number of bytes a write would take now.
func (p *pipe) space() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.buf) - p.n
}

// readUnits is readSome rounded down to whole units: nothing when the
// contiguous run holds less than one.
func (p *pipe) readUnits(e *endpoint, dst []byte, unit int, fn func(dst, src []byte)) (int, error) {
	p.mu.Lock()
	k := min(p.n, len(dst), len(p.buf)-p.r) / unit * unit
	p.mu.Unlock()
	return p.readSome(e, dst[:k], fn)
}

// readSome takes what the ring holds, up to len(dst) (only the contiguous
// run up to the end of the ring), without waiting.
func (p *pipe) readSome(e *endpoint, dst []byte, fn func(dst, src []byte)) (int, error) {
	p.mu.Lock()
	switch {
	case e.closed.Load():
		p.mu.Unlock()
		return 0, e.fail("recv", transport.ErrClosed)
	case p.cut:
		p.mu.Unlock()
		return 0, e.fail("recv", fmt.Errorf("%w: link cut", transport.ErrPeerLost))
	}
	if len(dst) == 0 {
		p.mu.Unlock()
		return 0, nil
	}
	if p.n == 0 {
		closed := p.wClosed
		p.mu.Unlock()
		if closed {
			return 0, e.fail("recv", fmt.Errorf("%w: peer closed the link", transport.ErrPeerLost))
		}
		return 0, nil
	}
	k := min(p.n, len(dst), len(p.buf)-p.r)
	r := p.r
	p.mu.Unlock()

	if fn != nil {
		fn(dst[:k], p.buf[r:r+k])
	} else {
		copy(dst[:k], p.buf[r:r+k])
	}

	p.mu.Lock()
	p.r = (p.r + k) % len(p.buf)
	p.n -= k
	p.mu.Unlock()
	signal(p.spaceReady)
	return k, nil
}

// budget is a byte allowance shared by the pipes a fault watches.
type budget struct {
	left atomic.Int64
	fire func()
	once sync.Once
}

// take grants up to k bytes; when the allowance is used up it returns the
// fault to fire (once, after the granted bytes are written).
func (b *budget) take(k int) (int, func()) {
	for {
		left := b.left.Load()
		if left <= 0 {
			return 0, b.trigger
		}
		g := min(int64(k), left)
		if b.left.CompareAndSwap(left, left-g) {
			if left-g == 0 {
				return int(g), b.trigger
			}
			return int(g), nil
		}
	}
}

func (b *budget) trigger() { b.once.Do(b.fire) }
