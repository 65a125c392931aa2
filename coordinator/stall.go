package coordinator

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// RankActivity is what rank 0 last saw a rank do, from what negotiation
// brings it: a request the rank sent (slow path), or a response every
// member of its process set was given (both paths), which the rank then
// executes.
type RankActivity struct {
	What string // "submitted" or "completed"; "" when nothing was seen
	Op   OpType
	Name string
	At   time.Time
}

// saw records that rank did what with name (rank 0).
func (c *Controller) saw(rank int, what string, op OpType, name string) {
	if rank < 0 || rank >= len(c.activity) {
		return
	}
	c.activitySeq++
	c.activity[rank] = RankActivity{What: what, Op: op, Name: name, At: c.cur.now}
	c.activityAt[rank] = c.activitySeq
}

// completion is the last response of a process set given to its members,
// and when in rank 0's sequence of sightings.
type completion struct {
	act RankActivity
	seq uint64
}

// sawCompleted records the last response of rl for every member of its
// process set (rank 0): once per set, not per member, so that the steady
// state costs rank 0 nothing per rank; rankActivity resolves it.
func (c *Controller) sawCompleted(rl *ResponseList) {
	for i := range rl.Responses {
		r := &rl.Responses[i]
		if r.Error != "" || len(r.Names) == 0 {
			continue
		}
		if c.completed == nil {
			c.completed = make(map[int]completion)
		}
		c.activitySeq++
		c.completed[r.ProcessSet] = completion{
			act: RankActivity{What: "completed", Op: r.Op, Name: r.Names[len(r.Names)-1], At: c.cur.now},
			seq: c.activitySeq,
		}
	}
}

// rankActivity is the latest of what rank submitted and what its sets
// completed.
func (c *Controller) rankActivity(rank int) RankActivity {
	a, seq := c.activity[rank], c.activityAt[rank]
	for set, done := range c.completed {
		if done.seq > seq && isMember(c.sets[set], rank, c.cfg.Size) {
			a, seq = done.act, done.seq
		}
	}
	return a
}

// Activity returns, on rank 0, what each rank was last seen doing.
func (c *Controller) Activity() []RankActivity {
	if c.activity == nil {
		return nil
	}
	out := make([]RankActivity, len(c.activity))
	for r := range out {
		out[r] = c.rankActivity(r)
	}
	return out
}

// FormatStalls renders stalls as Horovod's "missing ranks" report, better
// sorted: one line per missing rank with up to maxNames tensor names (the
// longest waiting first) and how long the oldest has waited. maxNames <= 0
// means 6.
func FormatStalls(stalls []Stall, maxNames int) string {
	return formatStalls(stalls, maxNames, nil)
}

// formatStalls is FormatStalls with, when lastSeen is set, what each
// missing rank was last seen doing at the end of its line.
func formatStalls(stalls []Stall, maxNames int, lastSeen func(rank int) string) string {
	if len(stalls) == 0 {
		return ""
	}
	if maxNames <= 0 {
		maxNames = 6
	}
	type missing struct {
		names   []string
		longest time.Duration
	}
	byRank := map[int]*missing{}
	var ranks []int
	sorted := slices.Clone(stalls)
	slices.SortStableFunc(sorted, func(a, b Stall) int { return int(b.Waiting - a.Waiting) })
	for _, s := range sorted {
		for _, r := range s.MissingRanks {
			m := byRank[r]
			if m == nil {
				m = &missing{}
				byRank[r] = m
				ranks = append(ranks, r)
			}
			m.names = append(m.names, s.Name)
			m.longest = max(m.longest, s.Waiting)
		}
	}
	slices.Sort(ranks)
	var b strings.Builder
	fmt.Fprintf(&b, "%d tensor(s) submitted by some ranks but not others; missing ranks:", len(stalls))
	for _, r := range ranks {
		m := byRank[r]
		names := m.names
		more := ""
		if len(names) > maxNames {
			more = fmt.Sprintf(" and %d more", len(names)-maxNames)
			names = names[:maxNames]
		}
		fmt.Fprintf(&b, "\n  rank %d: %s%s (waiting up to %v)", r, strings.Join(names, ", "), more, m.longest)
		if lastSeen != nil {
			fmt.Fprintf(&b, "; %s", lastSeen(r))
		}
	}
	return b.String()
}

// StallReport formats the last cycle's stalls with the configured limit of
// names per rank and, for each missing rank, the last op rank 0 saw it
// submit or complete and how long before this cycle ("" when there is
// nothing to report).
func (c *Controller) StallReport() string {
	return formatStalls(c.stalls, c.cfg.MaxStallNamesPerRank, c.lastSeen)
}

func (c *Controller) lastSeen(rank int) string {
	if rank < 0 || rank >= len(c.activity) {
		return "nothing seen from it yet"
	}
	a := c.rankActivity(rank)
	if a.What == "" {
		return "nothing seen from it yet"
	}
	return fmt.Sprintf("last %s %s %q %v ago", a.What, a.Op, a.Name, c.stallsAt.Sub(a.At).Round(time.Millisecond))
}
