package elastic

import (
	"bufio"
	"fmt"
	"sort"
	"strings"

	"github.com/gorovod/gorovod/internal/hosts"
)

// Slot is one place a worker can run: a host and an index below its slot
// count. A slot outlives the workers that fill it.
type Slot struct {
	Host  string
	Index int
}

func (s Slot) String() string { return fmt.Sprintf("%s[%d]", s.Host, s.Index) }

// ParseHostLines reads discovery output: one "host" or "host:slots" per
// line; blank lines and lines starting with '#' are skipped. A host without
// a count gets defaultSlots. A host listed twice is an error.
func ParseHostLines(text string, defaultSlots int) ([]hosts.Host, error) {
	if defaultSlots < 1 {
		defaultSlots = 1
	}
	var out []hosts.Host
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		h, err := hosts.ParseHost(line)
		if err != nil {
			return nil, fmt.Errorf("%w: discovery line %d: %w", ErrDiscovery, n, err)
		}
		if !hasSlotCount(line) {
			h.Slots = defaultSlots
		}
		if seen[h.Name] {
			return nil, fmt.Errorf("%w: discovery line %d: host %q listed twice", ErrDiscovery, n, h.Name)
		}
		seen[h.Name] = true
		out = append(out, h)
	}
	return out, sc.Err()
}

// HostDiff is what changed between two discoveries.
type HostDiff struct {
	Added   []string // new hosts, in the order discovered
	Removed []string // hosts gone from discovery, in first-seen order
	Resized []string // hosts whose slot count changed
}

// Empty reports whether nothing changed.
func (d HostDiff) Empty() bool { return len(d.Added)+len(d.Removed)+len(d.Resized) == 0 }

// HostManager keeps the discovered hosts in first-seen order and diffs each
// new discovery against them. It is pure: no clock, no I/O.
type HostManager struct {
	seq   uint64
	hosts map[string]hostEntry
}

type hostEntry struct {
	host hosts.Host
	seq  uint64 // first-seen order; a host that left and came back is new
}

// NewHostManager returns an empty manager.
func NewHostManager() *HostManager { return &HostManager{hosts: map[string]hostEntry{}} }

// Update replaces the known hosts by found and returns the difference.
func (m *HostManager) Update(found []hosts.Host) HostDiff {
	var d HostDiff
	now := map[string]bool{}
	for _, h := range found {
		now[h.Name] = true
		old, ok := m.hosts[h.Name]
		switch {
		case !ok:
			m.seq++
			m.hosts[h.Name] = hostEntry{host: h, seq: m.seq}
			d.Added = append(d.Added, h.Name)
		case old.host.Slots != h.Slots:
			old.host.Slots = h.Slots
			m.hosts[h.Name] = old
			d.Resized = append(d.Resized, h.Name)
		}
	}
	for _, h := range m.Hosts() {
		if !now[h.Name] {
			d.Removed = append(d.Removed, h.Name)
			delete(m.hosts, h.Name)
		}
	}
	return d
}

// Hosts returns the known hosts in first-seen order.
func (m *HostManager) Hosts() []hosts.Host {
	es := make([]hostEntry, 0, len(m.hosts))
	for _, e := range m.hosts {
		es = append(es, e)
	}
	sort.Slice(es, func(i, j int) bool { return es[i].seq < es[j].seq })
	out := make([]hosts.Host, len(es))
	for i, e := range es {
		out[i] = e.host
	}
	return out
}

// Order returns the first-seen position of host (lower is older) and
// whether the host is known.
func (m *HostManager) Order(host string) (uint64, bool) {
	e, ok := m.hosts[host]
	return e.seq, ok
}

// Has reports whether slot is within a known host's slot count.
func (m *HostManager) Has(s Slot) bool {
	e, ok := m.hosts[s.Host]
	return ok && s.Index >= 0 && s.Index < e.host.Slots
}

// String lists the hosts as "a:2,b:4" in first-seen order.
func (m *HostManager) String() string {
	var parts []string
	for _, h := range m.Hosts() {
		parts = append(parts, h.String())
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

// hasSlotCount reports whether a parsed host line carried ":slots".
func hasSlotCount(line string) bool {
	if strings.HasPrefix(line, "[") {
		return strings.Contains(line, "]:")
	}
	return strings.Count(line, ":") == 1
}
