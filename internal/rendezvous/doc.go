// Package rendezvous is the control-plane service through which the workers
// of a job find each other.
//
// The launcher (gorun, or rank 0 when mpirun/Slurm started the job) runs a
// Server for one membership epoch of Size ranks and hands its address and
// the job secret to every worker (GOROVOD_RENDEZVOUS_ADDR, GOROVOD_SECRET).
// Each worker calls Register with its rank, host, data-plane address and
// pid. The call blocks until every rank of the epoch registered and then
// returns the same World to all: size, epoch and per rank its host, address,
// local rank/size and cross rank/size (computed by the server from the
// hosts, see hosts.Layout, so all launchers agree).
//
// Failure rules:
//   - The start timeout counts from the first registration. When it passes
//     with ranks missing, every waiting Register (and every later one) fails
//     with ErrStartTimeout naming the missing ranks ("ranks [2] did not
//     register within 10s"). A job whose processes never register is never
//     failed by the server.
//   - Server.WorkerExited lets the launcher fail the epoch at once
//     (ErrAborted) when a worker that never registered has exited.
//   - A rank registering twice gets ErrDuplicateRank; a wrong epoch ErrEpoch.
//   - A Register whose caller goes away before the world is complete is
//     withdrawn, so the world never lists a peer that already left.
//   - Server.Stop fails waiting calls with ErrUnavailable.
//
// Authentication: every request carries an HMAC-SHA256 of its content, a
// timestamp and a nonce under the job secret in gRPC metadata, and every
// answer an HMAC bound to that nonce (auth.go). A wrong secret on either
// side fails with ErrAuth. The wire types are in rendezvouspb (generated
// from rendezvous.proto; `go generate` rebuilds them, the output is
// committed so builds need no protoc).
//
// GetWorld (non-blocking) and ReportStatus (worker ok/failed with a
// message) are for the elastic driver.
package rendezvous
