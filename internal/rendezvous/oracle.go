package rendezvous

import (
	"context"
	"sync"
	"time"
)

// FailureKind says what a failed status tells about where the failure
// started: the failure oracle's input.
type FailureKind int

const (
	// FailureOwn: the reporting rank failed on its own (or did not say).
	FailureOwn FailureKind = iota
	// FailurePeerLost: the reporter's link to Suspect was closed or reset.
	FailurePeerLost
	// FailurePeerStalled: the reporter waited on Suspect past its progress
	// timeout; it reports before closing its links, so the peers it then
	// fails are known to be consequences.
	FailurePeerStalled
	// FailureExited: the launcher saw Suspect's process end (its exit code
	// or the signal is in the message).
	FailureExited
)

func (k FailureKind) String() string {
	switch k {
	case FailurePeerLost:
		return "peer lost"
	case FailurePeerStalled:
		return "peer stalled"
	case FailureExited:
		return "exited"
	}
	return "own"
}

// DefaultStallSettle is how long the oracle waits, after a stall report,
// for the stalled peer to say that it was itself waiting on another rank.
const DefaultStallSettle = time.Second

// Oracle is the failure oracle of one epoch, safe for concurrent use: the
// Server holds one for its epoch; in-process worlds (tests) use one
// directly. The decisions are blame's.
type Oracle struct {
	mu      sync.Mutex
	b       blame
	decided chan struct{} // closed once the verdict is final
	timer   *time.Timer   // decides a pending verdict at the end of the settle window
}

// NewOracle returns the oracle of a world of size ranks; settle <= 0 means
// DefaultStallSettle.
func NewOracle(size int, settle time.Duration) *Oracle {
	if settle <= 0 {
		settle = DefaultStallSettle
	}
	return &Oracle{b: blame{size: size, settle: settle}, decided: make(chan struct{})}
}

// Record adds a failed status without waiting for the verdict (the
// launcher's evidence).
func (o *Oracle) Record(st Status) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.b.add(st, time.Now())
	if _, ok := o.decideLocked(); ok {
		return
	}
	if until, ok := o.b.pendingUntil(); ok && o.timer == nil {
		o.timer = time.AfterFunc(time.Until(until), func() { o.Verdict() })
	}
}

// Report records st and waits for the verdict: at once for positive
// evidence, up to the settle window for a stall (see blame), or until ctx
// ends.
func (o *Oracle) Report(ctx context.Context, st Status) (Status, error) {
	o.Record(st)
	select {
	case <-o.decided:
		v, _ := o.Verdict()
		return v, nil
	case <-ctx.Done():
		return Status{}, ctx.Err()
	}
}

// Decided is closed once the verdict is final.
func (o *Oracle) Decided() <-chan struct{} { return o.decided }

// Verdict returns the verdict: the rank the job's failure started at
// (Rank) and how it was seen. It decides a pending verdict if the evidence
// allows, but never waits.
func (o *Oracle) Verdict() (Status, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.decideLocked()
}

// Stop releases the settle timer; a pending verdict stays pending.
func (o *Oracle) Stop() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.timer != nil {
		o.timer.Stop()
	}
}

func (o *Oracle) decideLocked() (Status, bool) {
	v, ok := o.b.decide(time.Now())
	if ok {
		select {
		case <-o.decided:
		default:
			close(o.decided)
			if o.timer != nil {
				o.timer.Stop()
			}
		}
	}
	return v, ok
}

// blame is the failure oracle's logic: a pure state machine (no clock,
// no goroutine) that reads the failure reports of a job in arrival order and
// decides, once, which rank the job's failure started at. Every later
// question gets the same answer.
//
// The rules, following the chain of blame from the first report:
//   - a report blames its Suspect (a rank failing on its own blames itself);
//   - a blamed rank that itself reported losing or waiting on another rank
//     passes the blame on (its failure is a consequence); a cycle stops at
//     the rank blamed first;
//   - the rank where the chain stops is the culprit. The verdict is final
//     at once when the last hop is positive evidence (a closed link, an exit
//     the launcher saw); a stall ("waited on rank N") only once rank N is
//     dead, every other rank has reported, or the settle window after the
//     first report passed without rank N passing the blame on (a rank that
//     waits on a stalled peer times out too, and reports before closing).
type blame struct {
	size    int
	settle  time.Duration
	reports []timedStatus
	verdict *Status
}

type timedStatus struct {
	Status
	at time.Time
}

// add records a failed status.
func (b *blame) add(st Status, now time.Time) {
	b.reports = append(b.reports, timedStatus{st, now})
}

// suspect is the rank a report blames.
func suspect(st Status) int {
	if st.Kind == FailureOwn {
		return st.Rank
	}
	return st.Suspect
}

// passesOn returns the first report in which rank, as a worker, said it lost
// or waited on another rank.
func (b *blame) passesOn(rank int) (Status, bool) {
	for _, r := range b.reports {
		if r.Rank == rank && (r.Kind == FailurePeerLost || r.Kind == FailurePeerStalled) {
			return r.Status, true
		}
	}
	return Status{}, false
}

// exitOf returns the launcher's record of rank's exit, if any.
func (b *blame) exitOf(rank int) (Status, bool) {
	for _, r := range b.reports {
		if r.Kind == FailureExited && r.Suspect == rank {
			return r.Status, true
		}
	}
	return Status{}, false
}

// chain follows the blame from the first report; it returns the culprit and
// the report that blamed it. A chain that comes back to a rank it passed
// (ranks waiting on each other, or a stalled rank that resumed and found its
// peer gone) stops there: that rank was blamed before any of the others.
func (b *blame) chain() (int, Status) {
	last := b.reports[0].Status
	cur := suspect(last)
	blamedBy := map[int]Status{cur: last}
	for {
		next, ok := b.passesOn(cur)
		if !ok {
			return cur, last
		}
		n := suspect(next)
		if first, seen := blamedBy[n]; seen {
			return n, first
		}
		last, cur = next, n
		blamedBy[cur] = last
	}
}

// decide returns the verdict if it is (or now becomes) final.
func (b *blame) decide(now time.Time) (Status, bool) {
	if b.verdict != nil {
		return *b.verdict, true
	}
	if len(b.reports) == 0 {
		return Status{}, false
	}
	culprit, last := b.chain()
	exit, dead := b.exitOf(culprit)
	final := last.Kind != FailurePeerStalled || dead || b.othersReported(culprit) ||
		!now.Before(b.reports[0].at.Add(b.settle))
	if !final {
		return Status{}, false
	}
	v := last
	if dead && last.Kind != FailureOwn {
		v = exit // the launcher's words are the most precise: "killed by signal SIGKILL"
	}
	v.Rank, v.Suspect, v.State = culprit, culprit, StateFailed
	b.verdict = &v
	return v, true
}

// othersReported reports whether every rank but culprit sent a report of its
// own: nobody is left who could pass the blame on.
func (b *blame) othersReported(culprit int) bool {
	seen := map[int]bool{}
	for _, r := range b.reports {
		if r.Kind != FailureExited && r.Rank != culprit {
			seen[r.Rank] = true
		}
	}
	return len(seen) >= b.size-1
}

// pendingUntil is when an undecided verdict becomes final by the settle
// window.
func (b *blame) pendingUntil() (time.Time, bool) {
	if b.verdict != nil || len(b.reports) == 0 {
		return time.Time{}, false
	}
	return b.reports[0].at.Add(b.settle), true
}
