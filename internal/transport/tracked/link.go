package tracked

import (
	"context"
	"time"

	"github.com/gorovod/gorovod/internal/transport"
)

// wrap returns l decorated so that every error passes t.observe, keeping
// the optional capabilities l has (RecvReducer, Duplex, DuplexReducer).
func wrap(l transport.Link, t *Mesh, peer int) transport.Link {
	tl := link{Link: l, t: t, peer: peer}
	rr, reducer := l.(transport.RecvReducer)
	d, duplex := l.(transport.Duplex)
	dr, duplexReducer := l.(transport.DuplexReducer)
	fw, forwarder := l.(transport.DuplexForwarder)
	switch {
	case reducer && forwarder:
		return &forwarderLink{duplexReducerLink{duplexLink{link: tl, d: d}, rr, dr}, fw}
	case reducer && duplexReducer:
		return &duplexReducerLink{duplexLink{link: tl, d: d}, rr, dr}
	case reducer:
		return &reducerLink{link: tl, rr: rr}
	case duplex:
		return &duplexLink{link: tl, d: d}
	}
	return &tl
}

type link struct {
	transport.Link
	t    *Mesh
	peer int
}

func (l *link) Send(ctx context.Context, p []byte) error {
	return l.t.observe(l.peer, l.Link.Send(ctx, p))
}

func (l *link) Recv(ctx context.Context, p []byte) error {
	return l.t.observe(l.peer, l.Link.Recv(ctx, p))
}

// Unwrap returns the decorated link, for a transport's own tuning knobs
// (tcp.Link.SetSendBuffer) that this wrapper does not forward.
func (l *link) Unwrap() transport.Link { return l.Link }

func (l *link) BufferedBytes() int {
	if b, ok := l.Link.(transport.Buffered); ok {
		return b.BufferedBytes()
	}
	return 0
}

type reducerLink struct {
	link
	rr transport.RecvReducer
}

func (l *reducerLink) RecvReduce(ctx context.Context, dst []byte, fn func(dst, src []byte)) error {
	return l.t.observe(l.peer, l.rr.RecvReduce(ctx, dst, fn))
}

type duplexLink struct {
	link
	d transport.Duplex
}

func (l *duplexLink) TrySend(p []byte) (int, error) {
	n, err := l.d.TrySend(p)
	return n, l.t.observe(l.peer, err)
}

func (l *duplexLink) TryRecv(p []byte) (int, error) {
	n, err := l.d.TryRecv(p)
	return n, l.t.observe(l.peer, err)
}

func (l *duplexLink) Await(ctx context.Context, recvBytes int, send bool, timeout time.Duration) error {
	return l.t.observe(l.peer, l.d.Await(ctx, recvBytes, send, timeout))
}

type duplexReducerLink struct {
	duplexLink
	rr transport.RecvReducer
	dr transport.DuplexReducer
}

func (l *duplexReducerLink) RecvReduce(ctx context.Context, dst []byte, fn func(dst, src []byte)) error {
	return l.t.observe(l.peer, l.rr.RecvReduce(ctx, dst, fn))
}

func (l *duplexReducerLink) TryRecvReduce(dst []byte, fn func(dst, src []byte)) (int, error) {
	n, err := l.dr.TryRecvReduce(dst, fn)
	return n, l.t.observe(l.peer, err)
}

type forwarderLink struct {
	duplexReducerLink
	fw transport.DuplexForwarder
}

func (l *forwarderLink) TryRecvReduceSend(dst []byte, unit int, fn func(dst, src, out []byte)) (int, error) {
	n, err := l.fw.TryRecvReduceSend(dst, unit, fn)
	return n, l.t.observe(l.peer, err)
}
