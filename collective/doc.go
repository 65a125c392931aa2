// Package collective is Gorovod's public API: data-parallel training
// collectives for Go programs started by gorun, mpirun, srun or any
// launcher that sets RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT.
//
//	if err := collective.Init(ctx); err != nil { ... } // a world of one without a launcher
//	defer collective.Shutdown(ctx)
//	err := collective.Allreduce(ctx, "grad/w1", grads, collective.Average)
//
// # Worlds
//
// A World is one membership of one job. Init makes one from the launcher's
// environment and makes it the default world, which the package-level
// functions use; Shutdown closes it, and Init after Shutdown joins the job
// again in the next epoch (every rank does the same). Programs that manage
// memberships themselves (tests, the elastic driver) use NewWorld, with
// WithMembership for an explicit rank, size and rendezvous, and pass
// InWorld(w) to the generic collectives:
//
//	w, err := collective.NewWorld(ctx)
//	defer w.Close(ctx)
//	err = collective.Allreduce(ctx, "grad/w1", grads, collective.Average, collective.InWorld(w))
//
// Package collectivetest runs N ranks of a job in one process over
// in-memory links, through this API.
//
// # Calls and names
//
// Every collective names its tensor. Ranks may submit in any order; the
// background loop negotiates with rank 0 which tensors every rank has
// submitted, then all ranks execute them in the same order. A name must be
// unique among one rank's calls in flight, and every rank must eventually
// submit every name, with the same dtype, length, op and root: otherwise the
// call fails with ErrMismatch on every rank (the job goes on), or, if a rank
// never submits, rank 0's stall inspector reports it and, past the stall
// shutdown time, the call fails with ErrTimeout.
//
// In-place calls (Allreduce, Broadcast) write into the caller's slice; the
// slice must not be touched until the call returns or its Handle is done.
// Calls returning new data (Allgather, Alltoall, ReduceScatter) return fresh
// slices.
//
// Tensors from Alloc (shared memory the workers of a host can map, given
// back with Free) make collectives within a host run on the
// ranks' tensors themselves, with no staging copies; tensors from make
// work the same, through the transports' slots.
//
// # Cancellation
//
// A call whose context ends before its collective has started is
// withdrawn: it fails with ErrCanceled (and ErrTimeout when a deadline
// passed), rank 0's negotiation forgets this rank's request, and the name
// may be submitted again. The other ranks' calls of that name are not
// affected: they stay pending (their own contexts govern them) and match
// this rank's next call of the name. A collective that has started runs to
// its end and the call returns its result; either way the buffers are no
// longer used once the call returns. Async calls watch the context they
// were made with, and a handle's Wait its own, the same way. Join and
// NewProcessSet change every rank's negotiation and cannot be withdrawn:
// when their context ends first, the world fails with ErrCanceled naming
// the call (the other ranks see ErrPeerLost).
//
// # Errors
//
// errors.Is(err, ErrPeerLost): a peer process died or its link broke; the
// message names the rank lost first. ErrMismatch, ErrTimeout, ErrShutdown,
// ErrInvalid and ErrNotInitialized say what they mean. After ErrPeerLost or a
// progress timeout the job's collectives are over: exit (gorun stops the
// others) or, in elastic jobs, re-initialize.
//
// # Performance
//
// Small tensors submitted together are fused into one buffer up to the
// fusion threshold (128 MiB); after the first step, tensors with the same
// names and shapes are negotiated from the response cache by one bitwise
// exchange, without requests to rank 0. Peers on the same host talk through
// shared memory, others through TCP. See Config for the knobs and
// docs/performance.md for measurements.
package collective
