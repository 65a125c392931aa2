//go:build linux

package shm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/gorovod/gorovod/internal/transport"
)

// Link is a transport.Link to a peer on the same host through two mapped
// rings, one per direction, with the TCP connection the two sides set it up
// over kept open beside it: when it closes, the peer is gone.
type Link struct {
	peer int
	host string
	conn net.Conn
	tx   *ring // the peer's file: this side sends into it
	rx   *ring // this side's file: the peer sends into it
	wait WaitPolicy

	txHead uint64 // sender-local copy of tx.head
	rxTail uint64 // receiver-local copy of rx.tail
	rxOff  int    // bytes of slot rxTail already consumed

	// Send and Recv hold mu shared; Close takes it exclusively before
	// unmapping, so no call touches memory that is gone.
	mu     sync.RWMutex
	closed atomic.Bool

	gone       atomic.Bool
	goneReason atomic.Pointer[string]
	watchDone  chan struct{}

	closeOnce sync.Once
	closeErr  error
}

var (
	_ transport.Link        = (*Link)(nil)
	_ transport.Buffered    = (*Link)(nil)
	_ transport.RecvReducer = (*Link)(nil)
)

// newLink starts the watcher of conn; the Link owns conn and both rings.
func newLink(conn net.Conn, peer int, host string, tx, rx *ring, wait WaitPolicy) *Link {
	l := &Link{peer: peer, host: host, conn: conn, tx: tx, rx: rx, wait: wait, watchDone: make(chan struct{})}
	go l.watch()
	return l
}

// watch blocks reading the control connection: nothing is ever sent on it,
// so any return means the peer closed it, exited or was killed.
func (l *Link) watch() {
	defer close(l.watchDone)
	var b [1]byte
	n, err := l.conn.Read(b[:])
	if l.closed.Load() {
		return
	}
	reason := "the peer closed the link or exited"
	switch {
	case n > 0:
		reason = "unexpected data on the shared-memory control connection"
	case err != nil && !errors.Is(err, io.EOF):
		reason = "control connection: " + err.Error()
	}
	l.goneReason.Store(&reason)
	l.gone.Store(true)
	l.wakeSelf()
}

// Rank is the peer's rank.
func (l *Link) Rank() int { return l.peer }

// BufferedBytes implements transport.Buffered: a Send that fits in the
// peer's ring completes without waiting, when the ring is drained.
func (l *Link) BufferedBytes() int {
	return int(l.tx.slots) * l.tx.slotBytes
}

// Send copies p into the peer's ring, a slot at a time.
func (l *Link) Send(ctx context.Context, p []byte) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if err := l.start(ctx, "send"); err != nil {
		return err
	}
	done := ctx.Done()
	for off := 0; off < len(p); {
		var b backoff
		for {
			free, err := l.slotFree()
			if err != nil {
				return err
			}
			if free {
				break
			}
			if err := l.blocked(ctx, done, &b, "send"); err != nil {
				return err
			}
		}
		off += l.put(p[off:])
	}
	return nil
}

// slotFree reports whether the peer's ring has a free slot for this side
// to fill; a tail past the head is a corrupt ring.
func (l *Link) slotFree() (bool, error) {
	tail := l.tx.loadTail()
	if tail > l.txHead {
		return false, l.fail("send", fmt.Errorf("%w: shm tail %d ahead of head %d", transport.ErrMalformed, tail, l.txHead))
	}
	return l.txHead-tail < l.tx.slots, nil
}

// slotReady reports whether this side's ring has a published slot to take;
// a head further ahead than the ring holds is a corrupt ring.
func (l *Link) slotReady() (bool, error) {
	head := l.rx.loadHead()
	if head-l.rxTail > l.rx.slots {
		return false, l.fail("recv", fmt.Errorf("%w: shm head %d out of range for tail %d", transport.ErrMalformed, head, l.rxTail))
	}
	return head != l.rxTail, nil
}

// put copies up to a slot of p into the next free slot of the peer's ring
// (the caller saw one free) and publishes it.
func (l *Link) put(p []byte) int {
	k := min(len(p), l.tx.slotBytes)
	copy(l.tx.slot(l.txHead), p[:k])
	l.publish(k)
	return k
}

// publish makes the next slot of the peer's ring, holding k bytes, the
// peer's to read.
func (l *Link) publish(k int) {
	r := l.tx
	atomic.StoreUint32(&r.lens[l.txHead%r.slots], uint32(k))
	l.txHead++
	// Publishes data and length. A swap, not a store: a full barrier even
	// under the race detector, whose atomic stores are only release stores,
	// so the read of the sleep flag below cannot pass it.
	atomic.SwapUint64(r.head, l.txHead)
	wake(r.rxSeq, r.rxSleep)
}

// Recv copies len(p) bytes out of this side's ring.
func (l *Link) Recv(ctx context.Context, p []byte) error {
	return l.recv(ctx, p, nil)
}

// RecvReduce implements transport.RecvReducer: fn sees the bytes where they
// sit in the ring, without a copy out.
func (l *Link) RecvReduce(ctx context.Context, dst []byte, fn func(dst, src []byte)) error {
	return l.recv(ctx, dst, fn)
}

func (l *Link) recv(ctx context.Context, p []byte, fn func(dst, src []byte)) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if err := l.start(ctx, "recv"); err != nil {
		return err
	}
	done := ctx.Done()
	for off := 0; off < len(p); {
		var b backoff
		for {
			ready, err := l.slotReady()
			if err != nil {
				return err
			}
			if ready {
				break
			}
			if err := l.blocked(ctx, done, &b, "recv"); err != nil {
				return err
			}
		}
		k, err := l.take(p[off:], fn)
		if err != nil {
			return err
		}
		off += k
	}
	return nil
}

// take consumes up to len(p) bytes of the oldest published slot (the caller
// saw head ahead of rxTail), copying them or handing them to fn, and frees
// the slot once it is used up.
func (l *Link) take(p []byte, fn func(dst, src []byte)) (int, error) {
	src, err := l.oldest()
	if err != nil {
		return 0, err
	}
	k := min(len(src), len(p))
	if fn != nil {
		fn(p[:k], src[:k])
	} else {
		copy(p[:k], src[:k])
	}
	l.consume(k, len(src))
	return k, nil
}

// oldest is what is left unread of the oldest published slot of this
// side's ring (the caller saw one published).
func (l *Link) oldest() ([]byte, error) {
	r := l.rx
	n := int(atomic.LoadUint32(&r.lens[l.rxTail%r.slots]))
	if n <= 0 || n > r.slotBytes || l.rxOff >= n {
		return nil, l.fail("recv", fmt.Errorf("%w: shm slot length %d (slot size %d, %d consumed)", transport.ErrMalformed, n, r.slotBytes, l.rxOff))
	}
	return r.slot(l.rxTail)[l.rxOff:n], nil
}

// consume marks k more of the left bytes of the oldest slot (oldest's
// length) read, freeing the slot for the peer once all of it is.
func (l *Link) consume(k, left int) {
	r := l.rx
	l.rxOff += k
	if k == left {
		l.rxOff = 0
		l.rxTail++
		atomic.SwapUint64(r.tail, l.rxTail) // frees the slot; a swap as in Send
		wake(r.txSeq, r.txSleep)
	}
}

func (l *Link) start(ctx context.Context, op string) error {
	if l.closed.Load() {
		return l.fail(op, transport.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return l.fail(op, err)
	}
	return nil
}

// blocked runs one step of waiting: it reports a closed link, a lost peer
// or a done ctx, and otherwise pauses per the wait policy, ending up
// blocked in the kernel until the peer wakes it. A lost peer is reported
// only after the caller has looked once more, so bytes the peer published
// before it went away are still delivered.
func (l *Link) blocked(ctx context.Context, done <-chan struct{}, b *backoff, op string) error {
	if l.closed.Load() {
		return l.fail(op, transport.ErrClosed)
	}
	if l.gone.Load() {
		if b.n >= 0 {
			b.n = -1 // look once more
			return nil
		}
		return l.lost(op)
	}
	if done != nil {
		select {
		case <-done:
			return l.fail(op, ctx.Err())
		default:
		}
	}
	if b.pause(&l.wait) {
		l.block(op == "recv")
	}
	return nil
}

// block sleeps in the kernel until the peer (or Close, or the loss of the
// peer) wakes it, or BlockTimeout passes; see the protocol in wait.go.
func (l *Link) block(recv bool) {
	seq, flag := l.tx.txSeq, l.tx.txSleep
	if recv {
		seq, flag = l.rx.rxSeq, l.rx.rxSleep
	}
	s := atomic.LoadUint32(seq)
	atomic.SwapUint32(flag, 1) // full barrier before the re-check (see Send)
	stuck := !l.closed.Load() && !l.gone.Load()
	if stuck && recv {
		stuck = l.rx.loadHead() == l.rxTail
	} else if stuck {
		stuck = l.txHead-l.tx.loadTail() >= l.tx.slots
	}
	if stuck && !futexWait(seq, s, l.wait.BlockTimeout) {
		nanosleep(maxNanosleep) // no futex (some sandboxes): sleep instead
	}
	atomic.StoreUint32(flag, 0)
}

// wakeSelf wakes this side's own blocked calls (Close, peer lost); the
// closed or gone flag is stored before.
func (l *Link) wakeSelf() {
	forceWake(l.rx.rxSeq)
	forceWake(l.tx.txSeq)
}

func (l *Link) fail(op string, err error) error {
	return &transport.PeerError{Rank: l.peer, Host: l.host, Op: op, Err: err}
}

// Close closes the control connection (the peer sees this side go), waits
// for calls in flight to notice, and unmaps both rings. Idempotent.
func (l *Link) Close() error {
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		err := l.conn.Close()
		<-l.watchDone
		l.wakeSelf()
		l.mu.Lock()
		err = errors.Join(err, l.tx.unmap(), l.rx.unmap())
		l.mu.Unlock()
		l.closeErr = err
	})
	return l.closeErr
}
