package elastic

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/gorovod/gorovod/internal/hosts"
	"github.com/gorovod/gorovod/internal/launch"
	"github.com/gorovod/gorovod/internal/rendezvous"
)

// DriverConfig configures an elastic job's driver.
type DriverConfig struct {
	Discovery    Discovery
	MinNP, MaxNP int
	Policy       FailurePolicy
	// ResetLimit ends the job when it would form more than this many
	// epochs after the first; 0 means no limit.
	ResetLimit int
	// ElasticTimeout: below MinNP for longer than this fails the job.
	ElasticTimeout time.Duration
	// StartTimeout bounds an epoch's registration: ranks missing after it
	// are dropped. It also bounds a new worker's first call.
	StartTimeout time.Duration
	// Heartbeat is the workers' heartbeat interval; a worker silent for 3
	// intervals is removed.
	Heartbeat time.Duration
	// KillGracePeriod is the time between SIGTERM and SIGKILL.
	KillGracePeriod time.Duration
	Secret          []byte
	// Listen is the IP the control and rendezvous services listen on ("":
	// every interface); AddrFor gives the IP the workers of a host dial.
	// Without AddrFor both are Listen, default 127.0.0.1.
	Listen  string
	AddrFor func(host string) string
	// Launcher starts one worker process.
	Launcher Launcher
	// Events receives one line per decision (epochs, failures, blacklist),
	// for the person watching; Logger gets the details.
	Events io.Writer
	Logger *zap.Logger
}

// WorkerSpec is one worker the driver wants started.
type WorkerSpec struct {
	ID   string
	Slot Slot
	Seq  uint64
	Env  []string // the elastic variables; the launcher adds the job's
	// HostSlots is the host's slot count as last discovered.
	HostSlots int
}

// Launcher starts worker processes (gorun passes its local/ssh spawner).
type Launcher interface {
	Start(ctx context.Context, w WorkerSpec) (launch.Proc, error)
}

func (c *DriverConfig) validate() error {
	switch {
	case c.Discovery == nil:
		return fmt.Errorf("%w: no host discovery", ErrInvalid)
	case c.Launcher == nil:
		return fmt.Errorf("%w: no launcher", ErrInvalid)
	case c.MinNP < 1:
		return fmt.Errorf("%w: --min-np is %d, must be at least 1", ErrInvalid, c.MinNP)
	case c.MaxNP < c.MinNP:
		return fmt.Errorf("%w: --max-np %d is below --min-np %d", ErrInvalid, c.MaxNP, c.MinNP)
	case len(c.Secret) == 0:
		return fmt.Errorf("%w: empty job secret", ErrInvalid)
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = time.Second
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 30 * time.Second
	}
	if c.ElasticTimeout <= 0 {
		c.ElasticTimeout = 10 * time.Minute
	}
	if c.KillGracePeriod <= 0 {
		c.KillGracePeriod = 3 * time.Second
	}
	if c.AddrFor == nil {
		if c.Listen == "" {
			c.Listen = "127.0.0.1"
		}
		listen := c.Listen
		c.AddrFor = func(string) string { return listen }
	}
	if c.Events == nil {
		c.Events = io.Discard
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

// worker states in the driver.
type wstate int

const (
	wStarting wstate = iota // started, not heard from
	wRunning                // heartbeating, not waiting in Join
	wWaiting                // waiting in Join
	wGone                   // removed or exited; never planned again
)

type worker struct {
	ref      WorkerRef
	proc     launch.Proc
	state    wstate
	started  time.Time
	lastBeat time.Time
	member   bool // in the current epoch
	leaving  bool // its slot left discovery: graceful, exit 0
	exited   bool
	reason   string // why it is gone
	join     *pendingJoin
	assign   Assignment
}

type pendingJoin struct {
	after uint64
	reply chan joinReply // buffered 1
}

type event interface{}

type exitEvent struct {
	id string
	st launch.ExitStatus
}

type hostsEvent struct {
	hosts []hosts.Host
	err   error
}

type callEvent struct {
	method string
	req    []byte
	reply  chan callReply // buffered 1
}

type callReply struct {
	out []byte
	err error
}

// Driver runs one elastic job. Make it with NewDriver, then Run once.
type Driver struct {
	cfg DriverConfig
	log *zap.Logger

	events chan event
	quit   chan struct{}  // closed when the loop no longer reads events
	procs  sync.WaitGroup // one per started process (its Wait)

	hm      *HostManager
	ft      *FailureTracker
	minw    MinWatch
	workers map[string]*worker
	order   []string // worker ids in start order
	seq     uint64

	epoch      uint64
	members    []string // rank order
	rdv        *rendezvous.Server
	rdvDone    chan error
	prevRdv    []servedRdv // the last epochs' services: late failure reports of their members still reach them
	epochStart time.Time
	complete   bool // the current epoch's world formed
	want       bool
	wantAbort  bool
	wantSince  time.Time
	firstStart time.Time
	resets     int

	finishing bool  // a member finished training: no more epochs
	failure   error // the job failed: stop everything
}

// NewDriver checks cfg and returns a driver.
func NewDriver(cfg DriverConfig) (*Driver, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Driver{
		cfg: cfg, log: cfg.Logger, events: make(chan event, 64), quit: make(chan struct{}),
		hm: NewHostManager(), ft: NewFailureTracker(cfg.Policy),
		minw:    MinWatch{Min: cfg.MinNP, Timeout: cfg.ElasticTimeout},
		workers: map[string]*worker{},
	}, nil
}

func (d *Driver) eventf(format string, args ...any) {
	fmt.Fprintf(d.cfg.Events, "elastic: "+format+"\n", args...)
}

// Run drives the job until it completes (nil), fails or ctx ends. Every
// worker process has exited when it returns.
func (d *Driver) Run(ctx context.Context) error {
	ctl, err := rendezvous.NewControlServer(d.cfg.Secret, d.log.Named("control"), d.handle)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(d.cfg.Listen, "0"))
	if err != nil {
		return fmt.Errorf("elastic control listener on %s: %w", d.cfg.Listen, err)
	}
	_, ctlPort, _ := net.SplitHostPort(lis.Addr().String())
	served := make(chan error, 1)
	go func() { served <- ctl.Serve(lis) }()

	dctx, stopDiscovery := context.WithCancel(ctx)
	var discWG sync.WaitGroup
	discWG.Add(1)
	go func() { defer discWG.Done(); d.discover(dctx) }()

	err = d.loop(ctx, ctlPort)
	close(d.quit)

	stopDiscovery()
	d.stopAll()
	d.procs.Wait()
	ctl.Stop()
	<-served
	discWG.Wait()
	d.stopRendezvous()
	return err
}

func (d *Driver) discover(ctx context.Context) {
	for ctx.Err() == nil {
		hs, err := d.cfg.Discovery.Next(ctx)
		if ctx.Err() != nil {
			return
		}
		select {
		case d.events <- hostsEvent{hosts: hs, err: err}:
		case <-ctx.Done():
			return
		}
	}
}

// handle runs on the control service's goroutines: it hands the call to
// the loop and waits for the answer.
func (d *Driver) handle(ctx context.Context, method string, req []byte) ([]byte, error) {
	ev := callEvent{method: method, req: req, reply: make(chan callReply, 1)}
	select {
	case d.events <- ev:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-d.quit:
		return nil, fmt.Errorf("%w: the driver has stopped", ErrRemoved)
	}
	select {
	case r := <-ev.reply:
		return r.out, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-d.quit:
		return nil, fmt.Errorf("%w: the driver has stopped", ErrRemoved)
	}
}

func (d *Driver) loop(ctx context.Context, ctlPort string) error {
	tick := time.NewTicker(min(d.cfg.Heartbeat/4, 50*time.Millisecond))
	defer tick.Stop()
	for {
		now := time.Now()
		d.reconcile(ctx, now, ctlPort)
		if d.failure != nil {
			return d.failure
		}
		if d.finishing && d.liveMembers() == 0 {
			d.eventf("job complete (epoch %d, %d resets)", d.epoch, d.resets)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("elastic job interrupted: %w", ctx.Err())
		case <-tick.C:
		case ev := <-d.events:
			d.apply(time.Now(), ev)
		}
	}
}

func (d *Driver) apply(now time.Time, ev event) {
	switch ev := ev.(type) {
	case exitEvent:
		d.exited(now, ev.id, ev.st)
	case hostsEvent:
		if ev.err != nil {
			d.log.Warn("host discovery failed; keeping the last host list", zap.Error(ev.err))
			d.eventf("discovery failed (keeping the last host list): %v", ev.err)
			return
		}
		d.hostsChanged(now, ev.hosts)
	case callEvent:
		out, err := d.call(now, ev)
		if out != nil || err != nil {
			ev.reply <- callReply{out: out, err: err}
		}
	}
}

func (d *Driver) hostsChanged(now time.Time, found []hosts.Host) {
	diff := d.hm.Update(found)
	if diff.Empty() {
		return
	}
	d.eventf("hosts: %s (added %v, removed %v, resized %v)", d.hm, diff.Added, diff.Removed, diff.Resized)
	for _, id := range d.order {
		w := d.workers[id]
		if w.state == wGone || w.leaving || d.hm.Has(w.ref.Slot) {
			continue
		}
		w.leaving = true
		d.eventf("worker %s on %s leaves: its slot left discovery", id, w.ref.Slot)
		if w.member && !d.want {
			d.wantChange(now, false)
		}
		if !w.member && w.join != nil {
			d.release(w)
		}
	}
}

func (d *Driver) wantChange(now time.Time, abort bool) {
	if !d.want {
		d.want, d.wantSince = true, now
	}
	d.wantAbort = d.wantAbort || abort
}

func (d *Driver) exited(now time.Time, id string, st launch.ExitStatus) {
	w := d.workers[id]
	if w == nil {
		return
	}
	w.exited = true
	if w.join != nil {
		d.answerJoin(w, joinReply{Status: joinDropped, Reason: "exited"})
	}
	wasGone := w.state == wGone
	w.state = wGone
	if d.rdv != nil && w.member {
		if rank := d.rankOf(id); rank >= 0 {
			d.rdv.WorkerExited(rank, fmt.Sprintf("(worker %s) %s", id, st))
			if st.Failed() {
				d.rdv.RecordFailure(rank, fmt.Sprintf("worker %s on %s %s", id, w.ref.Slot, st))
			}
		}
	}
	switch {
	case !st.Failed() && w.leaving:
		d.eventf("worker %s on %s left the job (%s)", id, w.ref.Slot, st)
	case !st.Failed() && d.finishing:
		d.log.Debug("worker exited", zap.String("id", id), zap.Stringer("status", st))
	case !st.Failed():
		// Success ends the job (also from a worker not in an epoch yet: a
		// program that exits 0 must not be restarted forever).
		d.eventf("worker %s (%s) finished: the job ends when the others finish", id, d.rankDesc(id))
		d.finishing = true
	case wasGone || w.leaving || d.finishing:
		d.eventf("worker %s on %s %s", id, w.ref.Slot, st)
	default:
		d.failed(now, w, st.String())
	}
	if w.member && !d.finishing && !w.leaving {
		d.wantChange(now, true)
	}
}

// failed charges w's failure to its slot and host.
func (d *Driver) failed(now time.Time, w *worker, why string) {
	v := d.ft.Failed(now, w.ref.Slot)
	d.eventf("worker %s on %s failed: %s; slot cools down until +%v", w.ref.ID, w.ref.Slot, why, v.SlotUntil.Sub(now).Round(time.Millisecond))
	if v.Blacklisted {
		if v.Permanent {
			d.eventf("host %s blacklisted for good (%d failures within %v)", w.ref.Slot.Host, d.ft.p.HostFailures, d.ft.p.Window)
		} else {
			d.eventf("host %s blacklisted for %v (blacklisting %d)", w.ref.Slot.Host, v.Cooldown, v.Count)
		}
	}
}

func (d *Driver) rankDesc(id string) string {
	if r := d.rankOf(id); r >= 0 {
		return fmt.Sprintf("rank %d of epoch %d", r, d.epoch)
	}
	return "in no epoch"
}

func (d *Driver) rankOf(id string) int {
	for r, m := range d.members {
		if m == id {
			return r
		}
	}
	return -1
}

func (d *Driver) liveMembers() int {
	n := 0
	for _, id := range d.members {
		if !d.workers[id].exited {
			n++
		}
	}
	return n
}

// call answers a control call; a nil answer means "later" (a Join waits).
func (d *Driver) call(now time.Time, ev callEvent) ([]byte, error) {
	switch ev.method {
	case "Heartbeat":
		var req heartbeatRequest
		if err := decode(ev.req, &req); err != nil {
			return nil, err
		}
		w := d.workers[req.ID]
		if w == nil {
			return nil, fmt.Errorf("%w: unknown worker %q", ErrInvalid, req.ID)
		}
		return encode(d.heartbeat(now, w, req)), nil
	case "Join":
		var req joinRequest
		if err := decode(ev.req, &req); err != nil {
			return nil, err
		}
		w := d.workers[req.ID]
		if w == nil {
			return nil, fmt.Errorf("%w: unknown worker %q", ErrInvalid, req.ID)
		}
		d.joinCall(now, w, req, ev.reply)
		return nil, nil
	}
	return nil, fmt.Errorf("%w: unknown control call %q", ErrInvalid, ev.method)
}

func (d *Driver) heartbeat(now time.Time, w *worker, req heartbeatRequest) heartbeatReply {
	if w.state == wGone {
		return heartbeatReply{Latest: d.epoch, Removed: true, Reason: w.reason}
	}
	w.lastBeat = now
	if w.state == wStarting {
		w.state = wRunning
	}
	r := heartbeatReply{Latest: d.epoch}
	if d.want {
		r.Latest = d.epoch + 1
		r.Abort = d.wantAbort && w.member && req.Epoch == d.epoch
	}
	return r
}

func (d *Driver) joinCall(now time.Time, w *worker, req joinRequest, reply chan callReply) {
	w.lastBeat = now
	pj := &pendingJoin{after: req.After, reply: make(chan joinReply, 1)}
	go func() { // forwards the eventual answer; ends with it
		r := <-pj.reply
		reply <- callReply{out: encode(r)}
	}()
	switch {
	case w.state == wGone:
		pj.reply <- joinReply{Status: joinDropped, Reason: w.reason}
		return
	case d.finishing:
		pj.reply <- joinReply{Status: joinDone, Reason: "the job finished"}
		return
	case w.leaving:
		w.join = pj
		d.release(w)
		return
	case w.member && d.epoch > req.After:
		pj.reply <- joinReply{Status: joinAssigned, Assign: w.assign}
		return
	}
	if w.join != nil {
		w.join.reply <- joinReply{Status: joinDropped, Reason: "superseded by a newer Join"}
	}
	w.join, w.state = pj, wWaiting
	if w.member && req.After >= d.epoch && !d.want {
		d.eventf("worker %s (%s) left its epoch: %s", w.ref.ID, d.rankDesc(w.ref.ID), req.Reason)
		d.wantChange(now, true)
	}
}

// release tells a worker whose slot left discovery that it is out: it
// exits 0 and is never charged or waited for.
func (d *Driver) release(w *worker) {
	d.answerJoin(w, joinReply{Status: joinRemoved, Reason: "its host left discovery"})
	w.state, w.reason = wGone, "its host left discovery"
}

func (d *Driver) answerJoin(w *worker, r joinReply) {
	if w.join != nil {
		w.join.reply <- r
		w.join = nil
	}
	if w.state == wWaiting {
		w.state = wRunning
	}
}

// stopAll asks every live worker to stop (SIGTERM, SIGKILL after the
// grace period) and answers pending joins.
func (d *Driver) stopAll() {
	for _, w := range d.workers {
		if w.join != nil {
			d.answerJoin(w, joinReply{Status: joinDone, Reason: "the job is over"})
		}
		if !w.exited && w.proc != nil {
			_ = w.proc.Signal(syscall.SIGTERM)
		}
	}
	done := make(chan struct{})
	go func() { d.procs.Wait(); close(done) }()
	t := time.NewTimer(d.cfg.KillGracePeriod)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	for _, w := range d.workers {
		if w.proc != nil {
			_ = w.proc.Signal(syscall.SIGKILL)
		}
	}
	<-done
}

type servedRdv struct {
	srv  *rendezvous.Server
	done chan error
}

func (s servedRdv) stop(log *zap.Logger) {
	s.srv.Stop()
	if err := <-s.done; err != nil {
		log.Warn("rendezvous service", zap.Error(err))
	}
}

// retireRendezvous keeps the current epoch's service running for a while
// (the last 3 epochs): a member that was cut off may still report its
// failure to it.
func (d *Driver) retireRendezvous() {
	if d.rdv == nil {
		return
	}
	d.prevRdv = append(d.prevRdv, servedRdv{d.rdv, d.rdvDone})
	d.rdv = nil
	for len(d.prevRdv) > 3 {
		d.prevRdv[0].stop(d.log)
		d.prevRdv = d.prevRdv[1:]
	}
}

func (d *Driver) stopRendezvous() {
	d.retireRendezvous()
	for _, s := range d.prevRdv {
		s.stop(d.log)
	}
	d.prevRdv = nil
}
