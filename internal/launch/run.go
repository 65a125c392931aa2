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

// Result is how a job ended.
type Result struct {
	// ExitCode is what the launcher should exit with.
	ExitCode int
	// FirstFailure is the first worker that failed on its own (not because
	// Run stopped it), or nil.
	FirstFailure *Exit
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
func Run(ctx context.Context, cfg JobConfig, signals <-chan os.Signal) (Result, error) {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	grace := cfg.KillGracePeriod
	if grace <= 0 {
		grace = 3 * time.Second
	}
	outSink, errSink := NewSinks(orDiscard(cfg.Stdout), orDiscard(cfg.Stderr))

	type started struct {
		w    Worker
		proc Proc
	}
	procs := make([]started, 0, len(cfg.Workers))
	var files []*os.File
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
	}()
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
				return Result{}, err
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
			return Result{}, err
		}
		log.Debug("started worker", zap.Int("rank", w.Rank), zap.String("host", w.Host), zap.Int("pid", proc.Pid()))
		procs = append(procs, started{w, proc})
	}

	type exitEvent struct {
		i  int
		st ExitStatus
	}
	exits := make(chan exitEvent, len(procs))
	for i, p := range procs {
		go func() { exits <- exitEvent{i, p.proc.Wait()} }()
	}

	res := Result{Exits: make([]Exit, len(procs))}
	alive := make([]bool, len(procs))
	for i := range alive {
		alive[i] = true
	}
	live := len(procs)
	var graceC <-chan time.Time
	var graceTimer *time.Timer
	defer func() {
		if graceTimer != nil {
			graceTimer.Stop()
		}
	}()
	stopping := false
	signalAll := func(sig syscall.Signal) {
		for i, p := range procs {
			if alive[i] {
				if err := p.proc.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
					log.Warn("cannot signal worker", zap.Int("rank", p.w.Rank), zap.String("host", p.w.Host), zap.Error(err))
				}
			}
		}
	}
	// stop asks the live workers to end with sig and arms the kill timer.
	sent := map[syscall.Signal]bool{} // signals Run sent the workers
	stop := func(sig syscall.Signal) {
		sent[sig] = true
		signalAll(sig)
		if !stopping {
			stopping = true
			graceTimer = time.NewTimer(grace)
			graceC = graceTimer.C
		}
	}
	var settleC <-chan time.Time
	settling := false // a failure happened; the stop waits for settleC
	var ctxDone <-chan struct{} = ctx.Done()
	for live > 0 {
		select {
		case ev := <-exits:
			p := procs[ev.i]
			alive[ev.i] = false
			live--
			e := Exit{Rank: p.w.Rank, Host: p.w.Host, Pid: p.proc.Pid(), Status: ev.st}
			res.Exits[ev.i] = e
			if cfg.OnExit != nil {
				cfg.OnExit(e)
			}
			if stopping && ownFailure(e.Status, sent) {
				// Failures travel at different speeds (a remote exit crosses
				// ssh): one that is not the job's stop may be the cause.
				log.Error(e.String()+" (while the job was stopping)", zap.Int("rank", e.Rank), zap.String("host", e.Host))
				continue
			}
			if !e.Status.Failed() || stopping || settling {
				log.Debug("worker ended", zap.Int("rank", e.Rank), zap.String("host", e.Host), zap.Stringer("status", e.Status))
				continue
			}
			res.FirstFailure = &e
			if live == 0 {
				log.Error(e.String(), zap.Int("rank", e.Rank), zap.String("host", e.Host))
				continue
			}
			if d := settleFor(cfg.Settle, e); d > 0 {
				log.Error(fmt.Sprintf("%s; the other workers get %v to end on their own", e, d), zap.Int("rank", e.Rank), zap.String("host", e.Host))
				settling = true
				t := time.NewTimer(d)
				defer t.Stop()
				settleC = t.C
				continue
			}
			log.Error(e.String()+"; stopping the other workers", zap.Int("rank", e.Rank), zap.String("host", e.Host))
			stop(syscall.SIGTERM)
		case <-settleC:
			settleC = nil
			log.Warn("stopping the workers still running", zap.Int("workers", live))
			stop(syscall.SIGTERM)
		case sig := <-signals:
			ssig, ok := sig.(syscall.Signal)
			if !ok {
				ssig = syscall.SIGTERM
			}
			if res.Interrupted != nil {
				log.Warn("second signal: killing the workers", zap.String("signal", SignalName(ssig)))
				sent[syscall.SIGKILL] = true
				signalAll(syscall.SIGKILL)
				continue
			}
			res.Interrupted = sig
			log.Warn("received "+SignalName(ssig)+"; forwarding it to the workers", zap.Int("workers", live))
			stop(ssig)
		case <-ctxDone:
			ctxDone = nil
			log.Warn("stopping the workers", zap.Error(ctx.Err()))
			stop(syscall.SIGTERM)
		case <-graceC:
			graceC = nil
			log.Warn(fmt.Sprintf("workers still running %v after being asked to stop; killing them", grace), zap.Int("workers", live))
			sent[syscall.SIGKILL] = true
			signalAll(syscall.SIGKILL)
		}
	}
	switch {
	case res.FirstFailure != nil:
		res.ExitCode = res.FirstFailure.Status.ExitCode()
	case res.Interrupted != nil:
		res.ExitCode = 128 + int(toSyscall(res.Interrupted))
	case ctx.Err() != nil:
		res.ExitCode = 1
		return res, ctx.Err()
	}
	return res, nil
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
