package rendezvous

import (
	pb "github.com/gorovod/gorovod/internal/rendezvous/rendezvouspb"
)

// Registration is what one worker announces.
type Registration struct {
	Epoch     uint64 // must equal the server's epoch (0 for static jobs)
	Rank      int
	Host      string // host name as the launcher knows it; equal hosts share memory
	LocalRank int    // as the launcher gave it; the world's value is recomputed from hosts
	Addr      string // data-plane listen address, host:port
	Pid       int
}

// Peer is one rank of a complete world.
type Peer struct {
	Rank      int
	Host      string
	Addr      string
	LocalRank int
	LocalSize int
	CrossRank int // index of Host among the hosts that have LocalRank
	CrossSize int // hosts that have LocalRank
	Pid       int
}

// World is the membership of one epoch: every rank and where to reach it.
type World struct {
	Epoch uint64
	Size  int
	Peers []Peer // Peers[r].Rank == r
}

// WorkerState is what a worker reports through ReportStatus.
type WorkerState int

const (
	StateUnknown WorkerState = iota
	StateOK
	StateFailed
)

func (s WorkerState) String() string {
	switch s {
	case StateOK:
		return "ok"
	case StateFailed:
		return "failed"
	}
	return "unknown"
}

// Status is one ReportStatus call. A failed status says what it knows of
// the cause (Kind, Suspect) for the failure oracle; the oracle's verdict is
// a Status whose Rank is the rank the failure started at.
type Status struct {
	Epoch   uint64
	Rank    int
	State   WorkerState
	Message string
	Kind    FailureKind
	Suspect int // the rank a PeerLost, PeerStalled or Exited status blames
}

func statusToPB(st Status) *pb.ReportStatusRequest {
	return &pb.ReportStatusRequest{Epoch: st.Epoch, Rank: int32(st.Rank), State: pb.WorkerState(st.State),
		Message: st.Message, Kind: pb.FailureKind(st.Kind), Suspect: int32(st.Suspect)}
}

func statusFromPB(p *pb.ReportStatusRequest) Status {
	return Status{Epoch: p.GetEpoch(), Rank: int(p.GetRank()), State: WorkerState(p.GetState()),
		Message: p.GetMessage(), Kind: FailureKind(p.GetKind()), Suspect: int(p.GetSuspect())}
}

func worldToPB(w World) *pb.World {
	out := &pb.World{Epoch: w.Epoch, Size: int32(w.Size)}
	for _, p := range w.Peers {
		out.Peers = append(out.Peers, &pb.Peer{
			Rank: int32(p.Rank), Host: p.Host, Addr: p.Addr,
			LocalRank: int32(p.LocalRank), LocalSize: int32(p.LocalSize),
			CrossRank: int32(p.CrossRank), CrossSize: int32(p.CrossSize), Pid: int64(p.Pid),
		})
	}
	return out
}

// worldFromPB also checks the shape a caller relies on: Peers[r].Rank == r.
func worldFromPB(w *pb.World) (World, error) {
	if w == nil {
		return World{}, errorf(ErrInvalid, "answer carries no world")
	}
	out := World{Epoch: w.GetEpoch(), Size: int(w.GetSize())}
	if len(w.GetPeers()) != out.Size {
		return World{}, errorf(ErrInvalid, "world of size %d lists %d peers", out.Size, len(w.GetPeers()))
	}
	for i, p := range w.GetPeers() {
		if int(p.GetRank()) != i {
			return World{}, errorf(ErrInvalid, "world peer %d has rank %d", i, p.GetRank())
		}
		out.Peers = append(out.Peers, Peer{
			Rank: int(p.GetRank()), Host: p.GetHost(), Addr: p.GetAddr(),
			LocalRank: int(p.GetLocalRank()), LocalSize: int(p.GetLocalSize()),
			CrossRank: int(p.GetCrossRank()), CrossSize: int(p.GetCrossSize()), Pid: int(p.GetPid()),
		})
	}
	return out, nil
}
