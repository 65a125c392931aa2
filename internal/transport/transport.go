// Package transport defines the links collectives run over. Implementations
// live in subpackages: tcp (across hosts), shm (peers on one host) and inmem
// (tests, with fault hooks).
package transport

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sentinel error kinds. Implementations wrap them with %w so callers can
// branch with errors.Is.
var (
	// ErrPeerLost: the peer closed the link, crashed or stopped answering.
	ErrPeerLost = errors.New("peer lost")
	// ErrAuth: a handshake failed (wrong secret, wrong epoch, unexpected rank).
	ErrAuth = errors.New("handshake refused")
	// ErrClosed: the link or mesh was closed locally.
	ErrClosed = errors.New("link closed")
	// ErrMalformed: bytes that came off the network do not decode.
	ErrMalformed = errors.New("malformed message")
)

// PeerError names the peer an I/O error happened with.
type PeerError struct {
	Rank int    // global rank of the peer
	Host string // host of the peer, if known
	Op   string // "send", "recv", "dial", "accept", "handshake"
	Err  error
}

func (e *PeerError) Error() string {
	host := ""
	if e.Host != "" {
		host = " on " + e.Host
	}
	return fmt.Sprintf("%s with rank %d%s: %v", e.Op, e.Rank, host, e.Err)
}

func (e *PeerError) Unwrap() error { return e.Err }

// Link is a reliable, ordered, full-duplex byte pipe to one peer. Message
// boundaries are not kept: the collective algorithms know how many bytes to
// expect. One goroutine may Send while another Recvs on the same link; two
// concurrent Sends (or two Recvs) are not allowed.
//
// Both calls honour ctx: when it is done they return an error wrapping
// ctx.Err(). After an error the link is unusable.
type Link interface {
	// Send writes all of p.
	Send(ctx context.Context, p []byte) error
	// Recv reads exactly len(p) bytes into p.
	Recv(ctx context.Context, p []byte) error
	// Close releases the link; a blocked Send or Recv returns ErrClosed.
	Close() error
}

// RecvReducer is an optional capability of links whose received bytes sit in
// memory the receiver can read in place (shared memory): RecvReduce receives
// len(dst) bytes and hands them to fn in pieces, fn(dst[off:off+len(src)], src),
// instead of copying them out first. src is valid only during fn.
type RecvReducer interface {
	RecvReduce(ctx context.Context, dst []byte, fn func(dst, src []byte)) error
}

// Buffered is an optional capability: a Send of at most BufferedBytes() bytes
// completes without waiting for the peer to Recv, so a small exchange can be
// written as Send then Recv on one goroutine without deadlock.
type Buffered interface {
	BufferedBytes() int
}

// Duplex is an optional capability of links that can be driven without
// blocking (a nonblocking socket, shared memory): the caller drives both
// directions from one goroutine, as MPI's progress
// engine does, instead of handing sends to another goroutine. TrySend and
// TryRecv move what the kernel takes or has now (0, nil when nothing);
// Await blocks until at least recvBytes can be read (0: not waiting to
// read), or the link can take more data (send), or ctx is done, or timeout
// passed, whichever is first; a lost peer shows in the next Try call. The
// rule of one sender and one receiver at a time still holds: a goroutine
// driving a Duplex link is both.
type Duplex interface {
	TrySend(p []byte) (int, error)
	TryRecv(p []byte) (int, error)
	Await(ctx context.Context, recvBytes int, send bool, timeout time.Duration) error
}

// DuplexReducer is a Duplex whose received bytes sit in memory the
// receiver can read in place (shared memory): TryRecvReduce hands what has
// arrived, up to len(dst), to fn in pieces as RecvReduce does.
type DuplexReducer interface {
	Duplex
	TryRecvReduce(dst []byte, fn func(dst, src []byte)) (int, error)
}

// DuplexForwarder is a DuplexReducer that can also send what it reduces in
// the same pass over the data (a ring step that reduces a segment and
// forwards it): TryRecvReduceSend takes what has arrived, up to len(dst),
// in pieces of a multiple of unit bytes that it can also send now, and
// calls fn(dst[off:off+k], src, out) with len(out) == k; fn reduces src
// into dst and writes the result to out, which the link then sends, after
// everything sent before. It returns the bytes moved and stops at the
// first piece it cannot both receive and send whole (0, nil: none now);
// the caller then receives the rest with TryRecvReduce and sends it later.
type DuplexForwarder interface {
	DuplexReducer
	TryRecvReduceSend(dst []byte, unit int, fn func(dst, src, out []byte)) (int, error)
}

// Mesh is the set of links from one rank to every other rank of a world.
type Mesh interface {
	Rank() int
	Size() int
	// Link returns the link to peer; nil when peer == Rank().
	Link(peer int) Link
	// Host returns the host name of peer as registered at rendezvous.
	Host(peer int) string
	// Close closes every link; it is idempotent.
	Close() error
}
