package tcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorovod/gorovod/internal/transport"
)

// SocketBufferBytes is the send and receive buffer asked of the kernel for
// every data connection (capped by net.core.wmem_max / rmem_max).
const SocketBufferBytes = 4 << 20

// Link is a transport.Link over one TCP connection, already authenticated
// by the handshake.
type Link struct {
	conn     net.Conn
	rank     int
	host     string
	buffered int

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error

	rd, wr deadline
}

var (
	_ transport.Link     = (*Link)(nil)
	_ transport.Buffered = (*Link)(nil)
)

// New wraps conn as the link to peer rank on host and tunes the socket
// (TCP_NODELAY, SocketBufferBytes buffers). The Link owns conn from now on.
func New(conn net.Conn, rank int, host string) *Link {
	l := &Link{conn: conn, rank: rank, host: host}
	l.rd.set = conn.SetReadDeadline
	l.wr.set = conn.SetWriteDeadline
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		// A peer host that dies without a reset (power loss, partition) is
		// noticed in about Idle + Interval*Count instead of minutes.
		_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3})
		_ = tc.SetReadBuffer(SocketBufferBytes)
		_ = tc.SetWriteBuffer(SocketBufferBytes)
		l.buffered = sendBufferBytes(tc)
	}
	return l
}

// sendBufferBytes is the data the kernel's send buffer takes without the
// peer reading. Linux reports twice the usable figure (it counts its own
// bookkeeping), so half of the reported value is a conservative bound; the
// peer's receive buffer absorbs more, which is not counted.
func sendBufferBytes(tc *net.TCPConn) int {
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = rc.Control(func(fd uintptr) {
		v, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
		if err == nil {
			n = v / 2
		}
	})
	return n
}

// Rank is the peer's rank.
func (l *Link) Rank() int { return l.rank }

// BufferedBytes implements transport.Buffered: a Send of at most this many
// bytes on an idle link completes without the peer calling Recv.
func (l *Link) BufferedBytes() int { return l.buffered }

// Send writes all of p.
func (l *Link) Send(ctx context.Context, p []byte) error {
	return l.do(ctx, &l.wr, "send", func() error {
		_, err := l.conn.Write(p)
		return err
	})
}

// Recv reads exactly len(p) bytes into p.
func (l *Link) Recv(ctx context.Context, p []byte) error {
	return l.do(ctx, &l.rd, "recv", func() error {
		_, err := io.ReadFull(l.conn, p)
		return err
	})
}

// Close closes the connection; blocked calls return ErrClosed. Idempotent.
func (l *Link) Close() error {
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		l.closeErr = l.conn.Close()
	})
	return l.closeErr
}

// do runs one I/O call under ctx. Instead of a goroutine per call, ctx
// cancellation moves the direction's deadline into the past (AfterFunc
// starts a goroutine only when ctx is actually done).
func (l *Link) do(ctx context.Context, d *deadline, op string, f func() error) error {
	if l.closed.Load() {
		return l.fail(op, transport.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return l.fail(op, err)
	}
	var stop func() bool
	if ctx.Done() != nil {
		stop = d.arm(ctx)
	}
	err := f()
	if stop != nil && !stop() {
		d.disarm() // ctx fired during (or just after) the call
	}
	if err == nil {
		return nil
	}
	switch {
	case l.closed.Load():
		return l.fail(op, transport.ErrClosed)
	case ctx.Err() != nil && errors.Is(err, os.ErrDeadlineExceeded):
		return l.fail(op, ctx.Err())
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return l.fail(op, fmt.Errorf("%w: connection closed by peer", transport.ErrPeerLost))
	}
	return l.fail(op, fmt.Errorf("%w: %v", transport.ErrPeerLost, err))
}

func (l *Link) fail(op string, err error) error {
	return &transport.PeerError{Rank: l.rank, Host: l.host, Op: op, Err: err}
}

// deadline is the ctx binding of one direction of the connection. gen makes
// a late AfterFunc callback (ctx done just as the call finished) a no-op once
// the call has disarmed it, so it cannot poison the next call.
type deadline struct {
	set func(time.Time) error
	mu  sync.Mutex
	gen uint64
}

func (d *deadline) arm(ctx context.Context) func() bool {
	d.mu.Lock()
	gen := d.gen
	d.mu.Unlock()
	return context.AfterFunc(ctx, func() {
		d.mu.Lock()
		if d.gen == gen {
			_ = d.set(time.Unix(1, 0))
		}
		d.mu.Unlock()
	})
}

func (d *deadline) disarm() {
	d.mu.Lock()
	d.gen++
	_ = d.set(time.Time{})
	d.mu.Unlock()
}
