package launch

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RemoteExec is the remote half of the SSH spawner: gorun runs it (hidden
// flag RemoteExecFlag) on the worker's host, with stdin, stdout and stderr
// being the ssh channel. It reads one JSON request line from in, starts
// the worker in its own process group with the request's environment laid
// over this session's, and then:
//
//   - "signal N" lines on in are sent to the worker's process group;
//   - the end of in (the launcher or its ssh client died, the connection
//     dropped) sends SIGTERM to the group, and SIGKILL after the grace
//     period, so no worker outlives its launcher;
//   - when the worker exits, whatever it left in its group is killed and the
//     exit is reported to the launcher as a control line on stderr.
//
// It returns the code the process should exit with. It is meant to be the
// whole life of a process: the goroutine reading in stays blocked in Read
// until the process exits. envHooks adjust the worker's environment on its
// host (gorun's GPU mapping).
func RemoteExec(in io.Reader, stdout, stderr *os.File, envHooks ...func([]string) []string) int {
	sigs := make(chan os.Signal, 8)
	// SIGHUP and SIGPIPE must not kill the wrapper before it has killed the
	// worker; Notify (unlike Ignore) is not inherited by the worker.
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGPIPE, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	s := &remoteSession{stderr: stderr}
	s.host, _ = os.Hostname()
	br := bufio.NewReader(in)
	req, err := readRemoteRequest(br, s.host)
	if err != nil {
		return s.fail(1, "%v", err)
	}
	s.req = req
	cmd, code, err := s.startWorker(stdout, envHooks)
	if err != nil {
		return s.fail(code, "%v", err)
	}
	s.pid = cmd.Process.Pid
	s.control("pid %d", s.pid)
	lines := make(chan launcherLine, 8)
	go readLauncherLines(br, lines)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return s.supervise(done, lines, sigs)
}

// remoteSession is one run of RemoteExec: the request it serves, the
// worker it started, and the stderr its control lines go to.
type remoteSession struct {
	stderr *os.File
	host   string
	req    remoteRequest
	pid    int // the worker's, which is also its process group's
}

// control writes a control line for the launcher on stderr.
func (s *remoteSession) control(format string, args ...any) {
	fmt.Fprintf(s.stderr, controlMark+format+"\n", args...)
}

// fail reports a failure to start the worker, to the person and to the
// launcher, and returns the code the process exits with.
func (s *remoteSession) fail(code int, format string, args ...any) int {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintln(s.stderr, "gorun: "+msg)
	s.control("error %s", msg)
	s.control("exit code %d", code)
	return code
}

func (s *remoteSession) killGroup(sig syscall.Signal) { _ = syscall.Kill(-s.pid, sig) }

// readRemoteRequest reads and checks the launcher's first line.
func readRemoteRequest(br *bufio.Reader, host string) (remoteRequest, error) {
	var req remoteRequest
	line, err := br.ReadBytes('\n')
	if err != nil {
		return req, fmt.Errorf("on %s: reading the worker request from the launcher: %v", host, err)
	}
	if err := json.Unmarshal(line, &req); err != nil || len(req.Argv) == 0 {
		return req, fmt.Errorf("on %s: malformed worker request from the launcher (%v)", host, err)
	}
	return req, nil
}

// startWorker starts the requested program in its own process group in
// the request's directory and environment. On failure it returns the exit
// code to report: 1 for the directory, 127 for the program.
func (s *remoteSession) startWorker(stdout *os.File, envHooks []func([]string) []string) (*exec.Cmd, int, error) {
	req := s.req
	if req.Dir != "" {
		if err := os.Chdir(req.Dir); err != nil {
			return nil, 1, fmt.Errorf("rank %d on %s: working directory: %v (the launcher's directory must exist on every host)", req.Rank, s.host, err)
		}
	}
	for _, kv := range req.Env {
		// PATH decides where a bare program name is found.
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			_ = os.Setenv("PATH", v)
		}
	}
	cmd := exec.Command(req.Argv[0], req.Argv[1:]...)
	if cmd.Err != nil {
		return nil, 127, fmt.Errorf("rank %d on %s: %s: %v", req.Rank, s.host, req.Argv[0], programError(cmd.Err))
	}
	cmd.Env = WithGOMAXPROCS(append(os.Environ(), req.Env...), runtime.NumCPU()) // later entries win
	cmd.Env = WithCPUBinding(cmd.Env, AllowedCPUs())
	for _, hook := range envHooks {
		cmd.Env = hook(cmd.Env)
	}
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = stdout, s.stderr
	cmd.SysProcAttr = sysProcAttr()
	// Pdeathsig is tied to the forking thread; this one stays locked for
	// the life of the process.
	runtime.LockOSThread()
	if err := cmd.Start(); err != nil {
		return nil, 127, fmt.Errorf("rank %d on %s: %s: %v", req.Rank, s.host, req.Argv[0], programError(err))
	}
	return cmd, 0, nil
}

// launcherLine is one line from the launcher after the request: a signal
// to forward, a sign of life, or the end of the stream.
type launcherLine struct {
	sig syscall.Signal
	eof bool
}

// readLauncherLines turns the launcher's lines into launcherLines until
// the stream ends. It is meant to block in Read for the process's life.
func readLauncherLines(br *bufio.Reader, lines chan<- launcherLine) {
	for {
		l, err := br.ReadString('\n')
		f := strings.Fields(l)
		switch {
		case len(f) == 2 && f[0] == "signal":
			if n, perr := strconv.Atoi(f[1]); perr == nil && n > 0 && n < 65 {
				lines <- launcherLine{sig: syscall.Signal(n)}
			}
		case len(f) > 0: // "ping" and anything else: the launcher lives
			lines <- launcherLine{}
		}
		if err != nil {
			lines <- launcherLine{eof: true}
			return
		}
	}
}

// supervise forwards signals to the worker's group and stops it when the
// launcher is gone or silent, until the worker exits; it returns the code
// the process exits with.
func (s *remoteSession) supervise(done <-chan error, lines <-chan launcherLine, sigs <-chan os.Signal) int {
	grace, err := time.ParseDuration(s.req.Grace)
	if err != nil || grace <= 0 {
		grace = 3 * time.Second
	}
	silence, err := time.ParseDuration(s.req.Silence)
	if err != nil {
		silence = 0
	}
	var graceC, silenceC <-chan time.Time
	var silenceTimer *time.Timer
	if silence > 0 {
		silenceTimer = time.NewTimer(silence)
		defer silenceTimer.Stop()
		silenceC = silenceTimer.C
	}
	launcherGone := func() {
		if graceC == nil {
			s.killGroup(syscall.SIGTERM)
			graceC = time.After(grace)
		}
	}
	for {
		select {
		case werr := <-done:
			return s.reportExit(werr)
		case c := <-lines:
			switch {
			case c.eof:
				launcherGone()
			case c.sig != 0:
				s.killGroup(c.sig)
			}
			if silenceTimer != nil && !c.eof {
				silenceTimer.Reset(silence)
			}
		case <-silenceC:
			silenceC = nil
			fmt.Fprintf(s.stderr, "gorun: rank %d on %s: no word from the launcher for %v; stopping the worker\n", s.req.Rank, s.host, silence)
			launcherGone()
		case sig := <-sigs:
			if sig == syscall.SIGINT || sig == syscall.SIGTERM {
				s.killGroup(sig.(syscall.Signal))
			}
		case <-graceC:
			s.killGroup(syscall.SIGKILL)
		}
	}
}

// reportExit kills what the worker left in its group, tells the launcher
// how the worker ended, and returns the code the process exits with.
func (s *remoteSession) reportExit(werr error) int {
	s.killGroup(syscall.SIGKILL) // leftovers of the worker's group
	st := exitStatus(werr)
	if st.Signal != 0 {
		s.control("exit signal %d", int(st.Signal))
		return 128 + int(st.Signal)
	}
	code := st.ExitCode()
	s.control("exit code %d", code)
	return code
}

func programError(err error) string {
	var ee *exec.Error
	if errors.As(err, &ee) {
		err = ee.Err
	}
	switch {
	case errors.Is(err, exec.ErrNotFound):
		return "not found in PATH"
	case errors.Is(err, os.ErrNotExist):
		return "no such file"
	case errors.Is(err, os.ErrPermission):
		return "permission denied"
	}
	return err.Error()
}
