package elastic

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// FailurePolicy says how failures are charged to slots and hosts.
type FailurePolicy struct {
	// SlotCooldown is how long a slot whose worker failed stays empty.
	SlotCooldown time.Duration
	// HostFailures failures of a host's workers within Window blacklist
	// the whole host (default 2 within 1 minute).
	HostFailures int
	Window       time.Duration
	// CooldownMin and CooldownMax bound a blacklisted host's cooldown:
	// the n-th blacklisting of a host lasts CooldownMin*2^(n-1), at most
	// CooldownMax. CooldownMin == 0 blacklists for good.
	CooldownMin, CooldownMax time.Duration
}

// DefaultFailurePolicy is 1 s slot cooldown; 2 failures in a minute
// blacklist a host for 10 s, then 20 s, ... up to 5 min.
func DefaultFailurePolicy() FailurePolicy {
	return FailurePolicy{SlotCooldown: time.Second, HostFailures: 2, Window: time.Minute,
		CooldownMin: 10 * time.Second, CooldownMax: 5 * time.Minute}
}

// ParseCooldownRange parses --blacklist-cooldown-range: "MIN,MAX" durations
// ("10s,5m"), or "0" for a permanent blacklist.
func ParseCooldownRange(s string) (minD, maxD time.Duration, err error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, 0, nil
	}
	lo, hi, ok := strings.Cut(s, ",")
	if !ok {
		return 0, 0, fmt.Errorf("%w: cooldown range %q: want MIN,MAX (e.g. 10s,5m) or 0", ErrInvalid, s)
	}
	if minD, err = time.ParseDuration(strings.TrimSpace(lo)); err != nil {
		return 0, 0, fmt.Errorf("%w: cooldown range %q: %v", ErrInvalid, s, err)
	}
	if maxD, err = time.ParseDuration(strings.TrimSpace(hi)); err != nil {
		return 0, 0, fmt.Errorf("%w: cooldown range %q: %v", ErrInvalid, s, err)
	}
	if minD <= 0 || maxD < minD {
		return 0, 0, fmt.Errorf("%w: cooldown range %q: want 0 < MIN <= MAX", ErrInvalid, s)
	}
	return minD, maxD, nil
}

// Verdict is what one failure led to.
type Verdict struct {
	SlotUntil   time.Time     // the slot is not refilled before this
	Blacklisted bool          // the host is now blacklisted
	Permanent   bool          // ... for good
	Cooldown    time.Duration // ... for this long
	Count       int           // how many times the host has been blacklisted
}

// FailureTracker charges worker failures to their slot and host. It is
// pure: every method takes the time. Hosts that leave discovery are simply
// never charged (the driver does not call Failed for them).
type FailureTracker struct {
	p     FailurePolicy
	slots map[Slot]time.Time
	hosts map[string]*hostRecord
}

type hostRecord struct {
	failures  []time.Time // within the window, oldest first
	until     time.Time   // blacklisted until
	permanent bool
	times     int // blacklistings so far
	announced bool
}

// NewFailureTracker returns a tracker for p (zero fields take the defaults
// of DefaultFailurePolicy, except CooldownMin, where 0 means permanent).
func NewFailureTracker(p FailurePolicy) *FailureTracker {
	d := DefaultFailurePolicy()
	if p.HostFailures <= 0 {
		p.HostFailures = d.HostFailures
	}
	if p.Window <= 0 {
		p.Window = d.Window
	}
	if p.CooldownMax < p.CooldownMin {
		p.CooldownMax = p.CooldownMin
	}
	return &FailureTracker{p: p, slots: map[Slot]time.Time{}, hosts: map[string]*hostRecord{}}
}

// Failed records that slot's worker failed at now.
func (t *FailureTracker) Failed(now time.Time, s Slot) Verdict {
	v := Verdict{SlotUntil: now.Add(t.p.SlotCooldown)}
	t.slots[s] = v.SlotUntil
	r := t.hosts[s.Host]
	if r == nil {
		r = &hostRecord{}
		t.hosts[s.Host] = r
	}
	kept := r.failures[:0]
	for _, f := range r.failures {
		if now.Sub(f) < t.p.Window {
			kept = append(kept, f)
		}
	}
	r.failures = append(kept, now)
	if len(r.failures) < t.p.HostFailures {
		return v
	}
	r.failures = nil
	r.times++
	r.announced = false
	v.Blacklisted, v.Count = true, r.times
	if t.p.CooldownMin <= 0 {
		r.permanent, v.Permanent = true, true
		return v
	}
	d := t.p.CooldownMin
	for i := 1; i < r.times && d < t.p.CooldownMax; i++ {
		d *= 2
	}
	d = min(d, t.p.CooldownMax)
	r.until, v.Cooldown = now.Add(d), d
	return v
}

// SlotUsable reports whether slot may get a new worker at now: neither it
// cools down nor its host is blacklisted.
func (t *FailureTracker) SlotUsable(now time.Time, s Slot) bool {
	if until, ok := t.slots[s]; ok && now.Before(until) {
		return false
	}
	return t.HostUsable(now, s.Host)
}

// HostUsable reports whether host is not blacklisted at now.
func (t *FailureTracker) HostUsable(now time.Time, host string) bool {
	r := t.hosts[host]
	return r == nil || (!r.permanent && !now.Before(r.until))
}

// Readmitted returns the hosts whose blacklisting ended at or before now
// and were not reported yet, sorted (for the driver's log).
func (t *FailureTracker) Readmitted(now time.Time) []string {
	var out []string
	for h, r := range t.hosts {
		if r.times > 0 && !r.permanent && !r.announced && !now.Before(r.until) {
			r.announced = true
			out = append(out, h)
		}
	}
	sort.Strings(out)
	return out
}

// NextChange returns the earliest time after now at which a slot or host
// becomes usable again, if any: when the driver should look again.
func (t *FailureTracker) NextChange(now time.Time) (time.Time, bool) {
	var next time.Time
	consider := func(at time.Time) {
		if at.After(now) && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	for _, until := range t.slots {
		consider(until)
	}
	for _, r := range t.hosts {
		if !r.permanent {
			consider(r.until)
		}
	}
	return next, !next.IsZero()
}

// Blacklisted lists the hosts blacklisted at now, sorted.
func (t *FailureTracker) Blacklisted(now time.Time) []string {
	var out []string
	for h := range t.hosts {
		if !t.HostUsable(now, h) {
			out = append(out, h)
		}
	}
	sort.Strings(out)
	return out
}
