// Package elastic will hold Gorovod's elastic training: the driver side
// (host discovery by script or Consul, a host manager with blacklist and
// cooldown, rank assignment per membership epoch, worker notification) and
// the worker side (Run, and a State with Commit, Restore, Sync and Reset).
//
// Nothing is implemented yet. What exists for it elsewhere: membership
// epochs in the rendezvous service (one Server per epoch) and in every
// connection handshake (peers of another epoch are refused), worker
// status and first-failure reports to the launcher (rendezvous
// ReportStatus/ReportFailure), fail-stop data-plane errors that name the
// lost rank (collective.ErrPeerLost), and the collective.ErrHostsUpdated
// error kind.
package elastic
