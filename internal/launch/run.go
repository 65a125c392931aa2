package launch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Worker is one process of a job.
type Worker struct {
	Rank int
	Host string
	Argv []string
	Env  []string
	Dir  string
}

// JobConfig describes a job for Run.
type JobConfig struct {
	Spawner Spawner
	Workers []Worker
	// Stdout and Stderr receive the workers' output, each line prefixed
	// with its rank ("[1]<stdout>:").
	Stdout, Stderr io.Writer
	// OutputDir, when set, also receives every worker's raw output in
	// OutputDir/rank.N/stdout and .../stderr, N zero-padded to the width of
	// the largest rank as horovodrun does (rank.07 in a job of 16).
	OutputDir string
	// KillGracePeriod is how long stopped workers get between SIGTERM and
	// SIGKILL; 0 means 3 s.
	KillGracePeriod time.Duration
	// Logger receives the launcher's messages; nil means none.
	Logger *zap.Logger
	// OnExit, when set, is called as each worker exits (from Run's
	// goroutine).
	OnExit func(Exit)
	// Settle, when set, is asked on the first failure how long the other
	// workers may take to end on their own before they are stopped: for a
	// failure every worker was told of at once (a rendezvous start
	// timeout), so that each can say what it was told.
	Settle func(Exit) time.Duration
	// Cause, when set, returns the failure oracle's verdict once there is
	// one: the rank a failure started at, which the job's first failure
	// then is (see Run). gorun asks its rendezvous service.
	Cause func() (Cause, bool)
}

// Exit records how one worker ended.
type Exit struct {
	Rank   int
	Host   string
	Pid    int
	Status ExitStatus
}

// String is "rank 1 (pid 123, host localhost) was killed by signal SIGKILL".
func (e Exit) String() string {
	return fmt.Sprintf("rank %d (pid %d, host %s) %s", e.Rank, e.Pid, e.Host, e.Status)
}

// Cause is the failure oracle's verdict on a failed job: the rank the
// failure started at and how it was seen ("rank 1 on host2 stalled (...)").
type Cause struct {
	Rank        int
	Description string
}

// Result is how a job ended.
type Result struct {
	// ExitCode is what the launcher should exit with.
	ExitCode int
	// FirstFailure is the worker whose failure the job's failure started
	// at (not one Run stopped, nor one that failed because a peer did), or
	// nil. See Run for how it is chosen.
	FirstFailure *Exit
	// Cause is the failure oracle's verdict (JobConfig.Cause), if it gave one.
	Cause *Cause
	// Interrupted is the first signal received from the signals channel, if any.
	Interrupted os.Signal
	// Exits lists every worker's end, by rank order of Workers.
	Exits []Exit
}

// Run starts every worker and supervises them until all exited. Signals
// read from signals (SIGINT, SIGTERM) are forwarded to every worker's
// process group; a second one, or the end of the grace period, kills them.
// The first worker that fails makes Run stop the others. When ctx ends the
// workers are stopped the same way and Run returns ctx's error with the
// result. An error without a result means a worker could not be started
// (the ones already started were killed and waited for).
//
// The first failure is ordered by when workers failed, not by when waiting
// for them returned (a survivor that noticed a peer's death may exit before
// the launcher reaps the dead one): the rank the failure oracle names
// (JobConfig.Cause) if its process failed on its own; else the first worker
// killed by a signal Run did not send; else the first worker that failed
// before Run stopped it. The exit code is that worker's.
func Run(ctx context.Context, cfg JobConfig, signals <-chan os.Signal) (Result, error) {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	grace := cfg.KillGracePeriod
	if grace <= 0 {
		grace = 3 * time.Second
	}
	procs, files, err := startWorkers(ctx, cfg, log)
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
	}()
	if err != nil {
		return Result{}, err
	}
	sv := newSupervisor(cfg, log, grace, procs)
	defer sv.stopTimers()
	sv.supervise(ctx, signals)
	res := sv.result()
	if res.ExitCode == 0 && res.Interrupted == nil && ctx.Err() != nil {
		res.ExitCode = 1
		return res, ctx.Err()
	}
	return res, nil
}

// started is one running worker.
type started struct {
	w    Worker
	proc Proc
}

// startWorkers starts every worker with its output prefixed (and copied to
// cfg.OutputDir); on error the ones started are killed and waited for.
func startWorkers(ctx context.Context, cfg JobConfig, log *zap.Logger) ([]started, []*os.File, error) {
	outSink, errSink := NewSinks(orDiscard(cfg.Stdout), orDiscard(cfg.Stderr))
	procs := make([]started, 0, len(cfg.Workers))
	var files []*os.File
	killStarted := func() {
		for _, p := range procs {
			_ = p.proc.Signal(syscall.SIGKILL)
		}
		for _, p := range procs {
			p.proc.Wait()
		}
	}
	width := 1
	for _, w := range cfg.Workers {
		width = max(width, len(strconv.Itoa(w.Rank)))
	}
	for _, w := range cfg.Workers {
		var extraOut, extraErr io.Writer
		if cfg.OutputDir != "" {
			fo, fe, err := rankFiles(cfg.OutputDir, w.Rank, width)
			if err != nil {
				killStarted()
				return nil, files, err
			}
			files = append(files, fo, fe)
			extraOut, extraErr = fo, fe
		}
		proc, err := cfg.Spawner.Start(ctx, ProcSpec{
			Rank: w.Rank, Host: w.Host, Argv: w.Argv, Env: w.Env, Dir: w.Dir,
			Stdout: NewLineWriter(outSink, Prefix(w.Rank, "stdout"), extraOut),
			Stderr: NewLineWriter(errSink, Prefix(w.Rank, "stderr"), extraErr),
		})
		if err != nil {
			killStarted()
			return nil, files, err
		}
		log.Debug("started worker", zap.Int("rank", w.Rank), zap.String("host", w.Host), zap.Int("pid", proc.Pid()))
		procs = append(procs, started{w, proc})
	}
	return procs, files, nil
}

// supervisor watches the workers of one job: Run's loop and its state.
type supervisor struct {
	cfg   JobConfig
	log   *zap.Logger
	grace time.Duration
	procs []started

	exits chan exitEvent
	alive []bool
	live  int
	res   Result
	own   []bool // by worker: failed on its own (not stopped by Run)
	order []int  // workers in the order their failures of their own arrived
	first int    // the failure that stopped the job (index), or -1

	sent     map[syscall.Signal]bool // signals Run sent the workers
	stopping bool
	settling bool // a failure happened; the stop waits for settleC
	graceT   *time.Timer
	graceC   <-chan time.Time
	settleT  *time.Timer
	settleC  <-chan time.Time
}

type exitEvent struct {
	i  int
	st ExitStatus
}

func newSupervisor(cfg JobConfig, log *zap.Logger, grace time.Duration, procs []started) *supervisor {
	sv := &supervisor{cfg: cfg, log: log, grace: grace, procs: procs, first: -1,
		exits: make(chan exitEvent, len(procs)), alive: make([]bool, len(procs)), live: len(procs),
		own: make([]bool, len(procs)), sent: map[syscall.Signal]bool{},
		res: Result{Exits: make([]Exit, len(procs))}}
	for i, p := range procs {
		sv.alive[i] = true
		go func() { sv.exits <- exitEvent{i, p.proc.Wait()} }()
	}
	return sv
}

func (sv *supervisor) stopTimers() {
	for _, t := range []*time.Timer{sv.graceT, sv.settleT} {
		if t != nil {
			t.Stop()
		}
	}
}

// supervise runs until every worker exited.
func (sv *supervisor) supervise(ctx context.Context, signals <-chan os.Signal) {
	ctxDone := ctx.Done()
	for sv.live > 0 {
		select {
		case ev := <-sv.exits:
			sv.exited(ev)
		case <-sv.settleC:
			sv.settleC = nil
			sv.log.Warn("stopping the workers still running", zap.Int("workers", sv.live))
			sv.stop(syscall.SIGTERM)
		case sig := <-signals:
			sv.interrupted(sig)
		case <-ctxDone:
			ctxDone = nil
			sv.log.Warn("stopping the workers", zap.Error(ctx.Err()))
			sv.stop(syscall.SIGTERM)
		case <-sv.graceC:
			sv.graceC = nil
			sv.log.Warn(fmt.Sprintf("workers still running %v after being asked to stop; killing them", sv.grace), zap.Int("workers", sv.live))
			sv.sent[syscall.SIGKILL] = true
			sv.signalAll(syscall.SIGKILL)
		}
	}
}

func (sv *supervisor) signalAll(sig syscall.Signal) {
	for i, p := range sv.procs {
		if sv.alive[i] {
			if err := p.proc.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
				sv.log.Warn("cannot signal worker", zap.Int("rank", p.w.Rank), zap.String("host", p.w.Host), zap.Error(err))
			}
		}
	}
}

// stop asks the live workers to end with sig and arms the kill timer.
func (sv *supervisor) stop(sig syscall.Signal) {
	sv.sent[sig] = true
	sv.signalAll(sig)
	if !sv.stopping {
		sv.stopping = true
		sv.graceT = time.NewTimer(sv.grace)
		sv.graceC = sv.graceT.C
	}
}

func (sv *supervisor) interrupted(sig os.Signal) {
	ssig, ok := sig.(syscall.Signal)
	if !ok {
		ssig = syscall.SIGTERM
	}
	if sv.res.Interrupted != nil {
		sv.log.Warn("second signal: killing the workers", zap.String("signal", SignalName(ssig)))
		sv.sent[syscall.SIGKILL] = true
		sv.signalAll(syscall.SIGKILL)
		return
	}
	sv.res.Interrupted = sig
	sv.log.Warn("received "+SignalName(ssig)+"; forwarding it to the workers", zap.Int("workers", sv.live))
	sv.stop(ssig)
}

// exited records one worker's end and decides whether the job stops.
func (sv *supervisor) exited(ev exitEvent) {
	p := sv.procs[ev.i]
	sv.alive[ev.i] = false
	sv.live--
	e := Exit{Rank: p.w.Rank, Host: p.w.Host, Pid: p.proc.Pid(), Status: ev.st}
	sv.res.Exits[ev.i] = e
	if sv.cfg.OnExit != nil {
		sv.cfg.OnExit(e)
	}
	fields := []zap.Field{zap.Int("rank", e.Rank), zap.String("host", e.Host)}
	// Failures travel at different speeds (a remote exit crosses ssh; a
	// survivor may exit before the dead peer is reaped): a failure that is
	// not the job's stop may be the cause.
	if e.Status.Failed() && (!sv.stopping || ownFailure(e.Status, sv.sent)) {
		sv.own[ev.i] = true
		sv.order = append(sv.order, ev.i)
	}
	switch {
	case sv.stopping && sv.own[ev.i]:
		if c, ok := sv.cause(); ok && c.Rank == e.Rank {
			sv.log.Error(e.String()+" (the first failure)", fields...)
		} else {
			sv.log.Error(e.String()+" (while the job was stopping)", fields...)
		}
		return
	case !e.Status.Failed() || sv.stopping || sv.settling:
		sv.log.Debug("worker ended", append(fields, zap.Stringer("status", e.Status))...)
		return
	}
	sv.first = ev.i
	what := e.String()
	if c, ok := sv.cause(); ok && c.Rank != e.Rank {
		// This worker failed because of another: name the origin first.
		what = fmt.Sprintf("first failure: %s; %s", c.Description, e)
	}
	if sv.live == 0 {
		sv.log.Error(what, fields...)
		return
	}
	if d := settleFor(sv.cfg.Settle, e); d > 0 {
		sv.log.Error(fmt.Sprintf("%s; the other workers get %v to end on their own", what, d), fields...)
		sv.settling = true
		sv.settleT = time.NewTimer(d)
		sv.settleC = sv.settleT.C
		return
	}
	sv.log.Error(what+"; stopping the other workers", fields...)
	sv.stop(syscall.SIGTERM)
}

func (sv *supervisor) cause() (Cause, bool) {
	if sv.cfg.Cause == nil {
		return Cause{}, false
	}
	return sv.cfg.Cause()
}

// result picks the first failure (see Run) and the exit code.
func (sv *supervisor) result() Result {
	res := sv.res
	if c, ok := sv.cause(); ok {
		res.Cause = &c
	}
	first := pickFirst(sv.procs, res.Exits, sv.own, sv.order, res.Cause)
	if first >= 0 {
		e := res.Exits[first]
		res.FirstFailure = &e
		if sv.first >= 0 && first != sv.first {
			sv.log.Error("first failure: "+e.String(), zap.Int("rank", e.Rank), zap.String("host", e.Host))
		}
	}
	switch {
	case res.FirstFailure != nil:
		res.ExitCode = res.FirstFailure.Status.ExitCode()
	case res.Interrupted != nil:
		res.ExitCode = 128 + int(toSyscall(res.Interrupted))
	}
	return res
}

// pickFirst orders the failures of their own (order: by arrival) by the
// evidence of when they happened: the oracle's rank, then a death by a
// signal nobody in the job sent, then arrival. -1 when none failed.
func pickFirst(procs []started, exits []Exit, own []bool, order []int, cause *Cause) int {
	if len(order) == 0 {
		return -1
	}
	if cause != nil {
		for i, p := range procs {
			if p.w.Rank == cause.Rank && own[i] {
				return i
			}
		}
	}
	for _, i := range order {
		if exits[i].Status.Signal != 0 {
			return i
		}
	}
	return order[0]
}

func settleFor(f func(Exit) time.Duration, e Exit) time.Duration {
	if f == nil {
		return 0
	}
	return f(e)
}

// ownFailure reports whether a worker that ended while the job was being
// stopped was killed by a signal Run did not send (SIGKILL from outside,
// SIGSEGV): a failure of its own rather than the stop. Exit codes are not
// counted: a worker may well exit 1 when asked to stop.
func ownFailure(st ExitStatus, sent map[syscall.Signal]bool) bool {
	return st.Signal != 0 && !sent[st.Signal]
}

func toSyscall(s os.Signal) syscall.Signal {
	if ss, ok := s.(syscall.Signal); ok {
		return ss
	}
	return syscall.SIGTERM
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// rankFiles creates dir/rank.N/stdout and stderr.
func rankFiles(dir string, rank, width int) (*os.File, *os.File, error) {
	d := filepath.Join(dir, fmt.Sprintf("rank.%0*d", width, rank))
	if err := os.MkdirAll(d, 0o755); err != nil {
		return nil, nil, fmt.Errorf("output directory for rank %d: %w", rank, err)
	}
	fo, err := os.Create(filepath.Join(d, "stdout"))
	if err != nil {
		return nil, nil, fmt.Errorf("output file for rank %d: %w", rank, err)
	}
	fe, err := os.Create(filepath.Join(d, "stderr"))
	if err != nil {
		fo.Close()
		return nil, nil, fmt.Errorf("output file for rank %d: %w", rank, err)
	}
	return fo, fe, nil
}
