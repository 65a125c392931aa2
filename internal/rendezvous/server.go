package rendezvous

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/gorovod/gorovod/internal/hosts"
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
	// Epoch is the membership epoch served (0 for static jobs).
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

// Server is the rendezvous service of one job epoch. It is safe for
// concurrent use.
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
	regs     []*Registration // by rank; nil = not registered
	count    int
	timer    *time.Timer
	done     chan struct{} // closed once world or err is set
	world    World
	err      error
	statuses []Status
	oracle   *Oracle // the failure oracle of cfg.Epoch
	// abortedBy is the exit of a rank that left before registering and
	// failed the epoch while nobody waited; it goes to the oracle when a
	// rank is refused because of it (a program that never calls Init is
	// no failure).
	abortedBy *Status
	refused   bool // a rank registered after the epoch failed and was told why
}

// NewServer returns a server for cfg. A bad cfg is reported by Serve.
func NewServer(cfg ServerConfig) *Server {
	s := &Server{cfg: cfg, log: cfg.Logger, skew: cfg.MaxClockSkew, stopped: make(chan struct{}), done: make(chan struct{})}
	s.oracle = NewOracle(cfg.Size, cfg.StallSettle)
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
	default:
		s.regs = make([]*Registration, cfg.Size)
	}
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
		if s.timer != nil {
			s.timer.Stop()
		}
		s.mu.Unlock()
		s.oracle.Stop()
		s.grpc.Stop()
	})
}

// Registered returns the ranks registered so far, ascending.
func (s *Server) Registered() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.registeredLocked()
}

func (s *Server) registeredLocked() []int {
	var out []int
	for r, reg := range s.regs {
		if reg != nil {
			out = append(out, r)
		}
	}
	return out
}

// World returns the world once every rank registered.
func (s *Server) World() (World, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil || s.count != s.cfg.Size || s.cfg.Size == 0 {
		return World{}, false
	}
	return s.world, true
}

// Failed reports whether the epoch's rendezvous failed (start timeout,
// abort) with ranks told: every rank that registered, or tried to, has
// been sent the error.
func (s *Server) Failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err != nil && (s.count > 0 || s.refused)
}

// Statuses returns every status reported so far, in arrival order.
func (s *Server) Statuses() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Status(nil), s.statuses...)
}

// WorkerExited tells the server that the worker of rank left (desc says
// how, e.g. "exited with code 0"). If the world is not complete and that
// rank never registered, it never will: the epoch fails at once with
// ErrAborted instead of making the others wait for the start timeout, and
// when ranks were waiting for it, the failure oracle records that rank as
// where the job's failure started (even an exit with code 0 before
// registering fails the others).
func (s *Server) WorkerExited(rank int, desc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfgErr != nil || rank < 0 || rank >= len(s.regs) || s.regs[rank] != nil || s.finishedLocked() {
		return
	}
	s.failLocked(errorf(ErrAborted, "rank %d %s before registering", rank, desc))
	st := Status{Epoch: s.cfg.Epoch, Rank: rank, State: StateFailed, Kind: FailureExited, Suspect: rank,
		Message: fmt.Sprintf("rank %d %s before joining the job (it never registered; the ranks that did could not start)", rank, desc)}
	if s.count > 0 {
		s.recordLocked(st)
	} else {
		s.abortedBy = &st // recorded once a rank is refused because of it
	}
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
	s.recordLocked(Status{Epoch: s.cfg.Epoch, Rank: rank, State: StateFailed, Kind: FailureExited, Suspect: rank, Message: message})
}

// FirstFailure returns the failure oracle's verdict on the server's epoch:
// the rank the job's failure started at (Rank) and how it was seen. It
// decides a pending verdict if the evidence allows, but never waits.
func (s *Server) FirstFailure() (Status, bool) { return s.oracle.Verdict() }

// recordLocked adds a status; a failure of the server's epoch goes to the
// oracle.
func (s *Server) recordLocked(st Status) {
	s.statuses = append(s.statuses, st)
	if st.State == StateFailed && st.Epoch == s.cfg.Epoch && s.cfgErr == nil {
		s.oracle.Record(st)
	}
}

func (s *Server) finishedLocked() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *Server) failLocked(err error) {
	s.err = err
	if s.timer != nil {
		s.timer.Stop()
	}
	close(s.done)
	if s.count > 0 {
		s.log.Warn("rendezvous failed", zap.Error(err), zap.Ints("waiting_ranks", s.registeredLocked()))
	} else {
		// Nobody waits (a program that does not use Gorovod): not news.
		s.log.Debug("rendezvous closed", zap.Error(err))
	}
}

// expire runs when the start timeout passes.
func (s *Server) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finishedLocked() || s.count == 0 {
		return
	}
	var missing, present []int
	for r, reg := range s.regs {
		if reg == nil {
			missing = append(missing, r)
		} else {
			present = append(present, r)
		}
	}
	s.failLocked(errorf(ErrStartTimeout, "ranks %s did not register within %v (registered: %s)",
		rankList(missing), s.cfg.StartTimeout, rankList(present)))
}

// rankList renders ranks as "[0, 2, 5]", eliding the middle of long lists.
func rankList(ranks []int) string {
	parts := make([]string, 0, len(ranks))
	for i, r := range ranks {
		if len(ranks) > 16 && i == 8 {
			parts = append(parts, fmt.Sprintf("... %d more ...", len(ranks)-16))
		}
		if len(ranks) > 16 && i >= 8 && i < len(ranks)-8 {
			continue
		}
		parts = append(parts, strconv.Itoa(r))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// Register implements the RPC: record, then wait for the world.
func (s *Server) Register(ctx context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	reg := &Registration{Epoch: req.GetEpoch(), Rank: int(req.GetRank()), Host: req.GetHost(),
		LocalRank: int(req.GetLocalRank()), Addr: req.GetAddr(), Pid: int(req.GetPid())}
	done, err := s.add(reg)
	if err != nil {
		return nil, toStatus(err)
	}
	log := s.log.With(zap.Int("rank", reg.Rank), zap.String("host", reg.Host))
	log.Debug("registered", zap.String("addr", reg.Addr), zap.Int("pid", reg.Pid))
	select {
	case <-done:
		s.mu.Lock()
		w, err := s.world, s.err
		s.mu.Unlock()
		if err != nil {
			return nil, toStatus(err)
		}
		return &pb.RegisterResponse{World: worldToPB(w)}, nil
	case <-ctx.Done():
		s.withdraw(reg)
		log.Debug("registration withdrawn", zap.Error(ctx.Err()))
		return nil, toStatus(ctx.Err())
	case <-s.stopped:
		return nil, toStatus(errorf(ErrUnavailable, "rendezvous server stopped"))
	}
}

func (s *Server) add(reg *Registration) (<-chan struct{}, error) {
	if s.cfgErr != nil {
		return nil, s.cfgErr
	}
	switch {
	case reg.Epoch != s.cfg.Epoch:
		return nil, errorf(ErrEpoch, "rank %d registered for epoch %d, the server is at epoch %d", reg.Rank, reg.Epoch, s.cfg.Epoch)
	case reg.Rank < 0 || reg.Rank >= s.cfg.Size:
		return nil, errorf(ErrInvalid, "rank %d is out of range for a world of size %d", reg.Rank, s.cfg.Size)
	case reg.Host == "":
		return nil, errorf(ErrInvalid, "rank %d registered without a host name", reg.Rank)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev := s.regs[reg.Rank]; prev != nil {
		return nil, errorf(ErrDuplicateRank, "rank %d is already registered by pid %d on %s (now pid %d on %s)",
			reg.Rank, prev.Pid, prev.Host, reg.Pid, reg.Host)
	}
	if s.err != nil {
		s.refused = true
		if s.abortedBy != nil {
			s.recordLocked(*s.abortedBy)
			s.abortedBy = nil
		}
		return nil, s.err
	}
	s.regs[reg.Rank] = reg
	s.count++
	if s.count == 1 && s.cfg.StartTimeout > 0 {
		s.timer = time.AfterFunc(s.cfg.StartTimeout, s.expire)
	}
	if s.count == s.cfg.Size {
		s.world = s.buildWorldLocked()
		if s.timer != nil {
			s.timer.Stop()
		}
		close(s.done)
		s.log.Debug("world complete", zap.Int("size", s.cfg.Size), zap.Uint64("epoch", s.cfg.Epoch))
	}
	return s.done, nil
}

// withdraw forgets a registration whose caller went away before the world
// was complete, so the world never lists a peer that is gone and a retry of
// that rank is not refused as a duplicate.
func (s *Server) withdraw(reg *Registration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finishedLocked() || s.regs[reg.Rank] != reg {
		return
	}
	s.regs[reg.Rank] = nil
	s.count--
	if s.count == 0 && s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
}

func (s *Server) buildWorldLocked() World {
	names := make([]string, len(s.regs))
	for r, reg := range s.regs {
		names[r] = reg.Host
	}
	w := World{Epoch: s.cfg.Epoch, Size: len(s.regs)}
	for r, slot := range hosts.Layout(names) {
		reg := s.regs[r]
		w.Peers = append(w.Peers, Peer{Rank: r, Host: reg.Host, Addr: reg.Addr,
			LocalRank: slot.LocalRank, LocalSize: slot.LocalSize,
			CrossRank: slot.CrossRank, CrossSize: slot.CrossSize, Pid: reg.Pid})
		if slot.LocalRank != reg.LocalRank {
			s.log.Debug("launcher's local rank differs from the host layout; using the layout",
				zap.Int("rank", r), zap.String("host", reg.Host), zap.Int("given", reg.LocalRank), zap.Int("layout", slot.LocalRank))
		}
	}
	return w
}

// GetWorld implements the RPC: the world of the epoch if complete.
func (s *Server) GetWorld(ctx context.Context, req *pb.GetWorldRequest) (*pb.GetWorldResponse, error) {
	if s.cfgErr != nil {
		return nil, toStatus(s.cfgErr)
	}
	if req.GetEpoch() != s.cfg.Epoch {
		return nil, toStatus(errorf(ErrEpoch, "world of epoch %d asked, the server is at epoch %d", req.GetEpoch(), s.cfg.Epoch))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, toStatus(s.err)
	}
	if s.count != s.cfg.Size {
		var missing []int
		for r, reg := range s.regs {
			if reg == nil {
				missing = append(missing, r)
			}
		}
		return nil, toStatus(errorf(ErrNotReady, "epoch %d: ranks %s have not registered", s.cfg.Epoch, rankList(missing)))
	}
	return &pb.GetWorldResponse{World: worldToPB(s.world)}, nil
}

// ReportStatus implements the RPC: record and hand to OnStatus.
func (s *Server) ReportStatus(ctx context.Context, req *pb.ReportStatusRequest) (*pb.ReportStatusResponse, error) {
	if s.cfgErr != nil {
		return nil, toStatus(s.cfgErr)
	}
	st := statusFromPB(req)
	if st.Rank < 0 || st.Rank >= s.cfg.Size {
		return nil, toStatus(errorf(ErrInvalid, "status for rank %d, out of range for a world of size %d", st.Rank, s.cfg.Size))
	}
	if st.State != StateOK && st.State != StateFailed {
		return nil, toStatus(errorf(ErrInvalid, "status of rank %d has state %d (want ok or failed)", st.Rank, int(st.State)))
	}
	if st.Kind < FailureOwn || st.Kind > FailureExited || (st.Kind != FailureOwn && (st.Suspect < 0 || st.Suspect >= s.cfg.Size)) {
		return nil, toStatus(errorf(ErrInvalid, "status of rank %d blames rank %d (kind %d) in a world of size %d", st.Rank, st.Suspect, int(st.Kind), s.cfg.Size))
	}
	s.mu.Lock()
	s.recordLocked(st)
	s.mu.Unlock()
	s.log.Debug("worker status", zap.Int("rank", st.Rank), zap.Stringer("state", st.State), zap.Stringer("kind", st.Kind),
		zap.Int("suspect", st.Suspect), zap.String("message", st.Message))
	if s.cfg.OnStatus != nil {
		s.cfg.OnStatus(st)
	}
	if st.State != StateFailed {
		return &pb.ReportStatusResponse{}, nil
	}
	if st.Epoch != s.cfg.Epoch {
		return &pb.ReportStatusResponse{FirstFailure: statusToPB(st)}, nil
	}
	// A stall report waits (at most the settle window) for the verdict.
	select {
	case <-s.oracle.Decided():
	case <-ctx.Done():
		return nil, toStatus(ctx.Err())
	case <-s.stopped:
		return nil, toStatus(errorf(ErrUnavailable, "rendezvous server stopped"))
	}
	v, _ := s.FirstFailure()
	return &pb.ReportStatusResponse{FirstFailure: statusToPB(v)}, nil
}

func zapMethod(m string) zap.Field { return zap.String("method", m) }
