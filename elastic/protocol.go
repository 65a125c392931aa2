package elastic

import (
	"encoding/json"
	"fmt"
)

// Environment of an elastic worker, set by the driver (gorun) besides the
// job's GOROVOD_SECRET and tuning variables.
const (
	EnvControlAddr = "GOROVOD_ELASTIC_ADDR"        // host:port of the driver's control service
	EnvWorkerID    = "GOROVOD_ELASTIC_ID"          // this worker's id in the driver
	EnvHeartbeat   = "GOROVOD_ELASTIC_HEARTBEAT"   // heartbeat interval (Go duration)
	EnvResetLimit  = "GOROVOD_ELASTIC_RESET_LIMIT" // resets a worker accepts (0: no limit)
)

// The control channel's messages (JSON inside the signed gRPC service of
// internal/rendezvous). A worker:
//
//   - calls Join(after) to get its place in the first epoch after `after`
//     (0 at start). The call blocks until the driver forms that epoch, or
//     answers that the worker is out (removed) or the job is over (done).
//   - sends Heartbeat every interval. The answer carries the newest epoch
//     the driver has planned (Latest): a worker whose epoch is older leaves
//     its world at the next commit (Abort false: hosts were added or are
//     leaving; every rank learns it through the commit vote) or at once
//     (Abort true: a member of its epoch is gone and collectives would fail
//     or hang).
type joinRequest struct {
	ID     string `json:"id"`
	After  uint64 `json:"after"`
	Reason string `json:"reason,omitempty"`
}

// Join outcomes.
const (
	joinAssigned = "assigned"
	joinRemoved  = "removed" // gracefully (the host left discovery): exit 0
	joinDropped  = "dropped" // the driver gave up on this worker: exit 1
	joinDone     = "done"    // the job finished: exit 0
)

// Assignment is a worker's place in one epoch.
type Assignment struct {
	Epoch          uint64 `json:"epoch"`
	Rank           int    `json:"rank"`
	Size           int    `json:"size"`
	LocalRank      int    `json:"local_rank"`
	LocalSize      int    `json:"local_size"`
	CrossRank      int    `json:"cross_rank"`
	CrossSize      int    `json:"cross_size"`
	Host           string `json:"host"`
	RendezvousAddr string `json:"rendezvous"`
}

type joinReply struct {
	Status string     `json:"status"`
	Reason string     `json:"reason,omitempty"`
	Assign Assignment `json:"assign"`
}

type heartbeatRequest struct {
	ID    string `json:"id"`
	Epoch uint64 `json:"epoch"`
	Step  int64  `json:"step"`
}

type heartbeatReply struct {
	Latest  uint64 `json:"latest"`
	Abort   bool   `json:"abort,omitempty"`
	Removed bool   `json:"removed,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

func decode(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: control message: %v", ErrInvalid, err)
	}
	return nil
}

func encode(v any) []byte {
	b, _ := json.Marshal(v) // plain structs: cannot fail
	return b
}
