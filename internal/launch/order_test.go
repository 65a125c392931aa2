package launch

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// scriptedProc is a worker whose end the test scripts: it ends with its status
// when release is closed, or, if it has none, with the first stopping
// signal Run sends it.
type scriptedProc struct {
	pid     int
	status  *ExitStatus // nil: runs until signalled
	release chan struct{}

	once sync.Once
	sig  chan syscall.Signal
}

func (p *scriptedProc) Pid() int { return p.pid }

func (p *scriptedProc) Signal(sig syscall.Signal) error {
	if p.status == nil && (sig == syscall.SIGTERM || sig == syscall.SIGKILL) {
		p.once.Do(func() { p.sig <- sig })
	}
	return nil
}

func (p *scriptedProc) Wait() ExitStatus {
	if p.status != nil {
		<-p.release
		return *p.status
	}
	return ExitStatus{Signal: <-p.sig}
}

type scriptedSpawner struct{ procs []*scriptedProc }

func (s scriptedSpawner) Start(_ context.Context, spec ProcSpec) (Proc, error) {
	return s.procs[spec.Rank], nil
}

// TestFirstFailureIsOrderedByDeathNotByWait: the worker whose failure the
// job's started at is the first failure even when waiting for it returns
// after waiting for the survivors that failed because of it.
func TestFirstFailureIsOrderedByDeathNotByWait(t *testing.T) {
	killed := &ExitStatus{Signal: syscall.SIGKILL}
	lostPeer := &ExitStatus{Code: 3}
	ownErr := &ExitStatus{Code: 1}
	type worker struct {
		status *ExitStatus // nil: runs until stopped
		after  int         // released once this rank's exit was seen (-1: at once)
	}
	for _, tc := range []struct {
		name      string
		workers   []worker
		cause     *Cause // the oracle's verdict
		wantFirst int
		wantCode  int
		wantLog   string // the first error line names this first
		// reapedLater: the first failure's exit arrives after another
		reapedLater bool
	}{
		{"killed rank reaped after the survivor, no oracle",
			[]worker{{nil, 0}, {killed, 2}, {lostPeer, -1}}, nil, 1, 137, "rank 2 ", true},
		{"killed rank reaped after the survivor, oracle names it",
			[]worker{{nil, 0}, {killed, 2}, {lostPeer, -1}}, &Cause{1, "rank 1 on localhost was lost (first noticed by rank 2)"}, 1, 137,
			"first failure: rank 1 on localhost was lost", true},
		{"stalled rank stopped by the launcher: the oracle's rank is the cause, the survivor's code the exit code",
			[]worker{{nil, 0}, {nil, 0}, {lostPeer, -1}}, &Cause{1, "rank 1 on localhost stalled (rank 2 waited on it)"}, 2, 3,
			"first failure: rank 1 on localhost stalled", false},
		{"two failures of their own: the first to arrive",
			[]worker{{ownErr, -1}, {nil, 0}, {lostPeer, 0}}, nil, 0, 1, "rank 0 ", false},
		{"a signal death outranks an exit code that arrived first",
			[]worker{{lostPeer, -1}, {&ExitStatus{Signal: syscall.SIGSEGV}, 0}}, nil, 1, 128 + 11, "rank 0 ", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sp scriptedSpawner
			var workers []Worker
			for r, w := range tc.workers {
				sp.procs = append(sp.procs, &scriptedProc{pid: 100 + r, status: w.status, release: make(chan struct{}), sig: make(chan syscall.Signal, 1)})
				workers = append(workers, Worker{Rank: r, Host: "localhost"})
			}
			for r, w := range tc.workers {
				if w.status != nil && w.after < 0 {
					close(sp.procs[r].release)
				}
			}
			core, logs := observer.New(zapcore.ErrorLevel)
			cfg := JobConfig{Spawner: sp, Workers: workers, Logger: zap.New(core), KillGracePeriod: time.Hour,
				OnExit: func(e Exit) {
					for r, w := range tc.workers {
						if w.status != nil && w.after == e.Rank {
							close(sp.procs[r].release)
						}
					}
				}}
			if tc.cause != nil {
				cfg.Cause = func() (Cause, bool) { return *tc.cause, true }
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := Run(ctx, cfg, nil)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if res.FirstFailure == nil || res.FirstFailure.Rank != tc.wantFirst || res.ExitCode != tc.wantCode {
				t.Fatalf("first failure %v, exit code %d; want rank %d, %d", res.FirstFailure, res.ExitCode, tc.wantFirst, tc.wantCode)
			}
			if (tc.cause == nil) != (res.Cause == nil) {
				t.Errorf("cause %+v, want %+v", res.Cause, tc.cause)
			}
			entries := logs.All()
			if len(entries) == 0 || !strings.HasPrefix(entries[0].Message, tc.wantLog) {
				t.Errorf("error lines %v, want the first to start with %q", entries, tc.wantLog)
			}
			if tc.reapedLater {
				// The last error line names the first failure.
				if last := entries[len(entries)-1].Message; !strings.Contains(last, res.FirstFailure.String()) {
					t.Errorf("last error line %q does not name %v", last, res.FirstFailure)
				}
			}
		})
	}
}
