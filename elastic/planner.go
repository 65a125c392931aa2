package elastic

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/gorovod/gorovod/internal/hosts"
)

// WorkerRef is one worker process as the planner sees it.
type WorkerRef struct {
	ID   string
	Slot Slot
	Seq  uint64 // start order: lower started earlier
}

// DealRanks returns members in rank order: hosts in first-seen order
// (order gives a host's position; unknown hosts go last, by name), and on a
// host the worker started first comes first. So rank 0 is the oldest
// surviving slot of the oldest host, whichever rank died.
func DealRanks(members []WorkerRef, order func(host string) (uint64, bool)) []WorkerRef {
	out := append([]WorkerRef(nil), members...)
	key := func(w WorkerRef) (uint64, string) {
		if o, ok := order(w.Slot.Host); ok {
			return o, ""
		}
		return ^uint64(0), w.Slot.Host
	}
	sort.SliceStable(out, func(i, j int) bool {
		oi, ni := key(out[i])
		oj, nj := key(out[j])
		if oi != oj {
			return oi < oj
		}
		if ni != nj {
			return ni < nj
		}
		return out[i].Seq < out[j].Seq
	})
	return out
}

// SlotsToFill returns up to room empty slots that may get a new worker, in
// host first-seen order and slot order.
func SlotsToFill(known []hosts.Host, occupied map[Slot]bool, usable func(Slot) bool, room int) []Slot {
	var out []Slot
	for _, h := range known {
		for i := 0; i < h.Slots && len(out) < room; i++ {
			s := Slot{Host: h.Name, Index: i}
			if !occupied[s] && usable(s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// MinWatch fails the job when fewer than Min workers are available for
// longer than Timeout. Pure: the driver passes the time.
type MinWatch struct {
	Min     int
	Timeout time.Duration
	below   bool
	since   time.Time
}

// Observe records that have workers are available at now and reports
// whether the job has been below Min for longer than Timeout.
func (w *MinWatch) Observe(now time.Time, have int) bool {
	if have >= w.Min {
		w.below = false
		return false
	}
	if !w.below {
		w.below, w.since = true, now
	}
	return now.Sub(w.since) >= w.Timeout
}

// Deadline returns when the job fails if nothing changes (zero when not
// below Min).
func (w *MinWatch) Deadline() time.Time {
	if !w.below {
		return time.Time{}
	}
	return w.since.Add(w.Timeout)
}

// Err describes the failure: what was wanted and what was seen.
func (w *MinWatch) Err(have int, hm *HostManager, blacklisted []string) error {
	msg := fmt.Sprintf("waited %v for at least %d workers (--min-np), had %d; hosts seen: %s", w.Timeout, w.Min, have, hm)
	if len(blacklisted) > 0 {
		msg += "; blacklisted: " + strings.Join(blacklisted, ",")
	}
	return fmt.Errorf("%w: %s", ErrMinNP, msg)
}
