package elastic

import (
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/gorovod/gorovod/internal/hosts"
	"github.com/gorovod/gorovod/internal/rendezvous"
)

// reconcile takes every decision due at now, in a fixed order: liveness,
// registration, slots to fill, whether to change the epoch, forming it,
// and the min-np watch.
func (d *Driver) reconcile(ctx context.Context, now time.Time, ctlPort string) {
	for _, h := range d.ft.Readmitted(now) {
		d.eventf("host %s readmitted: its blacklist cooldown ended", h)
	}
	d.checkLiveness(now)
	d.checkRegistration(now)
	if d.finishing {
		for _, w := range d.workers {
			if w.join != nil {
				d.answerJoin(w, joinReply{Status: joinDone, Reason: "the job finished"})
			}
		}
		return
	}
	d.fillSlots(ctx, now, ctlPort)
	if d.epoch > 0 && !d.want {
		for _, id := range d.order {
			if w := d.workers[id]; w.state == wWaiting && !w.member && !w.leaving {
				d.eventf("worker %s on %s is ready: growing at the next commit", id, w.ref.Slot)
				d.wantChange(now, false)
				break
			}
		}
	}
	d.maybeForm(now)
	d.checkMin(now)
}

// drop gives up on a worker: it is never planned again; kill says whether
// to stop its process too (a hung worker is left to learn it is out).
func (d *Driver) drop(now time.Time, w *worker, why string, kill bool) {
	if w.state == wGone {
		return
	}
	w.state, w.reason = wGone, why
	if w.join != nil {
		d.answerJoin(w, joinReply{Status: joinDropped, Reason: why})
		w.state = wGone
	}
	if !w.leaving {
		d.failed(now, w, why)
	}
	if kill && w.proc != nil && !w.exited {
		_ = w.proc.Signal(syscall.SIGKILL)
	}
	if w.member {
		d.wantChange(now, true)
	}
}

func (d *Driver) checkLiveness(now time.Time) {
	limit := 3 * d.cfg.Heartbeat
	for _, id := range d.order {
		w := d.workers[id]
		switch {
		case w.state == wGone || w.exited:
		case w.state == wStarting && now.Sub(w.started) > d.cfg.StartTimeout:
			d.drop(now, w, fmt.Sprintf("did not contact the driver within %v", d.cfg.StartTimeout), true)
		case w.state != wStarting && now.Sub(w.lastBeat) > limit:
			d.drop(now, w, fmt.Sprintf("missed 3 heartbeats (%v): hung or cut off", limit), false)
		}
	}
}

// checkRegistration notes when the epoch's world formed, and drops the
// ranks still missing after the start timeout.
func (d *Driver) checkRegistration(now time.Time) {
	if d.rdv == nil || d.complete {
		return
	}
	if _, ok := d.rdv.World(); ok {
		d.complete = true
		d.log.Debug("epoch world complete", zap.Uint64("epoch", d.epoch), zap.Duration("after", now.Sub(d.epochStart)))
		return
	}
	if now.Sub(d.epochStart) <= d.cfg.StartTimeout {
		return
	}
	registered := map[int]bool{}
	for _, r := range d.rdv.Registered() {
		registered[r] = true
	}
	for r, id := range d.members {
		if w := d.workers[id]; !registered[r] && w.state != wGone {
			d.drop(now, w, fmt.Sprintf("did not register for epoch %d within %v", d.epoch, d.cfg.StartTimeout), true)
		}
	}
	d.complete = true // decided: the next epoch takes over
}

func (d *Driver) fillSlots(ctx context.Context, now time.Time, ctlPort string) {
	occupied := map[Slot]bool{}
	live := 0
	for _, w := range d.workers {
		if !w.exited {
			occupied[w.ref.Slot] = true
		}
		if w.state != wGone && !w.leaving {
			live++
		}
	}
	usable := func(s Slot) bool { return d.ft.SlotUsable(now, s) }
	for _, s := range SlotsToFill(d.hm.Hosts(), occupied, usable, d.cfg.MaxNP-live) {
		d.start(ctx, now, s, ctlPort)
	}
}

func (d *Driver) start(ctx context.Context, now time.Time, s Slot, ctlPort string) {
	d.seq++
	ref := WorkerRef{ID: fmt.Sprintf("w%d", d.seq), Slot: s, Seq: d.seq}
	spec := WorkerSpec{ID: ref.ID, Slot: s, Seq: ref.Seq, Env: []string{
		EnvControlAddr + "=" + net.JoinHostPort(d.cfg.AddrFor(s.Host), ctlPort),
		EnvWorkerID + "=" + ref.ID,
		EnvHeartbeat + "=" + d.cfg.Heartbeat.String(),
		EnvResetLimit + "=" + fmt.Sprint(d.cfg.ResetLimit),
	}}
	for _, h := range d.hm.Hosts() {
		if h.Name == s.Host {
			spec.HostSlots = h.Slots
		}
	}
	w := &worker{ref: ref, started: now}
	d.workers[ref.ID] = w
	d.order = append(d.order, ref.ID)
	if d.firstStart.IsZero() {
		d.firstStart = now
	}
	p, err := d.cfg.Launcher.Start(ctx, spec)
	if err != nil {
		w.exited = true
		d.drop(now, w, fmt.Sprintf("could not start: %v", err), false)
		return
	}
	w.proc = p
	d.eventf("started worker %s on %s (pid %d)", ref.ID, s, p.Pid())
	d.procs.Add(1)
	go func() {
		defer d.procs.Done()
		st := p.Wait()
		select {
		case d.events <- exitEvent{id: ref.ID, st: st}:
		case <-d.quit:
		}
	}()
}

// maybeForm forms the next epoch once every live member of the current
// one has left it (is waiting in Join) or is gone.
func (d *Driver) maybeForm(now time.Time) {
	if d.epoch > 0 && !d.want {
		return
	}
	if !d.readyToForm(now) {
		return
	}
	var cands []WorkerRef
	for _, id := range d.order {
		w := d.workers[id]
		if w.state != wWaiting {
			continue
		}
		if w.leaving {
			d.release(w)
			continue
		}
		cands = append(cands, w.ref)
	}
	if len(cands) < d.cfg.MinNP {
		return
	}
	if d.epoch > 0 {
		if d.cfg.ResetLimit > 0 && d.resets >= d.cfg.ResetLimit {
			d.failure = fmt.Errorf("%w: the job needs reset %d, --reset-limit is %d", ErrResetLimit, d.resets+1, d.cfg.ResetLimit)
			d.eventf("%v", d.failure)
			return
		}
		d.resets++
	}
	ranks := DealRanks(cands, d.hm.Order)
	if len(ranks) > d.cfg.MaxNP {
		ranks = ranks[:d.cfg.MaxNP]
	}
	if err := d.form(now, ranks); err != nil {
		d.failure = err
	}
}

func (d *Driver) readyToForm(now time.Time) bool {
	if d.epoch == 0 {
		for _, w := range d.workers {
			if w.state != wGone && w.state != wWaiting && !w.leaving && now.Sub(d.firstStart) <= d.cfg.StartTimeout {
				return false // the first epoch waits for every first worker
			}
		}
		return len(d.workers) > 0
	}
	var pending []*worker
	for _, id := range d.members {
		if w := d.workers[id]; w.state != wGone && w.state != wWaiting {
			pending = append(pending, w)
		}
	}
	if len(pending) == 0 {
		return true
	}
	if now.Sub(d.wantSince) <= max(d.cfg.StartTimeout, 3*d.cfg.Heartbeat) {
		return false
	}
	for _, w := range pending {
		d.drop(now, w, fmt.Sprintf("did not leave epoch %d within %v of the change", d.epoch, now.Sub(d.wantSince).Round(time.Millisecond)), true)
	}
	return true
}

// form starts the rendezvous of the next epoch and tells its members.
func (d *Driver) form(now time.Time, ranks []WorkerRef) error {
	d.retireRendezvous()
	epoch := d.epoch + 1
	lis, err := net.Listen("tcp", net.JoinHostPort(d.cfg.Listen, "0"))
	if err != nil {
		return fmt.Errorf("rendezvous listener for epoch %d: %w", epoch, err)
	}
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	srv := rendezvous.NewServer(rendezvous.ServerConfig{Size: len(ranks), Secret: d.cfg.Secret,
		StartTimeout: d.cfg.StartTimeout, Epoch: epoch, Logger: d.log.Named("rendezvous")})
	d.rdv, d.rdvDone = srv, make(chan error, 1)
	go func(done chan error) { done <- srv.Serve(lis) }(d.rdvDone)

	names := make([]string, len(ranks))
	for r, ref := range ranks {
		names[r] = ref.Slot.Host
	}
	layout := hosts.Layout(names)
	for _, w := range d.workers {
		w.member = false
	}
	d.members = d.members[:0]
	var desc []string
	for r, ref := range ranks {
		w := d.workers[ref.ID]
		w.member = true
		w.assign = Assignment{Epoch: epoch, Rank: r, Size: len(ranks), Host: ref.Slot.Host,
			LocalRank: layout[r].LocalRank, LocalSize: layout[r].LocalSize,
			CrossRank: layout[r].CrossRank, CrossSize: layout[r].CrossSize,
			RendezvousAddr: net.JoinHostPort(d.cfg.AddrFor(ref.Slot.Host), port)}
		d.members = append(d.members, ref.ID)
		desc = append(desc, fmt.Sprintf("%d=%s@%s", r, ref.ID, ref.Slot))
		d.answerJoin(w, joinReply{Status: joinAssigned, Assign: w.assign})
	}
	d.epoch, d.epochStart, d.complete = epoch, now, false
	d.want, d.wantAbort = false, false
	d.eventf("epoch %d: %d workers [%s]", epoch, len(ranks), strings.Join(desc, " "))
	return nil
}

func (d *Driver) checkMin(now time.Time) {
	have := 0
	for _, w := range d.workers {
		if w.state != wGone && !w.leaving {
			have++
		}
	}
	if d.minw.Observe(now, have) {
		d.failure = d.minw.Err(have, d.hm, d.ft.Blacklisted(now))
		d.eventf("%v", d.failure)
	}
}
