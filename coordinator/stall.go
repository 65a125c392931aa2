package coordinator

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// FormatStalls renders stalls as Horovod's "missing ranks" report, better
// sorted: one line per missing rank with up to maxNames tensor names (the
// longest waiting first) and how long the oldest has waited. maxNames <= 0
// means 6.
func FormatStalls(stalls []Stall, maxNames int) string {
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
	}
	return b.String()
}

// StallReport formats the last cycle's stalls with the configured limit of
// names per rank ("" when there is nothing to report).
func (c *Controller) StallReport() string {
	return FormatStalls(c.stalls, c.cfg.MaxStallNamesPerRank)
}
