package launch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrRemote marks a remote worker whose ssh connection failed or was lost.
var ErrRemote = errors.New("remote worker lost")

// RemoteExecFlag is the hidden gorun mode that runs on a remote host
// between sshd and the worker (see RemoteExec).
const RemoteExecFlag = "--internal-remote-exec"

// RemoteProbeFlag is the hidden gorun mode of the preflight check (see
// RemoteProbe).
const RemoteProbeFlag = "--internal-remote-probe"

// SSHConfig is how the launcher reaches other hosts.
type SSHConfig struct {
	Program      string   // ssh client; "" means "ssh"
	Port         int      // -p; 0 = ssh's default or its config
	IdentityFile string   // -i; "" = ssh's default
	ExtraArgs    []string // more ssh options (GOROVOD_SSH_ARGS), e.g. -F FILE
	// ConnectTimeout bounds ssh's TCP connect and authentication; 0 means 10 s.
	ConnectTimeout time.Duration
}

// Args returns the ssh command line that runs remoteCommand (one shell
// command line) on host. BatchMode comes first so nothing can turn on a
// password prompt; the user's options come before gorun's defaults
// because ssh keeps the first value it sees for an option.
func (c SSHConfig) Args(host, remoteCommand string) []string {
	prog := c.Program
	if prog == "" {
		prog = "ssh"
	}
	args := []string{prog, "-o", "BatchMode=yes"}
	if c.Port > 0 {
		args = append(args, "-p", strconv.Itoa(c.Port))
	}
	if c.IdentityFile != "" {
		args = append(args, "-i", c.IdentityFile)
	}
	args = append(args, c.ExtraArgs...)
	timeout := c.ConnectTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	secs := int((timeout + time.Second - 1) / time.Second)
	args = append(args,
		"-o", "ConnectTimeout="+strconv.Itoa(secs),
		// A connection that stops answering (host gone, network cut) ends
		// ssh in ~15 s, which ends the worker's slot in the job.
		"-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
		"-T", // no terminal: the worker's output stays two clean streams
		"--", host, remoteCommand)
	return args
}

// SSH starts workers on other hosts: ssh runs `gorun --internal-remote-exec`
// there (RemoteGorun, the same path as on the launcher), which reads the
// worker's argv, environment and directory from stdin, starts it in its own
// process group, and kills that group when stdin ends, i.e. when ssh or the
// launcher dies. Signals reach the worker as commands on the same stdin.
type SSH struct {
	Config SSHConfig
	// Forker forks the ssh clients, so that they die with the launcher
	// (Pdeathsig) and their workers with them.
	Forker *Local
	// RemoteGorun is gorun's absolute path, the same on every host.
	RemoteGorun string
	// KillGracePeriod is how long a worker whose launcher vanished gets
	// between SIGTERM and SIGKILL; 0 means 3 s.
	KillGracePeriod time.Duration
	// DrainTimeout bounds the wait for output after ssh exited; 0 means 2 s.
	DrainTimeout time.Duration
	// SilenceTimeout is how long a remote wrapper waits without a word
	// from the launcher (it pings every SilenceTimeout/3, at most every
	// 2 s) before it treats the launcher as gone and stops the worker: the
	// case of a network cut that sshd does not notice. 0 means 30 s.
	SilenceTimeout time.Duration
	// HandshakesPerHost bounds the ssh connections to one host that are
	// still being set up (a connection counts until its worker started):
	// sshd's default MaxStartups (10:30:100) starts dropping connections
	// beyond 10 unauthenticated ones. 0 means 8.
	HandshakesPerHost int

	semMu sync.Mutex
	sems  map[string]chan struct{}
}

// acquire takes one of host's handshake slots; the returned func gives it
// back (idempotent).
func (s *SSH) acquire(ctx context.Context, host string) (func(), error) {
	s.semMu.Lock()
	if s.sems == nil {
		s.sems = map[string]chan struct{}{}
	}
	sem, ok := s.sems[host]
	if !ok {
		n := s.HandshakesPerHost
		if n <= 0 {
			n = 8
		}
		sem = make(chan struct{}, n)
		s.sems[host] = sem
	}
	s.semMu.Unlock()
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() { once.Do(func() { <-sem }) }, nil
}

func (s *SSH) silence() (timeout, ping time.Duration) {
	timeout = s.SilenceTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return timeout, min(2*time.Second, timeout/3)
}

// remoteRequest is the first line the launcher writes to the remote
// wrapper's stdin. The environment travels here, not on the ssh command
// line, so the job secret never shows in a process list and the size of
// the environment is not bounded by the command line's.
type remoteRequest struct {
	Rank  int      `json:"rank"`
	Host  string   `json:"host"`
	Dir   string   `json:"dir"`
	Argv  []string `json:"argv"`
	Env   []string `json:"env"`
	Grace string   `json:"grace"`
	// Silence is how long the wrapper goes without a line from the
	// launcher before it stops the worker; "" = never.
	Silence string `json:"silence,omitempty"`
}

// Start implements Spawner: it forks ssh and hands the worker to the
// remote wrapper. It does not wait for the remote side; a failure there
// (host unreachable, program missing) shows as the worker's exit.
func (s *SSH) Start(ctx context.Context, spec ProcSpec) (Proc, error) {
	if len(spec.Argv) == 0 {
		return nil, fmt.Errorf("%w: rank %d: no program", ErrSpawn, spec.Rank)
	}
	if s.Forker == nil || s.RemoteGorun == "" {
		return nil, fmt.Errorf("%w: rank %d: ssh spawner without Forker or RemoteGorun", ErrSpawn, spec.Rank)
	}
	req, err := s.request(spec)
	if err != nil {
		return nil, err
	}
	release, err := s.acquire(ctx, spec.Host)
	if err != nil {
		return nil, fmt.Errorf("%w: rank %d on %s: waiting for an ssh connection slot: %v", ErrSpawn, spec.Rank, spec.Host, err)
	}
	cmd, inW, outR, errR, err := s.forkSSH(ctx, spec)
	if err != nil {
		release()
		return nil, err
	}
	p := &remoteProc{rank: spec.Rank, host: spec.Host, cmd: cmd, sshPid: cmd.Process.Pid, stdin: inW, drain: s.DrainTimeout, pipes: []*os.File{outR, errR}, release: release}
	if p.drain <= 0 {
		p.drain = 2 * time.Second
	}
	// The request fits the pipe buffer for any sane environment; the
	// deadline keeps a stuck ssh from blocking the launcher.
	_ = inW.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := inW.Write(append(req, '\n')); err != nil {
		_ = cmd.Process.Kill()
	}
	p.copiers.Add(2)
	go p.copy(outR, spec.Stdout)
	go p.copy(errR, &controlFilter{w: orDiscard(spec.Stderr), onControl: p.control})
	_, ping := s.silence()
	p.stopPing = make(chan struct{})
	p.pinger.Add(1)
	go p.pingLoop(ping)
	return p, nil
}

// request encodes the remote wrapper's request line for spec (without the
// newline): the worker and how long the wrapper waits on the launcher.
func (s *SSH) request(spec ProcSpec) ([]byte, error) {
	grace := s.KillGracePeriod
	if grace <= 0 {
		grace = 3 * time.Second
	}
	silence, _ := s.silence()
	req, err := json.Marshal(remoteRequest{Rank: spec.Rank, Host: spec.Host, Dir: spec.Dir, Argv: spec.Argv, Env: spec.Env,
		Grace: grace.String(), Silence: silence.String()})
	if err != nil {
		return nil, fmt.Errorf("%w: rank %d: %v", ErrSpawn, spec.Rank, err)
	}
	return req, nil
}

// forkSSH forks ssh running the remote wrapper on spec.Host, its stdin,
// stdout and stderr pipes; it returns the launcher's ends of them.
func (s *SSH) forkSSH(ctx context.Context, spec ProcSpec) (cmd *exec.Cmd, inW, outR, errR *os.File, err error) {
	argv := s.Config.Args(spec.Host, "exec "+ShellQuote(s.RemoteGorun)+" "+RemoteExecFlag)
	cmd = exec.Command(argv[0], argv[1:]...)
	if cmd.Err != nil {
		return nil, nil, nil, nil, fmt.Errorf("%w: rank %d: %v", ErrSpawn, spec.Rank, cmd.Err)
	}
	cmd.SysProcAttr = sysProcAttr()
	var files []*os.File
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	inR, inW, err1 := pipe()
	outR, outW, err2 := pipe()
	errR, errW, err3 := pipe()
	if err := errors.Join(err1, err2, err3); err != nil {
		for _, f := range files {
			f.Close()
		}
		return nil, nil, nil, nil, fmt.Errorf("%w: rank %d: %v", ErrSpawn, spec.Rank, err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	err = s.Forker.fork(ctx, cmd)
	// The child holds its own copies of these ends.
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return nil, nil, nil, nil, fmt.Errorf("%w: rank %d on %s: %s: %v", ErrSpawn, spec.Rank, spec.Host, argv[0], err)
	}
	return cmd, inW, outR, errR, nil
}

// pingLoop tells the wrapper the launcher is alive until Wait stops it.
func (p *remoteProc) pingLoop(every time.Duration) {
	defer p.pinger.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			p.mu.Lock()
			if p.stdin != nil {
				_ = p.stdin.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = p.stdin.Write([]byte("ping\n"))
			}
			p.mu.Unlock()
		case <-p.stopPing:
			return
		}
	}
}

// remoteProc is a worker on another host, seen through its ssh client.
type remoteProc struct {
	rank    int
	host    string
	cmd     *exec.Cmd
	sshPid  int
	drain   time.Duration
	pipes   []*os.File
	copiers sync.WaitGroup

	stopPing chan struct{}
	pinger   sync.WaitGroup
	release  func() // the handshake slot: given back once the worker started or ssh ended

	mu          sync.Mutex
	stdin       *os.File // nil once closed
	remotePid   int
	final       *ExitStatus // as the wrapper reported it
	exited      bool
	killTimer   *time.Timer
	wrapperNote string // the wrapper's own error, if it gave one
}

// Pid is the worker's pid on its host once the wrapper reported it, the
// local ssh client's before that.
func (p *remoteProc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.remotePid != 0 {
		return p.remotePid
	}
	return p.sshPid
}

func (p *remoteProc) copy(r *os.File, w io.Writer) {
	defer p.copiers.Done()
	// The stream ends when ssh does: its handshake slot is free then even
	// if nobody waits for it yet (Run waits only after starting everyone).
	defer p.release()
	if w == nil {
		w = io.Discard
	}
	_, _ = io.Copy(w, r)
	if f, ok := w.(interface{ Flush() }); ok {
		f.Flush()
	}
}

// control handles a line the wrapper wrote for the launcher.
func (p *remoteProc) control(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := strings.Fields(line)
	if len(f) >= 2 && f[0] == "pid" {
		p.remotePid, _ = strconv.Atoi(f[1])
		p.release()
		return
	}
	if len(f) >= 3 && f[0] == "exit" {
		n, err := strconv.Atoi(f[2])
		if err != nil {
			return
		}
		switch f[1] {
		case "code":
			p.final = &ExitStatus{Code: n}
		case "signal":
			p.final = &ExitStatus{Signal: syscall.Signal(n)}
		}
		return
	}
	if len(f) >= 1 && f[0] == "error" {
		p.wrapperNote = strings.TrimSpace(strings.TrimPrefix(line, "error"))
	}
}

// Signal asks the wrapper to signal the worker's process group. SIGKILL
// also closes the wrapper's stdin (it kills the group on EOF as well) and,
// should the connection be stuck, kills the local ssh client after a
// while so the job can end.
func (p *remoteProc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return os.ErrProcessDone
	}
	var err error
	if p.stdin != nil {
		_ = p.stdin.SetWriteDeadline(time.Now().Add(time.Second))
		_, err = fmt.Fprintf(p.stdin, "signal %d\n", int(sig))
		if sig == syscall.SIGKILL || err != nil {
			p.stdin.Close()
			p.stdin = nil
		}
	}
	if (sig == syscall.SIGKILL || err != nil) && p.killTimer == nil {
		proc := p.cmd.Process
		p.killTimer = time.AfterFunc(10*time.Second, func() { _ = proc.Kill() })
	}
	if err != nil {
		return fmt.Errorf("rank %d on %s: sending %s: %w", p.rank, p.host, SignalName(sig), err)
	}
	return nil
}

func (p *remoteProc) Wait() ExitStatus {
	err := p.cmd.Wait()
	p.release()
	close(p.stopPing)
	p.pinger.Wait()
	p.mu.Lock()
	p.exited = true
	if p.killTimer != nil {
		p.killTimer.Stop()
	}
	if p.stdin != nil {
		p.stdin.Close()
		p.stdin = nil
	}
	p.mu.Unlock()

	drained := make(chan struct{})
	go func() { p.copiers.Wait(); close(drained) }()
	t := time.NewTimer(p.drain)
	select {
	case <-drained:
	case <-t.C:
		for _, f := range p.pipes {
			_ = f.Close()
		}
		<-drained
	}
	t.Stop()
	for _, f := range p.pipes {
		_ = f.Close()
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.final != nil {
		return *p.final
	}
	st := exitStatus(err)
	switch {
	case st.Code == 255:
		return ExitStatus{Code: 255, Err: remoteError("is lost: ssh to " + p.host + " failed or the connection dropped (ssh exited with code 255)")}
	case st.Code == 126 || st.Code == 127:
		return ExitStatus{Code: st.Code, Err: remoteError(fmt.Sprintf("did not start: the remote shell on %s could not run gorun (exit code %d); is gorun installed at the same path there?", p.host, st.Code))}
	case st.Signal != 0:
		return ExitStatus{Err: remoteError("is lost: its ssh client was killed by signal " + SignalName(st.Signal))}
	case p.wrapperNote != "":
		return ExitStatus{Code: max(st.Code, 1), Err: remoteError("failed on " + p.host + ": " + p.wrapperNote)}
	}
	return st
}

// remoteError is an ExitStatus.Err for a remote worker whose end gorun
// could not see; it reads after "rank 1 (pid 2, host h) " and is ErrRemote.
type remoteError string

func (e remoteError) Error() string        { return string(e) }
func (e remoteError) Is(target error) bool { return target == ErrRemote }

// controlMark starts a line the wrapper writes for the launcher on the
// worker's stderr stream; the ASCII record separator keeps it from being
// mistaken for program output.
const controlMark = "\x1egorovod-remote:"

// controlFilter passes a stream through, taking out the wrapper's control
// lines (controlMark up to the newline) wherever they start.
type controlFilter struct {
	w         io.Writer
	onControl func(string)
	held      []byte // a possible start of controlMark
	inControl bool
	line      []byte
}

func (f *controlFilter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if f.inControl {
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				if len(f.line) < 4096 {
					f.line = append(f.line, p...)
				}
				return n, nil
			}
			f.line = append(f.line, p[:i]...)
			f.onControl(string(f.line))
			f.line, f.inControl = f.line[:0], false
			p = p[i+1:]
			continue
		}
		if len(f.held) > 0 {
			// Extend the held prefix byte by byte until it is the mark or not.
			f.held = append(f.held, p[0])
			p = p[1:]
			switch {
			case string(f.held) == controlMark:
				f.held, f.inControl = f.held[:0], true
			case !strings.HasPrefix(controlMark, string(f.held)):
				_, _ = f.w.Write(f.held)
				f.held = f.held[:0]
			}
			continue
		}
		i := bytes.IndexByte(p, controlMark[0])
		if i < 0 {
			_, _ = f.w.Write(p)
			return n, nil
		}
		if i > 0 {
			_, _ = f.w.Write(p[:i])
		}
		f.held = append(f.held, p[i])
		p = p[i+1:]
	}
	return n, nil
}

// Flush writes out a held partial mark and flushes the writer below.
func (f *controlFilter) Flush() {
	if len(f.held) > 0 {
		_, _ = f.w.Write(f.held)
		f.held = f.held[:0]
	}
	if fl, ok := f.w.(interface{ Flush() }); ok {
		fl.Flush()
	}
}

// ShellQuote quotes s for a POSIX shell: 'it'\”s'.
func ShellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:,@%+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// SplitArgs splits an option string such as GOROVOD_SSH_ARGS into words as
// a shell would (whitespace separates; single quotes, double quotes and
// backslashes quote), without any expansion.
func SplitArgs(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", s)
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte(`"\$`+"`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf(`unterminated " in %q`, s)
			}
			inWord = true
		case c == '\\':
			if i+1 >= len(s) {
				return nil, fmt.Errorf("trailing backslash in %q", s)
			}
			i++
			cur.WriteByte(s[i])
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}
