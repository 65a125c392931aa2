//go:build linux

package shm

import (
	"context"
	"fmt"
	"time"

	"github.com/gorovod/gorovod/internal/transport"
)

var _ transport.DuplexReducer = (*Link)(nil)

// TrySend implements transport.Duplex: it fills the free slots of the
// peer's ring with p and publishes them.
func (l *Link) TrySend(p []byte) (int, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if err := l.usable("send"); err != nil {
		return 0, err
	}
	off := 0
	for off < len(p) {
		free, err := l.slotFree()
		if err != nil || !free {
			return off, err
		}
		off += l.put(p[off:])
	}
	return off, nil
}

// TryRecv implements transport.Duplex: it copies out what has arrived.
func (l *Link) TryRecv(p []byte) (int, error) { return l.tryRecv(p, nil) }

// TryRecvReduce implements transport.DuplexReducer: fn sees what has
// arrived where it sits in the ring.
func (l *Link) TryRecvReduce(dst []byte, fn func(dst, src []byte)) (int, error) {
	return l.tryRecv(dst, fn)
}

func (l *Link) tryRecv(p []byte, fn func(dst, src []byte)) (int, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if err := l.usable("recv"); err != nil {
		return 0, err
	}
	off := 0
	for off < len(p) {
		ready, err := l.slotReady()
		if err != nil {
			return off, err
		}
		if !ready {
			break
		}
		k, err := l.take(p[off:], fn)
		if err != nil {
			return off, err
		}
		off += k
	}
	if off == 0 && len(p) > 0 && l.gone.Load() && l.rx.loadHead() == l.rxTail {
		return 0, l.lost("recv")
	}
	return off, nil
}

// usable reports a closed link; a lost peer only once nothing it published
// is left (the callers check).
func (l *Link) usable(op string) error {
	if l.closed.Load() {
		return l.fail(op, transport.ErrClosed)
	}
	if op == "send" && l.gone.Load() {
		return l.lost(op)
	}
	return nil
}

func (l *Link) lost(op string) error {
	reason := "peer gone"
	if r := l.goneReason.Load(); r != nil {
		reason = *r
	}
	return l.fail(op, fmt.Errorf("%w: %s", transport.ErrPeerLost, reason))
}

// Await implements transport.Duplex. Waiting for one direction blocks on
// that direction's futex (the peer wakes it); waiting for both polls the
// two counters with short sleeps, since a thread can wait on one futex word
// only.
func (l *Link) Await(ctx context.Context, recvBytes int, send bool, timeout time.Duration) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed.Load() {
		return l.fail("poll", transport.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return l.fail("poll", err)
	}
	recv := recvBytes > 0
	switch {
	case !recv && !send:
		return nil
	case recv != send:
		l.block(recv) // bounded by BlockTimeout
	default:
		deadline := time.Now().Add(timeout)
		for d := 10 * time.Microsecond; !l.closed.Load() && !l.gone.Load(); d = min(2*d, maxNanosleep) {
			if l.rx.loadHead() != l.rxTail || l.txHead-l.tx.loadTail() < l.tx.slots || time.Now().After(deadline) {
				break
			}
			nanosleep(d)
		}
	}
	if err := ctx.Err(); err != nil {
		return l.fail("poll", err)
	}
	return nil
}
