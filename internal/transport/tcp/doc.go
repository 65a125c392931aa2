// Package tcp is the transport.Link between workers on different hosts (and
// on one host when shared memory is disabled): one TCP connection per peer
// pair, authenticated by internal/transport/handshake before it is wrapped.
//
// The socket has TCP_NODELAY (collectives send latency-bound small messages),
// a send buffer of SocketBufferBytes (the receive buffer is autotuned)
// and keepalive probes tuned so that a peer host that vanishes without a
// reset is noticed in about 25 s. Context cancellation does not cost a
// goroutine per call: context.AfterFunc moves the connection's deadline
// into the past when ctx is done.
//
// A Link is also a transport.Duplex: TrySend and TryRecv are nonblocking
// system calls on the socket (holding the fd against a concurrent Close),
// and Await is poll(2) with SO_RCVLOWAT set to the bytes the caller waits
// for, bounded by a timeout so ctx is checked; Recv puts SO_RCVLOWAT back
// to one byte before it uses the netpoller.
//
// Errors are *transport.PeerError naming the peer's rank, host and the
// operation; the peer closing or resetting the connection is ErrPeerLost, a
// local Close is ErrClosed, a done ctx wraps ctx.Err(). After an error the
// link is unusable (a partial message may have been sent).
package tcp
