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
	control := func(format string, args ...any) {
		fmt.Fprintf(stderr, controlMark+format+"\n", args...)
	}
	fail := func(code int, format string, args ...any) int {
		msg := fmt.Sprintf(format, args...)
		fmt.Fprintln(stderr, "gorun: "+msg)
		control("error %s", msg)
		control("exit code %d", code)
		return code
	}
	host, _ := os.Hostname()
	br := bufio.NewReader(in)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return fail(1, "on %s: reading the worker request from the launcher: %v", host, err)
	}
	var req remoteRequest
	if err := json.Unmarshal(line, &req); err != nil || len(req.Argv) == 0 {
		return fail(1, "on %s: malformed worker request from the launcher (%v)", host, err)
	}
	grace, err := time.ParseDuration(req.Grace)
	if err != nil || grace <= 0 {
		grace = 3 * time.Second
	}
	if req.Dir != "" {
		if err := os.Chdir(req.Dir); err != nil {
			return fail(1, "rank %d on %s: working directory: %v (the launcher's directory must exist on every host)", req.Rank, host, err)
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
		return fail(127, "rank %d on %s: %s: %v", req.Rank, host, req.Argv[0], programError(cmd.Err))
	}
	cmd.Env = WithGOMAXPROCS(append(os.Environ(), req.Env...), runtime.NumCPU()) // later entries win
	for _, hook := range envHooks {
		cmd.Env = hook(cmd.Env)
	}
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = sysProcAttr()
	// Pdeathsig is tied to the forking thread; this one stays locked for
	// the life of the process.
	runtime.LockOSThread()
	if err := cmd.Start(); err != nil {
		return fail(127, "rank %d on %s: %s: %v", req.Rank, host, req.Argv[0], programError(err))
	}
	pid := cmd.Process.Pid
	control("pid %d", pid)
	killGroup := func(sig syscall.Signal) { _ = syscall.Kill(-pid, sig) }

	silence, err := time.ParseDuration(req.Silence)
	if err != nil {
		silence = 0
	}

	type cmdLine struct {
		sig syscall.Signal
		eof bool
	}
	cmds := make(chan cmdLine, 8)
	go func() {
		for {
			l, err := br.ReadString('\n')
			f := strings.Fields(l)
			switch {
			case len(f) == 2 && f[0] == "signal":
				if n, perr := strconv.Atoi(f[1]); perr == nil && n > 0 && n < 65 {
					cmds <- cmdLine{sig: syscall.Signal(n)}
				}
			case len(f) > 0: // "ping" and anything else: the launcher lives
				cmds <- cmdLine{}
			}
			if err != nil {
				cmds <- cmdLine{eof: true}
				return
			}
		}
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var graceC, silenceC <-chan time.Time
	var silenceTimer *time.Timer
	if silence > 0 {
		silenceTimer = time.NewTimer(silence)
		defer silenceTimer.Stop()
		silenceC = silenceTimer.C
	}
	launcherGone := func() {
		if graceC == nil {
			killGroup(syscall.SIGTERM)
			graceC = time.After(grace)
		}
	}
	for {
		select {
		case werr := <-done:
			killGroup(syscall.SIGKILL) // leftovers of the worker's group
			st := exitStatus(werr)
			if st.Signal != 0 {
				control("exit signal %d", int(st.Signal))
				return 128 + int(st.Signal)
			}
			code := st.ExitCode()
			control("exit code %d", code)
			return code
		case c := <-cmds:
			switch {
			case c.eof:
				launcherGone()
			case c.sig != 0:
				killGroup(c.sig)
			}
			if silenceTimer != nil && !c.eof {
				silenceTimer.Reset(silence)
			}
		case <-silenceC:
			silenceC = nil
			fmt.Fprintf(stderr, "gorun: rank %d on %s: no word from the launcher for %v; stopping the worker\n", req.Rank, host, silence)
			launcherGone()
		case s := <-sigs:
			if s == syscall.SIGINT || s == syscall.SIGTERM {
				killGroup(s.(syscall.Signal))
			}
		case <-graceC:
			killGroup(syscall.SIGKILL)
		}
	}
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
