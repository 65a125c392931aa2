package launch

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gorovod/gorovod/internal/netif"
)

// ErrUnreachable marks hosts that failed the preflight check.
var ErrUnreachable = errors.New("host check failed")

const probeMark = "GOROVOD-PROBE "

// ProbeResult is what a host said in the preflight check.
type ProbeResult struct {
	Host     string `json:"-"`        // as given in -H
	Hostname string `json:"hostname"` // the host's own name
	// LauncherAddr is the launcher's address as the host sees the ssh
	// connection (SSH_CONNECTION): the address the host can reach the
	// launcher at.
	LauncherAddr string `json:"launcher"`
	// HostAddr is the host's address ssh reached.
	HostAddr string `json:"addr"`
	// BindAddr is where the host's workers should listen: an address of
	// the requested interfaces, else the source of the host's route to
	// LauncherAddr.
	BindAddr string `json:"bind"`
	Error    string `json:"error,omitempty"`
}

// RemoteProbe is the remote half of the preflight check (hidden flag
// RemoteProbeFlag): it checks that dir exists and finds the addresses,
// then prints one line for the launcher. It returns the exit code.
func RemoteProbe(ifaces []string, dir string, stdout io.Writer) int {
	var r ProbeResult
	r.Hostname, _ = os.Hostname()
	var problems []string
	// SSH_CONNECTION is "client_ip client_port server_ip server_port".
	if f := strings.Fields(os.Getenv("SSH_CONNECTION")); len(f) == 4 {
		r.LauncherAddr, r.HostAddr = f[0], f[2]
	}
	if dir != "" {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			problems = append(problems, fmt.Sprintf("working directory %s does not exist here (gorun runs workers in its own directory on every host)", dir))
		}
	}
	switch {
	case len(ifaces) > 0:
		prefer, _ := netip.ParseAddr(r.LauncherAddr)
		a, err := netif.InterfaceAddr(ifaces, prefer)
		if err != nil {
			problems = append(problems, err.Error())
		} else {
			r.BindAddr = a.String()
		}
	case r.LauncherAddr != "":
		if b, err := netif.BindAddr(nil, r.LauncherAddr); err != nil {
			problems = append(problems, err.Error())
		} else {
			r.BindAddr = b
		}
	default:
		r.BindAddr = r.HostAddr
	}
	if r.BindAddr == "" && len(problems) == 0 {
		problems = append(problems, "cannot tell this host's address (no SSH_CONNECTION)")
	}
	r.Error = strings.Join(problems, "; ")
	b, _ := json.Marshal(r)
	fmt.Fprintln(stdout, probeMark+string(b))
	if r.Error != "" {
		return 1
	}
	return 0
}

// HostError is one host that failed the preflight check.
type HostError struct {
	Host    string // as given
	Address string // where ssh went, when it differs from Host
	Err     string
}

func (e HostError) String() string {
	name := e.Host
	if e.Address != "" && e.Address != e.Host {
		name += " (" + e.Address + ")"
	}
	return name + ": " + e.Err
}

// PreflightError lists every host that failed; it wraps ErrUnreachable.
type PreflightError struct {
	Total int
	Hosts []HostError
}

func (e *PreflightError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d hosts failed the ssh check; no worker was started:", len(e.Hosts), e.Total)
	for _, h := range e.Hosts {
		b.WriteString("\n  " + h.String())
	}
	return b.String()
}

func (e *PreflightError) Unwrap() error { return ErrUnreachable }

// Preflight checks every host in parallel before any worker starts: ssh
// connects and authenticates, gorun answers at RemoteGorun, dir exists, and
// the requested interfaces have an address. ctx bounds the whole check. It
// returns each host's answer, or a *PreflightError naming every host that
// failed and why ("host2 (198.18.0.12): ssh: connect to host 198.18.0.12
// port 22: Connection refused").
func (s *SSH) Preflight(ctx context.Context, hosts []string, ifaces []string, dir string) (map[string]ProbeResult, error) {
	remote := ShellQuote(s.RemoteGorun) + " " + RemoteProbeFlag +
		" " + ShellQuote(strings.Join(ifaces, ",")) + " " + ShellQuote(dir)
	results := make(map[string]ProbeResult, len(hosts))
	var errs []HostError
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, herr := s.probe(ctx, h, remote)
			mu.Lock()
			defer mu.Unlock()
			if herr != nil {
				errs = append(errs, *herr)
				return
			}
			results[h] = r
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		order := map[string]int{}
		for i, h := range hosts {
			order[h] = i
		}
		sort.Slice(errs, func(i, j int) bool { return order[errs[i].Host] < order[errs[j].Host] })
		return nil, &PreflightError{Total: len(hosts), Hosts: errs}
	}
	return results, nil
}

func (s *SSH) probe(ctx context.Context, host, remote string) (ProbeResult, *HostError) {
	argv := s.Config.Args(host, remote)
	cmd := exec.Command(argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = sysProcAttr()
	fail := func(msg string) (ProbeResult, *HostError) {
		return ProbeResult{}, &HostError{Host: host, Address: s.resolve(host), Err: msg}
	}
	if err := s.Forker.fork(ctx, cmd); err != nil {
		return fail(fmt.Sprintf("cannot run %s: %v", argv[0], err))
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var err error
	select {
	case err = <-waited:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-waited
		return fail(fmt.Sprintf("no answer from ssh before the check's deadline (%v)", context.Cause(ctx)))
	}
	for _, line := range strings.Split(stdout.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, probeMark); ok {
			var r ProbeResult
			if jerr := json.Unmarshal([]byte(rest), &r); jerr != nil {
				return fail("malformed answer from gorun: " + jerr.Error())
			}
			r.Host = host
			if r.Error != "" {
				return fail(r.Error)
			}
			return r, nil
		}
	}
	st := exitStatus(err)
	last := lastLine(stderr.String())
	switch {
	case st.Code == 255:
		if last == "" {
			last = "ssh failed (exit code 255)"
		}
		return fail(last)
	case st.Code == 126 || st.Code == 127:
		return fail(fmt.Sprintf("gorun is not runnable at %s on this host (%s); gorun must be installed at the same path on every host", s.RemoteGorun, orText(last, fmt.Sprintf("exit code %d", st.Code))))
	}
	return fail(fmt.Sprintf("unexpected answer (%s): %s", st, orText(last, strings.TrimSpace(stdout.String()))))
}

// resolve asks ssh where it would connect for host ("ssh -G": the
// HostName after ssh's configuration), for error messages.
func (s *SSH) resolve(host string) string {
	argv := s.Config.Args(host, "")
	// Keep the options, drop the remote command; -G prints the settings.
	argv = append([]string{argv[0], "-G"}, argv[1:len(argv)-3]...)
	argv = append(argv, host)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "hostname "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return ""
}

func orText(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}
