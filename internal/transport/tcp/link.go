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

	"golang.org/x/sys/unix"

	"github.com/gorovod/gorovod/internal/transport"
)

// SocketBufferBytes is the send buffer asked of the kernel for every data
// connection (Linux doubles it for its bookkeeping). Not larger: on
// loopback a 4 MiB buffer measured 15-20% slower at 16 and 64 MiB, the
// bytes in flight falling out of the cache before the receiver copies them;
// about 1 MiB in flight still covers the bandwidth-delay product of a
// datacenter link (25 Gb/s at 300 us). The receive buffer is left to the
// kernel's autotuning, which also measured faster than a fixed one.
const SocketBufferBytes = 512 << 10

// maxLowat caps the SO_RCVLOWAT that Await sets: waking once a
// segment's worth of bytes is there, not for every packet.
const maxLowat = 1 << 20

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

	raw    syscall.RawConn // nil when conn is not a socket
	sndbuf int             // send buffer asked of the kernel (SetSendBuffer)
	local  bool            // the peer is on this host (same or loopback address)
	lowat  int             // SO_RCVLOWAT in force (0 or 1: the default); receiver's
}

var (
	_ transport.Link     = (*Link)(nil)
	_ transport.Buffered = (*Link)(nil)
	_ transport.Duplex   = (*Link)(nil)
)

// New wraps conn as the link to peer rank on host and tunes the socket
// (TCP_NODELAY, keepalive, a SocketBufferBytes send buffer). The Link owns
// conn from now on.
func New(conn net.Conn, rank int, host string) *Link {
	l := &Link{conn: conn, rank: rank, host: host, sndbuf: SocketBufferBytes}
	l.rd.set = conn.SetReadDeadline
	l.wr.set = conn.SetWriteDeadline
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		// A peer host that dies without a reset (power loss, partition) is
		// noticed in about Idle + Interval*Count instead of minutes.
		_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3})
		_ = tc.SetWriteBuffer(SocketBufferBytes)
		l.buffered = sendBufferBytes(tc)
	}
	if sc, ok := conn.(syscall.Conn); ok {
		l.raw, _ = sc.SyscallConn()
	}
	l.local = sameHost(conn.LocalAddr(), conn.RemoteAddr())
	return l
}

// sameHost reports whether a connection between a and b stays on this host:
// a loopback peer, or the peer's address is this end's own.
func sameHost(a, b net.Addr) bool {
	la, ok1 := a.(*net.TCPAddr)
	ra, ok2 := b.(*net.TCPAddr)
	if !ok1 || !ok2 {
		return false
	}
	return ra.IP.IsLoopback() || ra.IP.Equal(la.IP)
}

// LocalPeer reports whether the peer runs on this host, where the bytes in
// flight need not cover a network's bandwidth-delay product.
func (l *Link) LocalPeer() bool { return l.local }

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
		if l.lowat > 1 {
			// The netpoller must see readiness for any byte again.
			if err := l.setLowat(1); err != nil {
				return err
			}
		}
		_, err := io.ReadFull(l.conn, p)
		return err
	})
}

// TrySend implements transport.Duplex: it writes what the socket's send
// buffer takes now.
func (l *Link) TrySend(p []byte) (int, error) {
	return l.try("send", func(fd int) (int, error) { return unix.SendmsgN(fd, p, nil, nil, unix.MSG_NOSIGNAL) }, len(p))
}

// TryRecv implements transport.Duplex: it reads what has arrived.
func (l *Link) TryRecv(p []byte) (int, error) {
	return l.try("recv", func(fd int) (int, error) { return unix.Read(fd, p) }, len(p))
}

// try runs one nonblocking system call on the socket (holding the fd, so a
// concurrent Close cannot reuse its number). EAGAIN is (0, nil); a read of
// 0 bytes is the peer's FIN.
func (l *Link) try(op string, call func(fd int) (int, error), want int) (int, error) {
	if l.closed.Load() {
		return 0, l.fail(op, transport.ErrClosed)
	}
	if l.raw == nil {
		return 0, l.fail(op, errNotSocket)
	}
	var n int
	var err error
	cerr := l.raw.Control(func(fd uintptr) {
		for {
			n, err = call(int(fd))
			if err != unix.EINTR {
				return
			}
		}
	})
	switch {
	case cerr != nil:
		return 0, l.fail(op, transport.ErrClosed)
	case err == unix.EAGAIN:
		return 0, nil
	case err != nil:
		if l.closed.Load() {
			return 0, l.fail(op, transport.ErrClosed)
		}
		return 0, l.fail(op, fmt.Errorf("%w: %v", transport.ErrPeerLost, err))
	case n == 0 && want > 0 && op == "recv":
		return 0, l.fail(op, fmt.Errorf("%w: connection closed by peer", transport.ErrPeerLost))
	}
	return max(n, 0), nil
}

// Await implements transport.Duplex with poll(2). Waiting to read sets
// SO_RCVLOWAT to the bytes wanted (at most maxLowat), so the socket turns
// readable once a whole segment is there; Recv puts it back.
func (l *Link) Await(ctx context.Context, recvBytes int, send bool, timeout time.Duration) error {
	if l.closed.Load() {
		return l.fail("poll", transport.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return l.fail("poll", err)
	}
	if l.raw == nil {
		return l.fail("poll", errNotSocket)
	}
	var events int16
	if recvBytes > 0 {
		events |= unix.POLLIN
		if want := min(recvBytes, maxLowat); want != l.lowat {
			if err := l.setLowat(want); err != nil {
				return l.fail("poll", err)
			}
		}
	}
	if send {
		events |= unix.POLLOUT
	}
	if events == 0 {
		return nil
	}
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, max(time.Until(d), 0))
	}
	ms := max(int(timeout/time.Millisecond), 1)
	cerr := l.raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
		_, _ = unix.Poll(fds, ms) // errors and hang-ups surface in the next Try call
	})
	if cerr != nil || l.closed.Load() {
		return l.fail("poll", transport.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return l.fail("poll", err)
	}
	return nil
}

// SetSendBuffer asks the kernel for an n-byte send buffer (SO_SNDBUF) and
// returns the size asked before, for the caller to put back. Bytes already
// queued stay queued; a smaller buffer only makes later sends wait sooner.
// BufferedBytes keeps the figure of New: put the buffer back before the
// link is used outside the operation that changed it.
func (l *Link) SetSendBuffer(n int) (int, error) {
	if l.closed.Load() {
		return 0, l.fail("setsockopt", transport.ErrClosed)
	}
	if l.raw == nil {
		return 0, l.fail("setsockopt", errNotSocket)
	}
	var err error
	cerr := l.raw.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, n)
	})
	if cerr != nil {
		return 0, l.fail("setsockopt", transport.ErrClosed)
	}
	if err != nil {
		return 0, l.fail("setsockopt", fmt.Errorf("%w: SO_SNDBUF: %v", transport.ErrPeerLost, err))
	}
	prev := l.sndbuf
	l.sndbuf = n
	return prev, nil
}

func (l *Link) setLowat(n int) error {
	var err error
	cerr := l.raw.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVLOWAT, n)
	})
	if cerr != nil {
		return transport.ErrClosed
	}
	if err != nil {
		return fmt.Errorf("%w: SO_RCVLOWAT: %v", transport.ErrPeerLost, err)
	}
	l.lowat = n
	return nil
}

var errNotSocket = errors.New("connection is not a socket")

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
