// Package elastic is Gorovod's elastic training: jobs that keep training
// while workers die, hang, or are added and removed (docs/elastic.md).
//
// # Worker side
//
// A program wraps its training function in Run with a State:
//
//	st := elastic.NewState(elastic.Float32s("w1", w1), elastic.Value("opt", &opt), sampler.Item())
//	st.OnReset(func(ctx context.Context, w *collective.World) error { ...; return nil })
//	err := elastic.Run(ctx, st, func(ctx context.Context, w *collective.World) error {
//		... collectives with collective.InWorld(w) ...
//		return st.Commit(ctx) // at the end of every step
//	})
//
// Run joins the world the driver assigns, syncs the state from the rank
// with the highest committed step, and calls the function. Commit copies
// the state and takes one agreed vote (allreduce max of the newest epoch
// any rank was told of, a reset flag, and the step): every rank returns
// collective.ErrHostsUpdated at the same step when the membership is to
// change. On that, on collective.ErrPeerLost, ErrTimeout or ErrShutdown,
// or when the driver says the world lost a member, Run restores the last
// commit, leaves the world, joins the next one in the same process, runs
// the OnReset functions, syncs and calls the function again.
//
// # Driver side
//
// Driver (hosted by gorun) is one event loop over pure parts, each
// clock-free and tested as tables: HostManager diffs the hosts a Discovery
// (Script, Static, Consul) reports and keeps their first-seen order;
// FailureTracker charges failures to slots (cooldown before a refill) and
// hosts (blacklist with exponential cooldown); SlotsToFill picks the slots
// to start workers on; DealRanks orders an epoch's members so that rank 0
// is the oldest surviving worker; MinWatch fails a job that stays below
// --min-np. The driver talks to workers over the signed control channel of
// internal/rendezvous (Join, Heartbeat; messages in protocol.go) and runs
// one rendezvous service per epoch.
package elastic
