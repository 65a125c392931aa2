// Package shm is the transport.Link between two workers on the same host:
// one file in /dev/shm per direction, mapped by both processes, holding a
// ring of slots with head/tail counters (the design of NCCL's SHM transport).
//
// Ring protocol (ring.go): the sender waits until head-tail < slots, copies
// up to slotBytes into slot head%slots, stores its length, then advances
// head with an atomic store, which publishes both. The receiver waits until
// head != tail, reads the slot (possibly over several Recv calls: a Link is
// a byte stream) and advances tail, which frees the slot. Each counter has a
// single writer and sits on its own cache lines. RecvReduce hands the slot
// bytes to the caller's function in place, saving the copy out.
//
// Setup (setup.go, wire format in wire.go) runs over the peers' already
// authenticated TCP connection: each side creates the ring it receives on
// as an unnamed file (O_TMPFILE in /dev/shm) and offers
// gorovod-<job>-e<epoch>-<from>to<to>-<pid><fd> (8 hex digits each); the
// peer checks the prefix and opens /proc/<pid>/fd/<fd>, they ack, and each
// closes its descriptor. No ring ever has a name in /dev/shm, so nothing is
// left there whatever happens to the processes, even when both are killed
// during setup; the memory goes when both have unmapped it (Close, or exit).
// Peers must see each other's /proc (one PID namespace) as well as share
// /dev/shm. If either side cannot create or map a ring, both get
// ErrUnavailable at the same point of the exchange and the connection can
// carry a TCP link instead.
//
// Peer death: the TCP connection stays open beside the rings and a watcher
// goroutine blocks reading it; when the peer exits, is killed or closes the
// link, the kernel closes it and every wait fails with ErrPeerLost naming the
// peer's rank (bytes published before are still delivered).
//
// Waiting (wait.go): poll the counter a few hundred times (with a
// runtime.Gosched every 32, so another goroutine of this process that the
// wait depends on runs even with GOMAXPROCS=1), then call runtime.Gosched and
// the sched_yield system call for ~300 us (so that with more ranks than
// cores the peer gets the CPU; runtime.Gosched only yields to goroutines of
// this process), then sleep in short nanosleeps (10 us doubling to 200 us) for
// ~1 ms, then block on a futex in the shared mapping until the peer wakes
// it: an idle rank costs no CPU, and the peer pays one wake-up system call
// per publish only while this side is blocked. The wake-up protocol (flag,
// sequence word, full barriers) loses no wake-ups; the block also times out
// every 10 ms to look at ctx. Close and peer death are checked between polls
// and wake a blocked side at once.
//
// A Link is also a transport.DuplexReducer (duplex.go): TrySend fills the
// free slots, TryRecv and TryRecvReduce take what is published, neither
// waits, so one goroutine can drive both directions (the ring of two ranks
// in ops). Await blocks on the one futex when one direction is wanted; for
// both it polls the two counters with short nanosleeps, since a thread can
// wait on one futex word only.
package shm
