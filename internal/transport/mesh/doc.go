// Package mesh builds the transport.Mesh of one rank: a link to every other
// rank of the world, from the peer table rendezvous returns.
//
// Who connects: the lower rank dials the higher rank (rank r dials r+1..n-1
// and accepts 0..r-1 on its listener), one connection per pair. Dialing
// retries with backoff (5 ms doubling to 500 ms) until ctx ends, because a
// peer may not be listening yet. Every connection is authenticated with
// internal/transport/handshake (job secret, epoch, ranks, purpose); accepted
// connections are handshaken concurrently under HandshakeTimeout, so
// foreign, stale or silent peers are refused (and logged) while Build keeps
// waiting for the legitimate ones. A refusal seen by a dialer is fatal: the
// peer runs with another secret or epoch, and retrying cannot help.
//
// What kind of link: peers with equal Host get a shared-memory link (the TCP
// connection is kept beside it to notice the peer's death) unless
// DisableShm; all others a TCP link.
//
// Ownership: Build does not close the listener (it stops its Accept with a
// past deadline); the returned Mesh owns every link, and Mesh.Close closes
// them, ending their goroutines and unmapping shared memory.
package mesh
