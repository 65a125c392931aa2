// Package ops holds the collective algorithms that run over host memory and
// the reduction kernels they use.
//
// # Calling contract
//
// A Comm wraps a transport.Mesh. Every rank of the mesh must call the same
// Comm operations in the same order with the same sizes (buffer lengths,
// counts, root, dtype, op) and the same Config: the algorithms carry no
// framing, each rank knows how many bytes to expect from each peer. Buffers
// are raw bytes of little-endian elements of the given DType (callers view
// []float32 etc. with unsafe.Slice). Operations on one Comm are serialised;
// the mesh's links must not be used by anyone else while an operation runs.
//
// Every operation takes a context: when it is done the operation returns
// promptly with an error wrapping ctx.Err(). Link failures come back
// wrapped, keeping the *transport.PeerError that names the peer (errors.As).
// Once an operation fails (a lost peer, a done ctx, Close), the byte
// streams between ranks are out of step, and a rank that skipped its part
// would leave the others waiting: so the Comm closes the mesh, which makes
// every peer's operation fail promptly with ErrPeerLost instead of waiting
// for its deadline, and later operations return the first error. Rebuild
// the mesh and the Comm to continue. Argument errors (ErrInvalid) are found
// before any byte moves and leave the Comm usable.
//
// A rank names the peer it lost contact with: the ranks next to a dead rank
// name it, ranks further away may name a neighbour that aborted because of
// it (the data plane has no side channel to carry the first cause).
//
// # Algorithms
//
//   - Allreduce: recursive doubling below Config.SmallBytes (log2 n exchanges
//     of the whole buffer; a non-power-of-two world first folds the extra
//     ranks into partners), otherwise a ring: reduce-scatter then allgather,
//     2(n-1) steps, each chunk cut into Config.SegmentBytes segments. A
//     received segment is reduced and immediately queued for sending to the
//     right neighbour (the next step sends exactly the chunk just received),
//     so sending, receiving and reducing overlap. Hierarchical (Config or
//     Algorithm) reduce-scatters within each host, allreduces across hosts
//     among ranks with the same local index, and allgathers within the host.
//     Postscale/average is applied to each rank's reduced chunk before the
//     allgather, so every rank scales 1/n of the data. Two ranks over
//     shared memory (duplexAllreduce2) cut each segment in two halves, one
//     per rank, and per segment send the peer's half, reduce their own half
//     and write it to the link in the same pass (transport.DuplexForwarder,
//     reduceOut), then receive the peer's reduced half: three passes over
//     the data, each segment's while it is in cache.
//   - Single copy (singlecopy.go): when every rank is on one host, reached
//     over shared memory (transport.RecvReducer links), and the kernel
//     allows cross-memory attach, ops read the peers' buffers directly
//     with process_vm_readv (addresses exchanged over the links): one copy
//     per byte moved instead of two through slots, three small exchanges
//     per op. A probe at the first such op decides once, on every rank
//     alike. Allgathers from 64 KiB and broadcasts from 64 KiB to 4 MiB
//     then always go this way (useSingleCopyMove); for allreduce and
//     reduce-scatter the ranks time allreduces of 1 to 32 MiB both ways and
//     use the single copy in the band of sizes where it was 10% faster on
//     rank 0, if any, never below the smallest size timed
//     (Config.SingleCopyMaxBytes overrides it).
//   - Allgatherv: the allgather half of the ring, any count per rank.
//   - ReduceScatter: the reduce-scatter half of the ring, any count per rank.
//   - Broadcast: binomial tree below SmallBytes, else a pipelined chain from
//     the root.
//   - Alltoallv: pairwise exchange (step s: send to rank+s, receive from
//     rank-s), receive counts exchanged first; by single copy each rank
//     reads its parts from the peers' send buffers.
//   - Barrier: dissemination, ceil(log2 n) rounds of one byte.
//
// # Goroutines and copies
//
// Sending and receiving must run concurrently (two ranks doing a blocking
// Send of a large segment to each other deadlock over TCP), but a goroutine
// per chunk is wasteful and a hand-off between goroutines can cost a
// scheduler tick on a small machine. So each Comm owns exactly one sender
// goroutine, which performs queued sends in order while the calling
// goroutine receives and reduces; Close stops it. When all the bytes an
// operation sends to a peer fit in the link's buffer in one Send
// (transport.Buffered, with a factor-two margin; a link of slots spends a
// slot per Send, so several small Sends are not trusted to fit), the
// caller's goroutine sends them itself and no hand-off happens: small
// allreduces, barriers and the count exchange of alltoall stay on one
// goroutine.
//
// Links that are a transport.Duplex (TCP and shared memory) take a third
// way: rings (of two ranks, where one peer is both neighbours, and of more,
// sending right while receiving left), the exchanges of recursive doubling
// and the steps of alltoall and barrier run on the caller's goroutine
// alone, as MPI's progress engine does (duplex.go): nonblocking sends and
// receives in one loop, each reduced segment queued for sending at once
// (over shared memory reduced straight from the slot,
// transport.DuplexReducer), and when nothing moves a few retries (none
// when the host has more ranks than cores: the peer waited for may need
// this core), then sched_yield, then the link's Await (for TCP a poll(2)
// that wakes once a segment's bytes are there, SO_RCVLOWAT). No hand-off
// between goroutines and no netpoller wake-up per segment, and a worker
// keeps one busy thread. A ring of more than two ranks waits on two links:
// on one direction it blocks in that link's Await, on both it naps 20 us
// (nanosleep, giving the core away) between looks, since a thread can
// block on one link only.
//
// Received bytes are reduced straight from the link's memory when the link
// is a transport.RecvReducer (shared memory); otherwise they land in one
// segment-sized scratch buffer and are reduced from there. The allgather
// phase receives directly into the caller's buffer.
//
// # Kernels
//
// Reduce and Scale cover float32, float64, float16, bfloat16, int8, uint8,
// int32, int64 and uint64 with Sum, Average, Min, Max and Product (BitAnd,
// BitOr for integers). float16 and bfloat16 compute through float32 and
// round to nearest even. On amd64 with cgo, float types use C kernels
// compiled with -O3 in three variants (x86-64-v2, AVX2+F16C, AVX-512),
// picked at load time; slices under 1 KiB and the purego build tag use the
// Go kernels, which give bit-identical results.
package ops
