// Package inmem is an in-process transport for tests: a World of N ranks
// whose links are bounded in-memory byte pipes (a sender blocks while the
// pipe is full, like TCP), full duplex and context-aware.
//
//	w := inmem.MustWorld(4, inmem.WithRanksPerHost(2)) // 2 fake hosts x 2 ranks
//	defer w.Close()
//	m := w.Mesh(1) // transport.Mesh of rank 1
//
// Errors follow the transport contract: every error is a
// *transport.PeerError naming the peer; a locally closed link gives
// ErrClosed, a peer that closed its end gives ErrPeerLost once the bytes it
// sent are drained, and a done ctx gives ctx.Err().
//
// Fault hooks: Delay (each Send waits), Cut (both sides see ErrPeerLost at
// once, bytes in flight are lost), Kill (every link of a rank is cut, the
// rank's own calls fail with ErrClosed), and CutAfter/KillAfter, which fire
// once a given number of further bytes has been sent.
//
// Links implement transport.Buffered (the pipe capacity) and, with
// WithRecvReducer, transport.RecvReducer, handing received bytes to the
// reducer straight from the pipe's memory as shared memory would.
package inmem
