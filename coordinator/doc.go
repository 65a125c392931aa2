// Package coordinator decides, every cycle, which collectives all ranks run
// and in which order: Horovod's negotiation, as a pure state machine.
//
// # The caller's obligations
//
// Each process owns one Controller and calls Cycle once per loop cycle, on
// every rank the same number of times, passing the requests submitted since
// the last cycle, its clock (the controller never reads one) and whether it
// wants to shut down. It executes the returned responses in order, matching
// each name to its pending tensor. Responses share memory with the
// controller's cache: treat them as read-only. Names must be unique among
// one rank's collectives in flight (per process set); a duplicate, or a
// request for a process set this rank is not in, gets an error response on
// this rank only. Process sets are registered with AddProcessSet
// identically on every rank before they are used. All I/O goes through the
// Exchange the caller implements: one bitwise allreduce of a small []uint64
// per cycle, and on the slow path a gather to rank 0 and a broadcast from
// it (up and down a binomial tree when the Exchange is a TreeExchange,
// inner ranks merging identical requests; merge.go). A Join is submitted as a Request with Op OpJoin; it is answered under
// JoinName.
//
// # One cycle
//
//  1. Every rank looks its queued requests up in its response cache: HIT
//     (same name and parameters as a cached response), INVALID (same name,
//     other parameters) or MISS. It writes a bit vector: a status word
//     (shutdown, uncached-in-queue, invalid-in-queue, joined; written
//     inverted so that AND acts as OR), a hash of the settings that must
//     agree (size, cache capacity, fusion threshold) and its complement,
//     and one bit per cache entry it hit.
//  2. One AND allreduce combines the vectors: a cache bit survives when
//     every rank hit it. If any rank had INVALID entries, one OR allreduce
//     spreads their bits and every rank erases those entries.
//  3. Fast path (no rank has uncached requests): every rank turns the
//     common hits into responses in bit order and fuses them; nothing goes
//     to rank 0. Hits not common to all ranks stay queued.
//  4. Slow path: every rank sends its uncached requests (RequestList, see
//     wire.go) to rank 0, directly or merged up a tree, and rank 0 counts
//     them per name in its message table, reading the ranks' lists one
//     after another either way.
//     A tensor is ready when every rank of its process set submitted it or
//     joined. Rank 0 validates the requests (op, dtype, count or
//     non-first dimensions, reduce op, scale factors, root, device) and
//     answers a mismatch with an error response naming both ranks and both
//     values; the job goes on. It adds the common cache hits, fuses, and
//     broadcasts the ResponseList.
//  5. Every rank applies the (identical) list to its cache: successful
//     allreduce, allgather, broadcast, alltoall and reducescatter responses
//     with no joined ranks are stored per name, least recently used evicted;
//     so cache bits stay identical on every rank. It then returns the
//     responses of the process sets it belongs to.
//
// # Fusion
//
// Compatible allreduce responses (same dtype, reduce op, scale factors,
// device, process set) are fused greedily up to FusionThresholdBytes, with
// Horovod's look-ahead past non-matching responses.
//
// # Stalls, joins, shutdown
//
// Rank 0's stall inspector reports (Stalls, StallReport) tensors some ranks
// submitted and others did not once they have waited StallWarning, and
// after StallShutdown answers them with ErrorTimeout responses on every
// rank. A cached request waiting longer than StallWarning is invalidated so
// it takes the slow path where the inspector sees it. A rank that submits
// OpJoin counts as ready for every tensor (responses list it in
// JoinedRanks); while any rank is joined the cache is bypassed. When all
// ranks have joined, the Join response (named JoinName) carries the last
// rank to join. Any rank asking to shut down sets ResponseList.Shutdown on
// every rank.
//
// Tests drive N controllers in lock-step through the phases of a cycle
// (begin, afterAnd, afterOr, requestPayload, coordinate, finish) with
// scripts in testdata/; Cycle is the thin driver over an Exchange.
package coordinator
