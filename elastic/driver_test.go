package elastic

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/hosts"
	"github.com/gorovod/gorovod/internal/launch"
	"github.com/gorovod/gorovod/internal/rendezvous"
)

// The driver against fake processes: the tests play the workers' side of
// the control channel and of the rendezvous themselves.

type fakeProc struct {
	pid  int
	once sync.Once
	exit chan launch.ExitStatus
	mu   sync.Mutex
	sigs []syscall.Signal
}

func (p *fakeProc) Pid() int { return p.pid }

func (p *fakeProc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	p.sigs = append(p.sigs, sig)
	p.mu.Unlock()
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		p.end(launch.ExitStatus{Signal: sig})
	}
	return nil
}

func (p *fakeProc) signals() []syscall.Signal {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]syscall.Signal(nil), p.sigs...)
}

func (p *fakeProc) end(st launch.ExitStatus) { p.once.Do(func() { p.exit <- st }) }
func (p *fakeProc) Wait() launch.ExitStatus  { return <-p.exit }

type fakeLauncher struct {
	mu      sync.Mutex
	n       int
	procs   map[string]*fakeProc
	started chan WorkerSpec
}

func newFakeLauncher() *fakeLauncher {
	return &fakeLauncher{procs: map[string]*fakeProc{}, started: make(chan WorkerSpec, 64)}
}

func (l *fakeLauncher) Start(_ context.Context, w WorkerSpec) (launch.Proc, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	p := &fakeProc{pid: 1000 + l.n, exit: make(chan launch.ExitStatus, 1)}
	l.procs[w.ID] = p
	l.started <- w
	return p, nil
}

func (l *fakeLauncher) proc(id string) *fakeProc {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.procs[id]
}

type chanDiscovery chan []hosts.Host

func (c chanDiscovery) Next(ctx context.Context) ([]hosts.Host, error) {
	select {
	case hs := <-c:
		return hs, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type syncBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var testSecret = []byte("0123456789abcdef0123456789abcdef")

type driverRig struct {
	t      *testing.T
	ctx    context.Context
	l      *fakeLauncher
	events *syncBuf
	done   chan error
}

func startDriver(t *testing.T, cfg DriverConfig) *driverRig {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	r := &driverRig{t: t, ctx: ctx, l: newFakeLauncher(), events: &syncBuf{}, done: make(chan error, 1)}
	cfg.Launcher, cfg.Events, cfg.Secret = r.l, r.events, testSecret
	d, err := NewDriver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	go func() { r.done <- d.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		<-r.done
		cancel()
		if t.Failed() {
			t.Logf("driver events:\n%s", r.events)
		}
	})
	return r
}

// fakeWorker is the test playing one worker.
type fakeWorker struct {
	spec WorkerSpec
	c    *rendezvous.ControlClient
}

func (r *driverRig) nextWorker() *fakeWorker {
	r.t.Helper()
	select {
	case spec := <-r.l.started:
		var addr string
		for _, kv := range spec.Env {
			if v, ok := strings.CutPrefix(kv, EnvControlAddr+"="); ok {
				addr = v
			}
		}
		c, err := rendezvous.DialControl(addr, testSecret)
		if err != nil {
			r.t.Fatal(err)
		}
		r.t.Cleanup(func() { c.Close() })
		return &fakeWorker{spec: spec, c: c}
	case <-r.ctx.Done():
		r.t.Fatal("no worker started")
		return nil
	}
}

func (w *fakeWorker) join(ctx context.Context, after uint64) (joinReply, error) {
	out, err := w.c.Call(ctx, "Join", encode(joinRequest{ID: w.spec.ID, After: after}))
	if err != nil {
		return joinReply{}, err
	}
	var rep joinReply
	return rep, decode(out, &rep)
}

func (w *fakeWorker) beat(t *testing.T, ctx context.Context, epoch uint64) heartbeatReply {
	t.Helper()
	out, err := w.c.Call(ctx, "Heartbeat", encode(heartbeatRequest{ID: w.spec.ID, Epoch: epoch}))
	if err != nil {
		t.Fatalf("heartbeat of %s: %v", w.spec.ID, err)
	}
	var rep heartbeatReply
	_ = decode(out, &rep)
	return rep
}

// joinAll joins every worker at once (an epoch forms when all have).
func joinAll(t *testing.T, ctx context.Context, after uint64, ws ...*fakeWorker) []joinReply {
	t.Helper()
	out := make([]joinReply, len(ws))
	errs := make([]error, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() { defer wg.Done(); out[i], errs[i] = w.join(ctx, after) }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return out
}

// registerAll registers every assignment with its epoch's rendezvous.
func registerAll(t *testing.T, ctx context.Context, reps []joinReply) {
	t.Helper()
	errs := make([]error, len(reps))
	var wg sync.WaitGroup
	for i, rep := range reps {
		a := rep.Assign
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = rendezvous.Register(ctx, a.RendezvousAddr, testSecret,
				rendezvous.Registration{Epoch: a.Epoch, Rank: a.Rank, Host: a.Host, Addr: fmt.Sprintf("127.0.0.1:%d", 1+i)})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func (r *driverRig) awaitEvent(re string) {
	r.t.Helper()
	rx := regexp.MustCompile(re)
	for !rx.MatchString(r.events.String()) {
		select {
		case <-r.ctx.Done():
			r.t.Fatalf("no driver event matching %q", re)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// A rank missing at an epoch's registration is dropped (SIGKILL) after
// the start timeout; the registered rank is told and the next epoch forms
// without the missing one.
func TestDriverDropsRankMissingAtRegistration(t *testing.T) {
	r := startDriver(t, DriverConfig{Discovery: &Static{Hosts: []hosts.Host{{Name: "localhost", Slots: 2}}},
		MinNP: 1, MaxNP: 2, StartTimeout: time.Second, Heartbeat: 10 * time.Second,
		Policy: FailurePolicy{SlotCooldown: time.Hour, CooldownMin: time.Hour}})
	w1, w2 := r.nextWorker(), r.nextWorker()
	reps := joinAll(t, r.ctx, 0, w1, w2)
	a := reps[0].Assign
	if reps[0].Status != joinAssigned || a.Epoch != 1 || a.Size != 2 || a.Rank != 0 || reps[1].Assign.Rank != 1 {
		t.Fatalf("epoch 1 assignments: %+v", reps)
	}
	_, err := rendezvous.Register(r.ctx, a.RendezvousAddr, testSecret, rendezvous.Registration{Epoch: 1, Rank: 0, Host: "localhost", Addr: "127.0.0.1:1"})
	// the service's own timeout, or the driver's drop of w2 first
	if !errors.Is(err, rendezvous.ErrStartTimeout) && !errors.Is(err, rendezvous.ErrAborted) {
		t.Fatalf("registration of the present rank: %v, want ErrStartTimeout or ErrAborted", err)
	}
	r.awaitEvent(`worker w2 on localhost\[1\] failed: did not register for epoch 1`)
	if sigs := r.l.proc("w2").signals(); len(sigs) == 0 || sigs[0] != syscall.SIGKILL {
		t.Fatalf("w2 got signals %v, want SIGKILL", sigs)
	}
	rep, err := w1.join(r.ctx, 1)
	if err != nil || rep.Status != joinAssigned || rep.Assign.Epoch != 2 || rep.Assign.Size != 1 {
		t.Fatalf("w1's next epoch: %+v, %v", rep, err)
	}
	if rep, err := w2.join(r.ctx, 1); err != nil || rep.Status != joinDropped {
		t.Fatalf("the dropped worker's join: %+v, %v", rep, err)
	}
}

// A member that fails makes the heartbeat of the others say their epoch is
// broken; a host that leaves discovery is never charged and its worker is
// told it is removed.
func TestDriverAbortAndGracefulLeave(t *testing.T) {
	disc := chanDiscovery(make(chan []hosts.Host, 4))
	disc <- []hosts.Host{{Name: "localhost", Slots: 2}, {Name: "127.0.0.2", Slots: 1}}
	r := startDriver(t, DriverConfig{Discovery: disc, MinNP: 1, MaxNP: 3, StartTimeout: 5 * time.Second,
		Heartbeat: 10 * time.Second, Policy: FailurePolicy{SlotCooldown: time.Hour, CooldownMin: time.Hour}})
	w1, w2, w3 := r.nextWorker(), r.nextWorker(), r.nextWorker()
	if w3.spec.Slot != (Slot{"127.0.0.2", 0}) {
		t.Fatalf("third worker on %v", w3.spec.Slot)
	}
	joinAll(t, r.ctx, 0, w1, w2, w3)
	if hb := w1.beat(t, r.ctx, 1); hb.Latest != 1 || hb.Abort {
		t.Fatalf("heartbeat of a healthy epoch: %+v", hb)
	}
	r.l.proc("w2").end(launch.ExitStatus{Code: 1})
	r.awaitEvent(`worker w2 on localhost\[1\] failed: exited with code 1`)
	if hb := w1.beat(t, r.ctx, 1); hb.Latest != 2 || !hb.Abort {
		t.Fatalf("heartbeat after a member failed: %+v, want latest 2 and abort", hb)
	}
	reps := joinAll(t, r.ctx, 1, w1, w3)
	if reps[0].Assign.Epoch != 2 || reps[0].Assign.Size != 2 || reps[0].Assign.Rank != 0 {
		t.Fatalf("epoch 2: %+v", reps)
	}
	registerAll(t, r.ctx, reps)
	disc <- []hosts.Host{{Name: "localhost", Slots: 2}}
	r.awaitEvent(`worker w3 on 127\.0\.0\.2\[0\] leaves`)
	if hb := w1.beat(t, r.ctx, 2); hb.Latest != 3 || hb.Abort {
		t.Fatalf("heartbeat when a host leaves: %+v, want latest 3 without abort", hb)
	}
	reps = joinAll(t, r.ctx, 2, w1, w3)
	if reps[0].Status != joinAssigned || reps[0].Assign.Size != 1 || reps[1].Status != joinRemoved {
		t.Fatalf("after the host left: %+v", reps)
	}
	r.l.proc("w3").end(launch.ExitStatus{})
	r.awaitEvent(`worker w3 on 127\.0\.0\.2\[0\] left the job \(exited with code 0\)`)
	if strings.Contains(r.events.String(), "127.0.0.2 blacklisted") || strings.Contains(r.events.String(), "w3 on 127.0.0.2[0] failed") {
		t.Fatalf("a host that left discovery was charged:\n%s", r.events)
	}
}
