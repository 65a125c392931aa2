//go:build linux

package shm

import (
	"context"
	"fmt"
	"time"

	"github.com/gorovod/gorovod/internal/transport"
)

var _ transport.DuplexForwarder = (*Link)(nil)

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

// TryRecvReduceSend implements transport.DuplexForwarder: fn reduces
// what arrived, where it sits in this side's ring, and writes the result
// straight into the next free slot of the peer's ring, one slot a step.
func (l *Link) TryRecvReduceSend(dst []byte, unit int, fn func(dst, src, out []byte)) (int, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if err := l.usable("send"); err != nil {
		return 0, err
	}
	off := 0
	for off < len(dst) {
		ready, err := l.slotReady()
		if err != nil || !ready {
			return off, err
		}
		free, err := l.slotFree()
		if err != nil || !free {
			return off, err
		}
		k, err := l.forward(dst[off:], unit, fn)
		if err != nil || k == 0 {
			return off, err
		}
		off += k
	}
	return off, nil
}

// forward is take and put in one: up to a slot's worth of the oldest
// published slot (whole units only; 0 if less than one is left there)
// goes through fn into the peer's next slot, which is published, then
// the bytes taken are consumed. The caller saw both slots available.
func (l *Link) forward(p []byte, unit int, fn func(dst, src, out []byte)) (int, error) {
	src, err := l.oldest()
	if err != nil {
		return 0, err
	}
	k := min(len(src), len(p), l.tx.slotBytes)
	k -= k % max(unit, 1)
	if k == 0 {
		return 0, nil
	}
	fn(p[:k], src[:k], l.tx.slot(l.txHead)[:k])
	l.publish(k)
	l.consume(k, len(src))
	return k, nil
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
