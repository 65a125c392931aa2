package launch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrSpawn marks a worker that could not be started.
var ErrSpawn = errors.New("cannot start worker")

// ProcSpec describes one worker process.
type ProcSpec struct {
	Rank int
	Host string   // where it runs ("localhost" for Local)
	Argv []string // program and arguments; Argv[0] is resolved through PATH
	Env  []string // the complete environment
	Dir  string   // working directory; "" = the launcher's
	// Stdout and Stderr receive the process's output. They are written by
	// one goroutine each and flushed (if they have a Flush method) at exit.
	Stdout, Stderr io.Writer
}

// Proc is a started worker.
type Proc interface {
	Pid() int
	// Signal sends sig to the worker and everything in its process group.
	Signal(sig syscall.Signal) error
	// Wait blocks until the process exited and its output was drained.
	// Call it once.
	Wait() ExitStatus
}

// Spawner starts workers. Local starts them on this machine; a remote
// spawner (ssh) implements the same interface.
type Spawner interface {
	Start(ctx context.Context, spec ProcSpec) (Proc, error)
}

// ExitStatus is how a worker ended.
type ExitStatus struct {
	Code   int            // exit code when it exited normally
	Signal syscall.Signal // the signal that killed it, or 0
	Err    error          // waiting failed or the connection to its host was lost; says which
}

// Failed reports whether the worker did not exit with code 0.
func (s ExitStatus) Failed() bool { return s.Code != 0 || s.Signal != 0 || s.Err != nil }

// ExitCode is the code a shell would report: the exit code, 128+signal for
// a killed process, 1 when waiting failed.
func (s ExitStatus) ExitCode() int {
	switch {
	case s.Signal != 0:
		return 128 + int(s.Signal)
	case s.Err != nil:
		return 1
	}
	return s.Code
}

// String says how the worker ended: "exited with code 3", "was killed by
// signal SIGKILL".
func (s ExitStatus) String() string {
	switch {
	case s.Signal != 0:
		return "was killed by signal " + SignalName(s.Signal)
	case s.Err != nil:
		return s.Err.Error()
	}
	return fmt.Sprintf("exited with code %d", s.Code)
}

// SignalName returns "SIGKILL" style names, "signal 42" when unknown.
func SignalName(sig syscall.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return n
	}
	return fmt.Sprintf("signal %d", int(sig))
}

// Local starts workers on this machine. Create it with NewLocal and Close
// it once every process it started has been waited for.
type Local struct {
	// DrainTimeout bounds how long Wait waits for output after the process
	// and its process group are gone (something that left the group may
	// still hold the pipes); 0 means 2 s.
	DrainTimeout time.Duration

	reqs      chan spawnReq
	stop      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
}

type spawnReq struct {
	cmd   *exec.Cmd
	reply chan error
}

// NewLocal starts the goroutine that forks the workers.
func NewLocal() *Local {
	l := &Local{reqs: make(chan spawnReq), stop: make(chan struct{}), stopped: make(chan struct{})}
	go l.forkLoop()
	return l
}

// forkLoop forks every child from one locked OS thread: Pdeathsig fires
// when the forking thread exits, so that thread must live as long as the
// children. It is never unlocked; when the loop ends the runtime retires the
// thread (killing any child still running, which is the intent: Close
// is only called once they are gone).
func (l *Local) forkLoop() {
	runtime.LockOSThread()
	defer close(l.stopped)
	for {
		select {
		case r := <-l.reqs:
			r.reply <- r.cmd.Start()
		case <-l.stop:
			return
		}
	}
}

// Close ends the fork goroutine. Processes still running get SIGKILL.
func (l *Local) Close() {
	l.closeOnce.Do(func() { close(l.stop) })
	<-l.stopped
}

// Start starts spec's program in a new process group.
func (l *Local) Start(ctx context.Context, spec ProcSpec) (Proc, error) {
	if len(spec.Argv) == 0 {
		return nil, fmt.Errorf("%w: rank %d: no program", ErrSpawn, spec.Rank)
	}
	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	if cmd.Err != nil {
		return nil, fmt.Errorf("%w: rank %d: %v", ErrSpawn, spec.Rank, cmd.Err)
	}
	cmd.Env, cmd.Dir = spec.Env, spec.Dir
	cmd.SysProcAttr = sysProcAttr()
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("%w: rank %d: %v", ErrSpawn, spec.Rank, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("%w: rank %d: %v", ErrSpawn, spec.Rank, err)
	}
	cmd.Stdin = nil // /dev/null: workers do not share the terminal's input
	cmd.Stdout, cmd.Stderr = outW, errW
	err = l.fork(ctx, cmd)
	// The child holds its own copies of the write ends.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("%w: rank %d: %s: %v", ErrSpawn, spec.Rank, spec.Argv[0], err)
	}
	p := &localProc{cmd: cmd, pid: cmd.Process.Pid, drain: l.DrainTimeout, pipes: []*os.File{outR, errR}}
	if p.drain <= 0 {
		p.drain = 2 * time.Second
	}
	p.copiers.Add(2)
	go p.copy(outR, spec.Stdout)
	go p.copy(errR, spec.Stderr)
	return p, nil
}

// fork starts cmd from the locked fork thread (see forkLoop), so a
// Pdeathsig in cmd.SysProcAttr fires when the launcher dies.
func (l *Local) fork(ctx context.Context, cmd *exec.Cmd) error {
	reply := make(chan error, 1)
	select {
	case l.reqs <- spawnReq{cmd: cmd, reply: reply}:
		return <-reply
	case <-l.stop:
		return errors.New("spawner closed")
	case <-ctx.Done():
		return ctx.Err()
	}
}

type localProc struct {
	cmd     *exec.Cmd
	pid     int
	drain   time.Duration
	pipes   []*os.File
	copiers sync.WaitGroup

	mu     sync.Mutex
	exited bool
}

func (p *localProc) Pid() int { return p.pid }

func (p *localProc) copy(r *os.File, w io.Writer) {
	defer p.copiers.Done()
	if w == nil {
		w = io.Discard
	}
	_, _ = io.Copy(w, r)
	if f, ok := w.(interface{ Flush() }); ok {
		f.Flush()
	}
}

func (p *localProc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		// The group id may be reused once the group is gone.
		return os.ErrProcessDone
	}
	err := syscall.Kill(-p.pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

func (p *localProc) Wait() ExitStatus {
	err := p.cmd.Wait()
	p.mu.Lock()
	// Whatever the worker left in its group (background children) goes
	// with it, so no orphan outlives the job; the group id is still ours
	// while any member lives.
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	p.exited = true
	p.mu.Unlock()

	drained := make(chan struct{})
	go func() { p.copiers.Wait(); close(drained) }()
	t := time.NewTimer(p.drain)
	select {
	case <-drained:
	case <-t.C:
		// Something outside the group keeps the pipes open; stop reading.
		for _, f := range p.pipes {
			_ = f.Close()
		}
		<-drained
	}
	t.Stop()
	for _, f := range p.pipes {
		_ = f.Close()
	}
	return exitStatus(err)
}

func exitStatus(err error) ExitStatus {
	if err == nil {
		return ExitStatus{}
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
			if ws.Signaled() {
				return ExitStatus{Signal: ws.Signal()}
			}
			return ExitStatus{Code: ws.ExitStatus()}
		}
		return ExitStatus{Code: ee.ExitCode()}
	}
	return ExitStatus{Err: fmt.Errorf("could not be waited for: %w", err)}
}
