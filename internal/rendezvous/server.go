package rendezvous

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	pb "github.com/gorovod/gorovod/internal/rendezvous/rendezvouspb"
)

// ServerConfig configures a rendezvous server.
type ServerConfig struct {
	// Size is the number of ranks of the epoch (>= 1).
	Size int
	// Secret is the job secret; every request must be signed with it.
	Secret []byte
	// StartTimeout bounds how long registered ranks wait for the others,
	// counted from the first registration; 0 means wait forever.
	StartTimeout time.Duration
	// Epoch is the first membership epoch served (0 for static jobs). The
	// first registration for a later epoch moves the server to that epoch
	// (a job that closes its world and joins a new one); earlier epochs are
	// refused with ErrEpoch.
	Epoch uint64
	// Logger receives the server's logs; nil means none.
	Logger *zap.Logger
	// OnStatus, when set, is called with every ReportStatus (on the RPC's
	// goroutine; it must not block for long).
	OnStatus func(Status)
	// MaxClockSkew is the largest accepted distance between a request's
	// timestamp and the server clock; 0 means 5 minutes.
	MaxClockSkew time.Duration
	// StallSettle is how long the failure oracle waits, after a stall
	// report, for the stalled rank to say it was itself waiting on
	// another (see blame); 0 means DefaultStallSettle.
	StallSettle time.Duration
}

// Server is the rendezvous service of a job: one epoch's registration at a
// time (see round). It is safe for concurrent use.
type Server struct {
	pb.UnimplementedRendezvousServer

	cfg    ServerConfig
	cfgErr error
	log    *zap.Logger
	skew   time.Duration
	nonces nonceCache
	grpc   *grpc.Server

	stopOnce sync.Once
	stopped  chan struct{}

	mu       sync.Mutex
	cur      *round         // the epoch being registered or served, with its failure oracle
	exited   map[int]string // ranks whose worker left, and how (WorkerExited)
	statuses []Status
}

// NewServer returns a server for cfg. A bad cfg is reported by Serve.
func NewServer(cfg ServerConfig) *Server {
	s := &Server{cfg: cfg, log: cfg.Logger, skew: cfg.MaxClockSkew, stopped: make(chan struct{}), exited: make(map[int]string)}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.skew <= 0 {
		s.skew = defaultMaxClockSkew
	}
	s.nonces.window = s.skew
	s.cfg.Secret = append([]byte(nil), cfg.Secret...) // the caller may reuse its slice
	switch {
	case cfg.Size < 1:
		s.cfgErr = errorf(ErrInvalid, "server Size is %d, must be >= 1", cfg.Size)
	case len(cfg.Secret) == 0:
		s.cfgErr = errorf(ErrInvalid, "server Secret is empty")
	case cfg.StartTimeout < 0:
		s.cfgErr = errorf(ErrInvalid, "server StartTimeout is %v, must be >= 0", cfg.StartTimeout)
	}
	s.cur = newRound(cfg.Epoch, max(cfg.Size, 0), cfg.StallSettle)
	s.grpc = grpc.NewServer(grpc.UnaryInterceptor(s.serverAuth))
	pb.RegisterRendezvousServer(s.grpc, s)
	return s
}

// Serve answers requests on lis until Stop. It returns nil after Stop.
func (s *Server) Serve(lis net.Listener) error {
	if s.cfgErr != nil {
		_ = lis.Close()
		return s.cfgErr
	}
	s.log.Debug("rendezvous serving", zap.String("addr", lis.Addr().String()), zap.Int("size", s.cfg.Size), zap.Uint64("epoch", s.cfg.Epoch))
	if err := s.grpc.Serve(lis); err != nil && err != grpc.ErrServerStopped {
		return fmt.Errorf("%w: serving on %s: %v", ErrUnavailable, lis.Addr(), err)
	}
	return nil
}

// Stop fails every waiting Register with ErrUnavailable, closes the
// listeners and connections and returns once every handler returned.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		close(s.stopped)
		s.mu.Lock()
		s.cur.stopTimer()
		s.cur.oracle.Stop()
		s.mu.Unlock()
		s.grpc.Stop()
	})
}

// Statuses returns every status reported so far, in arrival order.
func (s *Server) Statuses() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Status(nil), s.statuses...)
}

// RecordFailure records a failure the launcher saw itself (a worker that
// exited with an error or was killed) as a failed status of the server's
// epoch, and as evidence for the failure oracle: a rank whose process ended
// cannot pass the blame on. Workers' ReportFailure calls name it as the
// job's first failure when it came before theirs: the launcher often learns
// of a death before any peer of the dead worker uses a link to it.
func (s *Server) RecordFailure(rank int, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recordLocked(Status{Epoch: s.cur.epoch, Rank: rank, State: StateFailed, Kind: FailureExited, Suspect: rank, Message: message})
}

// FirstFailure returns the failure oracle's verdict on the current epoch:
// the rank the job's failure started at (Rank) and how it was seen. It
// decides a pending verdict if the evidence allows, but never waits.
func (s *Server) FirstFailure() (Status, bool) {
	s.mu.Lock()
	o := s.cur.oracle
	s.mu.Unlock()
	return o.Verdict()
}

// recordLocked adds a status; a failure of the current epoch goes to its
// oracle.
func (s *Server) recordLocked(st Status) {
	s.statuses = append(s.statuses, st)
	if st.State == StateFailed && st.Epoch == s.cur.epoch && s.cfgErr == nil {
		s.cur.oracle.Record(st)
	}
}

// ReportStatus implements the RPC: record and hand to OnStatus.
func (s *Server) ReportStatus(ctx context.Context, req *pb.ReportStatusRequest) (*pb.ReportStatusResponse, error) {
	if s.cfgErr != nil {
		return nil, toStatus(s.cfgErr)
	}
	st := statusFromPB(req)
	size := s.Size() // the current epoch's
	if st.Rank < 0 || st.Rank >= size {
		return nil, toStatus(errorf(ErrInvalid, "status for rank %d, out of range for a world of size %d", st.Rank, size))
	}
	if st.State != StateOK && st.State != StateFailed {
		return nil, toStatus(errorf(ErrInvalid, "status of rank %d has state %d (want ok or failed)", st.Rank, int(st.State)))
	}
	if st.Kind < FailureOwn || st.Kind > FailureExited || (st.Kind != FailureOwn && (st.Suspect < 0 || st.Suspect >= size)) {
		return nil, toStatus(errorf(ErrInvalid, "status of rank %d blames rank %d (kind %d) in a world of size %d", st.Rank, st.Suspect, int(st.Kind), size))
	}
	s.mu.Lock()
	s.recordLocked(st)
	cur, oracle := s.cur.epoch, s.cur.oracle
	s.mu.Unlock()
	s.log.Debug("worker status", zap.Int("rank", st.Rank), zap.Stringer("state", st.State), zap.Stringer("kind", st.Kind),
		zap.Int("suspect", st.Suspect), zap.String("message", st.Message))
	if s.cfg.OnStatus != nil {
		s.cfg.OnStatus(st)
	}
	if st.State != StateFailed {
		return &pb.ReportStatusResponse{}, nil
	}
	if st.Epoch != cur {
		return &pb.ReportStatusResponse{FirstFailure: statusToPB(st)}, nil
	}
	// A stall report waits (at most the settle window) for the verdict.
	select {
	case <-oracle.Decided():
	case <-ctx.Done():
		return nil, toStatus(ctx.Err())
	case <-s.stopped:
		return nil, toStatus(errorf(ErrUnavailable, "rendezvous server stopped"))
	}
	v, _ := oracle.Verdict()
	return &pb.ReportStatusResponse{FirstFailure: statusToPB(v)}, nil
}

func zapMethod(m string) zap.Field { return zap.String("method", m) }
