package rendezvous

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/gorovod/gorovod/internal/hosts"
	pb "github.com/gorovod/gorovod/internal/rendezvous/rendezvouspb"
)

// round is the registration of one epoch: who registered, and the world
// once every rank did (or the error that ended it). A server serves one
// round at a time; the first registration for a later epoch starts the
// next one, so a job whose workers close their world and join a new one
// (same ranks, epoch+1) registers again without a new server.
type round struct {
	epoch uint64
	regs  []*Registration // by rank; nil = not registered
	count int
	timer *time.Timer
	done  chan struct{} // closed once world or err is set
	world World
	err   error

	oracle *Oracle // the epoch's failure oracle
	// abortedBy is the exit of a rank that left before registering and
	// failed the epoch while nobody waited; it goes to the oracle when a
	// rank is refused because of it (a program that never calls Init is
	// no failure).
	abortedBy *Status
	refused   bool // a rank registered after the epoch failed and was told why
}

func newRound(epoch uint64, size int, settle time.Duration) *round {
	return &round{epoch: epoch, regs: make([]*Registration, size), done: make(chan struct{}), oracle: NewOracle(size, settle)}
}

func (r *round) finished() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (r *round) stopTimer() {
	if r.timer != nil {
		r.timer.Stop()
	}
}

func (r *round) registered() []int {
	var out []int
	for rank, reg := range r.regs {
		if reg != nil {
			out = append(out, rank)
		}
	}
	return out
}

func (r *round) missing() []int {
	var out []int
	for rank, reg := range r.regs {
		if reg == nil {
			out = append(out, rank)
		}
	}
	return out
}

// Registered returns the ranks registered so far in the current epoch,
// ascending.
func (s *Server) Registered() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.registered()
}

// Epoch returns the epoch being registered or served.
func (s *Server) Epoch() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.epoch
}

// World returns the current epoch's world once every rank registered.
func (s *Server) World() (World, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.cur
	if r.err != nil || r.count != len(r.regs) || len(r.regs) == 0 {
		return World{}, false
	}
	return r.world, true
}

// Failed reports whether the current epoch's rendezvous failed (start
// timeout, abort) with ranks told: every rank that registered, or tried to,
// has been sent the error.
func (s *Server) Failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.err != nil && (s.cur.count > 0 || s.cur.refused)
}

// WorkerExited tells the server that the worker of rank left (desc says
// how, e.g. "exited with code 0"). If the current epoch's world is not
// complete and that rank has not registered in it, it never will: the
// epoch fails at once with ErrAborted instead of making the others wait for
// the start timeout. When ranks were waiting for it, the failure oracle
// records that rank as where the job's failure started (even an exit with
// code 0 before registering fails the others). A later epoch that starts
// after the exit fails the same way at its first registration.
func (s *Server) WorkerExited(rank int, desc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfgErr != nil || rank < 0 || rank >= len(s.cur.regs) {
		return
	}
	s.exited[rank] = desc
	r := s.cur
	if r.regs[rank] != nil || r.finished() {
		return
	}
	s.failLocked(r, errorf(ErrAborted, "rank %d %s before registering", rank, desc))
	s.blameExitLocked(r, rank, desc)
}

// blameExitLocked puts the exit of rank, which failed round r, before the
// oracle: at once when ranks were waiting, else once a rank is refused
// because of it.
func (s *Server) blameExitLocked(r *round, rank int, desc string) {
	st := Status{Epoch: r.epoch, Rank: rank, State: StateFailed, Kind: FailureExited, Suspect: rank,
		Message: fmt.Sprintf("rank %d %s before joining the job (it never registered; the ranks that did could not start)", rank, desc)}
	if r.count > 0 {
		s.recordLocked(st)
	} else {
		r.abortedBy = &st
	}
}

func (s *Server) failLocked(r *round, err error) {
	r.err = err
	r.stopTimer()
	close(r.done)
	if r.count > 0 {
		s.log.Warn("rendezvous failed", zap.Error(err), zap.Uint64("epoch", r.epoch), zap.Ints("waiting_ranks", r.registered()))
	} else {
		// Nobody waits (a program that does not use Gorovod): not news.
		s.log.Debug("rendezvous closed", zap.Error(err))
	}
}

// expire runs when the start timeout of round r passes.
func (s *Server) expire(r *round) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.finished() || r.count == 0 {
		return
	}
	s.failLocked(r, errorf(ErrStartTimeout, "ranks %s did not register within %v (registered: %s)",
		rankList(r.missing()), s.cfg.StartTimeout, rankList(r.registered())))
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
	r, err := s.add(reg)
	if err != nil {
		return nil, toStatus(err)
	}
	log := s.log.With(zap.Int("rank", reg.Rank), zap.String("host", reg.Host), zap.Uint64("epoch", reg.Epoch))
	log.Debug("registered", zap.String("addr", reg.Addr), zap.Int("pid", reg.Pid))
	select {
	case <-r.done:
		s.mu.Lock()
		w, err := r.world, r.err
		s.mu.Unlock()
		if err != nil {
			return nil, toStatus(err)
		}
		return &pb.RegisterResponse{World: worldToPB(w)}, nil
	case <-ctx.Done():
		s.withdraw(r, reg)
		log.Debug("registration withdrawn", zap.Error(ctx.Err()))
		return nil, toStatus(ctx.Err())
	case <-s.stopped:
		return nil, toStatus(errorf(ErrUnavailable, "rendezvous server stopped"))
	}
}

// add records reg in the round of its epoch and returns that round. A
// registration for a later epoch than the current one starts that epoch's
// round (an unfinished current round fails: its ranks moved on); one for an
// earlier epoch is refused with ErrEpoch.
func (s *Server) add(reg *Registration) (*round, error) {
	if s.cfgErr != nil {
		return nil, s.cfgErr
	}
	if reg.Host == "" {
		return nil, errorf(ErrInvalid, "rank %d registered without a host name", reg.Rank)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if reg.Epoch < s.cur.epoch {
		return nil, errorf(ErrEpoch, "rank %d registered for epoch %d, the server is at epoch %d", reg.Rank, reg.Epoch, s.cur.epoch)
	}
	if reg.Rank < 0 || reg.Rank >= len(s.cur.regs) {
		return nil, errorf(ErrInvalid, "rank %d is out of range for a world of size %d", reg.Rank, len(s.cur.regs))
	}
	if reg.Epoch > s.cur.epoch {
		s.nextRoundLocked(reg.Epoch, len(s.cur.regs))
	}
	r := s.cur
	if prev := r.regs[reg.Rank]; prev != nil {
		return nil, errorf(ErrDuplicateRank, "rank %d is already registered by pid %d on %s (now pid %d on %s) in epoch %d",
			reg.Rank, prev.Pid, prev.Host, reg.Pid, reg.Host, r.epoch)
	}
	if r.err != nil {
		r.refused = true
		if r.abortedBy != nil {
			s.recordLocked(*r.abortedBy)
			r.abortedBy = nil
		}
		return nil, r.err
	}
	r.regs[reg.Rank] = reg
	r.count++
	if r.count == 1 && s.cfg.StartTimeout > 0 {
		r.timer = time.AfterFunc(s.cfg.StartTimeout, func() { s.expire(r) })
	}
	if r.count == len(r.regs) {
		r.world = s.buildWorld(r)
		r.stopTimer()
		close(r.done)
		s.log.Debug("world complete", zap.Int("size", len(r.regs)), zap.Uint64("epoch", r.epoch))
	}
	return r, nil
}

// BeginEpoch moves the server to epoch with a world of size ranks, for a
// driver that changes the membership (elastic jobs): ranks then register
// for that epoch. Without it, the first registration for a later epoch
// starts it with the current size (the same ranks joining again). Ranks
// that exited before are not held against the new epoch: the driver chose
// its members. epoch must be later than the current one.
func (s *Server) BeginEpoch(epoch uint64, size int) error {
	if s.cfgErr != nil {
		return s.cfgErr
	}
	if size < 1 {
		return errorf(ErrInvalid, "epoch %d of size %d, must be >= 1", epoch, size)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if epoch <= s.cur.epoch {
		return errorf(ErrEpoch, "epoch %d begun, the server is at epoch %d", epoch, s.cur.epoch)
	}
	clear(s.exited)
	s.nextRoundLocked(epoch, size)
	return nil
}

// Size returns the number of ranks of the current epoch.
func (s *Server) Size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.cur.regs)
}

// nextRoundLocked moves the server to epoch with size ranks. Ranks whose
// worker already exited can never register in it, so it fails at once
// naming them.
func (s *Server) nextRoundLocked(epoch uint64, size int) {
	old := s.cur
	if !old.finished() {
		s.failLocked(old, errorf(ErrEpoch, "epoch %d was abandoned: a rank registered for epoch %d", old.epoch, epoch))
	}
	old.oracle.Stop()
	s.cur = newRound(epoch, size, s.cfg.StallSettle)
	s.log.Debug("new epoch", zap.Uint64("epoch", epoch), zap.Int("size", size), zap.Uint64("previous", old.epoch))
	for rank := 0; rank < size; rank++ {
		if desc, gone := s.exited[rank]; gone {
			s.failLocked(s.cur, errorf(ErrAborted, "rank %d %s before registering for epoch %d", rank, desc, epoch))
			s.blameExitLocked(s.cur, rank, desc)
			return
		}
	}
}

// withdraw forgets a registration whose caller went away before the world
// was complete, so the world never lists a peer that is gone and a retry of
// that rank is not refused as a duplicate.
func (s *Server) withdraw(r *round, reg *Registration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.finished() || r.regs[reg.Rank] != reg {
		return
	}
	r.regs[reg.Rank] = nil
	r.count--
	if r.count == 0 && r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
}

func (s *Server) buildWorld(r *round) World {
	names := make([]string, len(r.regs))
	for rank, reg := range r.regs {
		names[rank] = reg.Host
	}
	w := World{Epoch: r.epoch, Size: len(r.regs)}
	for rank, slot := range hosts.Layout(names) {
		reg := r.regs[rank]
		w.Peers = append(w.Peers, Peer{Rank: rank, Host: reg.Host, Addr: reg.Addr,
			LocalRank: slot.LocalRank, LocalSize: slot.LocalSize,
			CrossRank: slot.CrossRank, CrossSize: slot.CrossSize, Pid: reg.Pid})
		if slot.LocalRank != reg.LocalRank {
			s.log.Debug("launcher's local rank differs from the host layout; using the layout",
				zap.Int("rank", rank), zap.String("host", reg.Host), zap.Int("given", reg.LocalRank), zap.Int("layout", slot.LocalRank))
		}
	}
	return w
}

// GetWorld implements the RPC: the world of the epoch if complete.
func (s *Server) GetWorld(ctx context.Context, req *pb.GetWorldRequest) (*pb.GetWorldResponse, error) {
	if s.cfgErr != nil {
		return nil, toStatus(s.cfgErr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.cur
	if req.GetEpoch() != r.epoch {
		return nil, toStatus(errorf(ErrEpoch, "world of epoch %d asked, the server is at epoch %d", req.GetEpoch(), r.epoch))
	}
	if r.err != nil {
		return nil, toStatus(r.err)
	}
	if r.count != len(r.regs) {
		return nil, toStatus(errorf(ErrNotReady, "epoch %d: ranks %s have not registered", r.epoch, rankList(r.missing())))
	}
	return &pb.GetWorldResponse{World: worldToPB(r.world)}, nil
}
