package elastic

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/gorovod/gorovod/collective"
)

// session is a worker's side of the control channel (session.go; a fake
// in tests): joining epochs, and what the heartbeats learned.
type session interface {
	// join returns this worker's place in the first epoch after `after`.
	join(ctx context.Context, after uint64, reason string) (joinReply, error)
	// told is the newest epoch the driver announced.
	told() uint64
	// broken returns a channel closed when the driver says epoch is broken
	// (a member is gone) or this worker was removed.
	broken(epoch uint64) <-chan struct{}
	// progress reports the epoch and committed step for the heartbeats.
	progress(epoch uint64, step int64)
}

// worldMaker joins the world of an assignment.
type worldMaker func(ctx context.Context, a Assignment) (*collective.World, error)

// ResetInfo describes the last reset, for the function's own reporting.
type ResetInfo struct {
	Noticed time.Time // when this rank noticed the failure or change
	Cause   error     // what it noticed
	Epoch   uint64    // the world joined
	Size    int
	Source  int   // the rank whose committed state everyone took
	Step    int64 // the step synced to
	Resets  int   // resets of this worker so far
}

type runner struct {
	sess         session
	newWorld     worldMaker
	resetLimit   int           // 0: none
	closeTimeout time.Duration // bound on leaving a world
	joinTimeout  time.Duration // bound on one join + world start
	fault        func(point string, step int64) error
	events       io.Writer
}

// errFinished: fn returned nil.
var errFinished = errors.New("finished")

// LastReset returns what the last reset of Run did (zero before any).
func (s *State) LastReset() ResetInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastReset
}

// Run runs fn in the worlds the elastic driver (gorun with --min-np or a
// discovery option) assigns this process, until fn returns nil or an error
// that is not about membership. Before the first call and after every
// reset, the state is synced from the rank with the highest committed
// step. When fn fails with collective.ErrPeerLost, ErrTimeout, ErrShutdown
// or ErrHostsUpdated (or the driver says the world lost a member, which
// cancels fn's context), Run restores the last commit, leaves the world,
// joins the next one, runs the OnReset functions, syncs and calls fn
// again. It returns nil when fn returned nil or the driver removed this
// worker gracefully (its host left discovery, or the job finished), and
// ErrRemoved, ErrResetLimit or fn's error otherwise.
func Run(ctx context.Context, st *State, fn func(ctx context.Context, w *collective.World) error) error {
	r, closeSess, err := runnerFromEnv(ctx, os.Getenv)
	if err != nil {
		return err
	}
	defer closeSess()
	return r.run(ctx, st, fn)
}

func (r *runner) logf(format string, args ...any) {
	if r.events != nil {
		fmt.Fprintf(r.events, "elastic: "+format+"\n", args...)
	}
}

func (r *runner) faultAt(point string, st *State) error {
	if r.fault == nil {
		return nil
	}
	return r.fault(point, st.Step())
}

func (r *runner) run(ctx context.Context, st *State, fn func(ctx context.Context, w *collective.World) error) error {
	snap, err := st.snapshot()
	if err != nil {
		return err
	}
	st.mu.Lock()
	st.committed, st.step = snap, 0
	st.mu.Unlock()
	var (
		after   uint64
		cause   error
		resets  int
		noticed time.Time
	)
	for {
		if cause != nil {
			resets++
			if r.resetLimit > 0 && resets > r.resetLimit {
				return fmt.Errorf("%w: reset %d needed (--reset-limit %d); last cause: %w", ErrResetLimit, resets, r.resetLimit, cause)
			}
			if err := st.restore(); err != nil {
				return err
			}
		}
		a, err := r.join(ctx, after, cause)
		if err != nil {
			if errors.Is(err, errFinished) {
				return nil
			}
			return err
		}
		after = a.Epoch
		var at time.Time
		err = r.epoch(ctx, st, a, fn, ResetInfo{Noticed: noticed, Cause: cause, Epoch: a.Epoch, Size: a.Size, Resets: resets}, &at)
		noticed = at
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errKilled):
			return err
		case recoverable(err) || ctx.Err() == nil && errors.Is(err, errBroken):
			cause = err
			r.logf("rank %d of epoch %d leaves its world: %v", a.Rank, a.Epoch, err)
		default:
			return err
		}
	}
}

// errKilled: a fault hook ended this worker (tests).
var errKilled = errors.New("elastic: killed by a fault hook")

// errBroken: the driver said this world lost a member (or this worker was
// removed), which cancelled fn.
var errBroken = errors.New("elastic: the driver ended this epoch")

func recoverable(err error) bool {
	for _, k := range []error{collective.ErrPeerLost, collective.ErrTimeout, collective.ErrShutdown, collective.ErrHostsUpdated} {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

func (r *runner) join(ctx context.Context, after uint64, cause error) (Assignment, error) {
	reason := "start"
	if cause != nil {
		reason = cause.Error()
	}
	rep, err := r.sess.join(ctx, after, reason)
	if err != nil {
		return Assignment{}, fmt.Errorf("joining the epoch after %d: %w", after, err)
	}
	switch rep.Status {
	case joinAssigned:
		return rep.Assign, nil
	case joinRemoved, joinDone:
		r.logf("leaving the job: %s", rep.Reason)
		return Assignment{}, errFinished
	default:
		return Assignment{}, fmt.Errorf("%w: %s", ErrRemoved, rep.Reason)
	}
}

// epoch runs one world: make it, reset callbacks, sync, fn. A failure
// to make the world is recoverable (the driver forms another epoch).
func (r *runner) epoch(ctx context.Context, st *State, a Assignment, fn func(context.Context, *collective.World) error, info ResetInfo, noticed *time.Time) (err error) {
	defer func() { // runs after the world's Close
		if err != nil && noticed.IsZero() {
			*noticed = time.Now()
		}
	}()
	broken := r.sess.broken(a.Epoch)
	ectx, stop := cancelOnClose(ctx, broken)
	defer stop()
	wrap := func(err error) error {
		select {
		case <-broken:
			return fmt.Errorf("%w: %w", errBroken, err)
		default:
			return err
		}
	}
	if err := r.faultAt("join", st); err != nil {
		return err
	}
	jctx, jcancel := context.WithTimeout(ectx, r.joinTimeout)
	w, err := r.newWorld(jctx, a)
	jcancel()
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return fmt.Errorf("%w: joining epoch %d: %w", collective.ErrShutdown, a.Epoch, err)
	}
	defer r.leave(ctx, w, &err)
	// A collective already started waits for its peers whatever its
	// context says: when the driver says the world lost a member, close
	// the world at once so that such a call fails instead of hanging.
	quit, watched := make(chan struct{}), make(chan struct{})
	go func() { // owned by this call: ends with it
		defer close(watched)
		select {
		case <-broken:
			r.closeNow(ctx, w)
		case <-quit:
		}
	}()
	defer func() { close(quit); <-watched }()
	defer func() { // runs before leave: the failure is noticed now
		if err != nil {
			*noticed = time.Now()
		}
	}()
	st.attach(w, r, a.Epoch)
	defer st.attach(nil, nil, 0)
	if err := r.prepare(ectx, w, st, a, info); err != nil {
		return wrap(err)
	}
	if err := fn(ectx, w); err != nil {
		return wrap(err)
	}
	return nil
}

// cancelOnClose returns a context cancelled when closed is; stop releases
// the goroutine that watches it (owned by the caller).
func cancelOnClose(ctx context.Context, closed <-chan struct{}) (context.Context, func()) {
	ectx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-closed:
			cancel()
		case <-ectx.Done():
		}
	}()
	return ectx, func() { cancel(); <-done }
}

// leave closes w. A world that lost a member cannot agree to close: its
// links are closed at once rather than waiting for a peer that is gone.
func (r *runner) leave(ctx context.Context, w *collective.World, errp *error) {
	if errors.Is(*errp, errBroken) || errors.Is(*errp, collective.ErrPeerLost) {
		r.closeNow(ctx, w)
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.closeTimeout)
	defer cancel()
	_ = w.Close(cctx)
}

// closeNow closes w without waiting for the other ranks to agree.
func (r *runner) closeNow(ctx context.Context, w *collective.World) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(r.closeTimeout, 20*time.Millisecond))
	defer cancel()
	_ = w.Close(cctx)
}

// prepare runs the reset callbacks (after a reset) and syncs the state.
func (r *runner) prepare(ctx context.Context, w *collective.World, st *State, a Assignment, info ResetInfo) error {
	if info.Cause != nil {
		for _, f := range st.onReset {
			if err := f(ctx, w); err != nil {
				return fmt.Errorf("reset callback: %w", err)
			}
		}
	}
	if err := r.faultAt("reset", st); err != nil {
		return err
	}
	src, step, err := r.sync(ctx, w, st)
	if err != nil {
		return fmt.Errorf("syncing state in epoch %d: %w", a.Epoch, err)
	}
	info.Source, info.Step = src, step
	st.mu.Lock()
	st.lastReset = info
	st.mu.Unlock()
	r.sess.progress(a.Epoch, step)
	return nil
}

func (r *runner) sync(ctx context.Context, w *collective.World, st *State) (int, int64, error) {
	if err := r.faultAt("sync", st); err != nil {
		return 0, 0, err
	}
	return syncState(ctx, w, st, func(int64) error { return r.faultAt("broadcast", st) })
}

// attach points the state's Commit at world w (nil: outside Run).
func (s *State) attach(w *collective.World, r *runner, epoch uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.world = w
	if r == nil {
		s.vote, s.observe = nil, nil
		return
	}
	broken := r.sess.broken(epoch)
	s.vote = func(ctx context.Context, w *collective.World, step int64) (voteResult, error) {
		if err := r.fault0("vote", step-1); err != nil {
			return voteResult{}, err
		}
		flag := false
		select {
		case <-broken:
			flag = true
		default:
		}
		return takeVote(ctx, w, epoch, r.sess.told(), flag, step)
	}
	s.observe = func(step int64) { r.sess.progress(epoch, step) }
}

func (r *runner) fault0(point string, step int64) error {
	if r.fault == nil {
		return nil
	}
	return r.fault(point, step)
}
