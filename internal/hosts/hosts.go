package hosts

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// ErrInvalid marks a host spec, hostfile or assignment that cannot be used.
var ErrInvalid = errors.New("invalid host spec")

// MaxSlots bounds a host's slot count, so totals never overflow.
const MaxSlots = 1 << 16

// Host is one machine of a job and how many processes it may run.
type Host struct {
	Name  string // host name or IP address (IPv6 without brackets)
	Slots int    // >= 1
}

// String renders h in the -H syntax, bracketing IPv6 addresses.
func (h Host) String() string {
	name := h.Name
	if strings.Contains(name, ":") {
		name = "[" + name + "]"
	}
	return name + ":" + strconv.Itoa(h.Slots)
}

// ParseHost parses one -H entry: "host:4", "host" (1 slot), "[::1]:4",
// "[::1]" or a bare IPv6 address such as "::1" (1 slot).
func ParseHost(spec string) (Host, error) {
	h, _, err := parseHost(spec)
	return h, err
}

// parseHost also reports whether the spec carried an explicit slot count.
func parseHost(spec string) (Host, bool, error) {
	s := strings.TrimSpace(spec)
	if s == "" {
		return Host{}, false, fmt.Errorf("%w: empty host entry", ErrInvalid)
	}
	var name, slots string
	hasSlots := false
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return Host{}, false, fmt.Errorf("%w: %q: missing ']' after IPv6 address", ErrInvalid, spec)
		}
		name, rest := s[1:end], s[end+1:]
		if rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return Host{}, false, fmt.Errorf("%w: %q: unexpected %q after ']' (want :SLOTS)", ErrInvalid, spec, rest)
			}
			slots, hasSlots = rest[1:], true
		}
		if !isIP(name) {
			return Host{}, false, fmt.Errorf("%w: %q: %q inside brackets is not an IP address", ErrInvalid, spec, name)
		}
		h, err := finish(spec, name, slots, hasSlots)
		return h, hasSlots, err
	case strings.Count(s, ":") > 1:
		// A bare IPv6 address cannot carry a slot count: it would be ambiguous.
		if !isIP(s) {
			return Host{}, false, fmt.Errorf("%w: %q is not host:slots nor an IPv6 address (write [addr]:slots)", ErrInvalid, spec)
		}
		name = s
	default:
		name = s
		if i := strings.IndexByte(s, ':'); i >= 0 {
			name, slots, hasSlots = s[:i], s[i+1:], true
		}
	}
	h, err := finish(spec, name, slots, hasSlots)
	return h, hasSlots, err
}

func finish(spec, name, slots string, hasSlots bool) (Host, error) {
	if name == "" {
		return Host{}, fmt.Errorf("%w: %q: missing host name", ErrInvalid, spec)
	}
	if err := checkName(name); err != nil {
		return Host{}, fmt.Errorf("%w: %q: %v", ErrInvalid, spec, err)
	}
	h := Host{Name: name, Slots: 1}
	if !hasSlots {
		return h, nil
	}
	if slots == "" {
		return Host{}, fmt.Errorf("%w: %q: missing slot count after ':'", ErrInvalid, spec)
	}
	n, err := strconv.Atoi(slots)
	if err != nil {
		return Host{}, fmt.Errorf("%w: %q: slot count %q is not a number", ErrInvalid, spec, slots)
	}
	if n < 1 || n > MaxSlots {
		return Host{}, fmt.Errorf("%w: %q: slot count %d must be between 1 and %d", ErrInvalid, spec, n, MaxSlots)
	}
	h.Slots = n
	return h, nil
}

// checkName refuses characters that cannot be in a host name and would make
// the spec ambiguous or reach a shell later (ssh).
func checkName(name string) error {
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '.', r == '-', r == '_', r == ':', r == '@', r == '%':
		default:
			return fmt.Errorf("host name %q contains %q", name, r)
		}
	}
	return nil
}

// ParseHosts parses a comma-separated -H list such as "host1:4,host2:4".
// A host may appear only once.
func ParseHosts(spec string) ([]Host, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, fmt.Errorf("%w: empty host list", ErrInvalid)
	}
	var out []Host
	seen := map[string]int{}
	parts := strings.Split(spec, ",")
	for i, part := range parts {
		h, err := ParseHost(part)
		if err != nil {
			if len(parts) == 1 {
				return nil, err
			}
			return nil, fmt.Errorf("entry %d of %d: %w", i+1, len(parts), err)
		}
		if j, dup := seen[h.Name]; dup {
			return nil, fmt.Errorf("%w: host %q listed twice (entries %d and %d); give its total slot count once", ErrInvalid, h.Name, j, i+1)
		}
		seen[h.Name] = i + 1
		out = append(out, h)
	}
	return out, nil
}

// ParseHostfile reads one host per line: "host slots=4", "host:4" or
// "host" (1 slot). OpenMPI's keys are understood: count= and cpu= mean
// slots=; max_slots=M (or max-slots) caps slots, and alone gives M slots. '#' starts a comment; blank lines are skipped. Errors
// name the line.
func ParseHostfile(r io.Reader) ([]Host, error) {
	var out []Host
	seen := map[string]int{}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		h, err := parseHostfileLine(fields)
		if err != nil {
			return nil, fmt.Errorf("hostfile line %d: %w", line, err)
		}
		if prev, dup := seen[h.Name]; dup {
			return nil, fmt.Errorf("hostfile line %d: %w: host %q already listed on line %d", line, ErrInvalid, h.Name, prev)
		}
		seen[h.Name] = line
		out = append(out, h)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading hostfile after line %d: %w", line, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: hostfile lists no hosts", ErrInvalid)
	}
	return out, nil
}

func parseHostfileLine(fields []string) (Host, error) {
	h, explicit, err := parseHost(fields[0])
	if err != nil {
		return Host{}, err
	}
	maxSlots := 0
	for _, f := range fields[1:] {
		key, val, ok := strings.Cut(f, "=")
		switch {
		case !ok:
			return Host{}, fmt.Errorf("%w: unexpected %q (want slots=N or max_slots=N)", ErrInvalid, f)
		case key == "slots" || key == "count" || key == "cpu":
			if explicit {
				return Host{}, fmt.Errorf("%w: slot count given twice (%q and %q)", ErrInvalid, fields[0], f)
			}
			if h.Slots, err = slotValue(key, val); err != nil {
				return Host{}, err
			}
			explicit = true
		case key == "max_slots" || key == "max-slots":
			if maxSlots != 0 {
				return Host{}, fmt.Errorf("%w: %s given twice", ErrInvalid, key)
			}
			if maxSlots, err = slotValue(key, val); err != nil {
				return Host{}, err
			}
		default:
			return Host{}, fmt.Errorf("%w: unknown key %q in %q (want slots=N or max_slots=N)", ErrInvalid, key, f)
		}
	}
	switch {
	case maxSlots == 0:
	case !explicit: // OpenMPI's cap alone: gorun never oversubscribes, so that many
		h.Slots = maxSlots
	case h.Slots > maxSlots:
		return Host{}, fmt.Errorf("%w: slots=%d is more than max_slots=%d", ErrInvalid, h.Slots, maxSlots)
	}
	return h, nil
}

func slotValue(key, val string) (int, error) {
	n, err := strconv.Atoi(val)
	if err != nil {
		return 0, fmt.Errorf("%w: %s=%q is not a number", ErrInvalid, key, val)
	}
	if n < 1 || n > MaxSlots {
		return 0, fmt.Errorf("%w: %s=%d must be between 1 and %d", ErrInvalid, key, n, MaxSlots)
	}
	return n, nil
}

// TotalSlots is the sum of the hosts' slots.
func TotalSlots(hosts []Host) int {
	n := 0
	for _, h := range hosts {
		n += h.Slots
	}
	return n
}

// Slot is one rank's place in a job.
type Slot struct {
	Rank      int
	Host      string
	LocalRank int // index among the ranks on Host
	LocalSize int // ranks on Host
	CrossRank int // index of Host among the hosts that have LocalRank
	CrossSize int // hosts that have LocalRank
}

// Assign gives np ranks to hosts, filling each host's slots in order.
func Assign(hosts []Host, np int) ([]Slot, error) {
	if np < 1 {
		return nil, fmt.Errorf("%w: %d processes requested, need at least 1", ErrInvalid, np)
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("%w: no hosts", ErrInvalid)
	}
	if total := TotalSlots(hosts); total < np {
		return nil, fmt.Errorf("%w: %d processes requested but only %d slots available", ErrInvalid, np, total)
	}
	names := make([]string, 0, np)
	for _, h := range hosts {
		if h.Slots < 1 || h.Slots > MaxSlots {
			return nil, fmt.Errorf("%w: host %q has %d slots (want 1 to %d)", ErrInvalid, h.Name, h.Slots, MaxSlots)
		}
		for i := 0; i < h.Slots && len(names) < np; i++ {
			names = append(names, h.Name)
		}
	}
	return Layout(names), nil
}

// Layout computes every rank's slot from the host each rank runs on
// (hostOfRank[r] is rank r's host). Hosts are ordered by their lowest rank.
// Rendezvous uses it so that workers started by any launcher agree on the
// same local and cross ranks.
func Layout(hostOfRank []string) []Slot {
	hostIdx := map[string]int{}
	var perHost [][]int // ranks per host, ascending
	slots := make([]Slot, len(hostOfRank))
	for r, name := range hostOfRank {
		i, ok := hostIdx[name]
		if !ok {
			i = len(perHost)
			hostIdx[name] = i
			perHost = append(perHost, nil)
		}
		slots[r] = Slot{Rank: r, Host: name, LocalRank: len(perHost[i])}
		perHost[i] = append(perHost[i], r)
	}
	// crossSize[l] = hosts having local rank l; crossRank follows host order.
	var crossSize []int
	for _, ranks := range perHost {
		for l, r := range ranks {
			if l == len(crossSize) {
				crossSize = append(crossSize, 0)
			}
			slots[r].LocalSize = len(ranks)
			slots[r].CrossRank = crossSize[l]
			crossSize[l]++
		}
	}
	for r := range slots {
		slots[r].CrossSize = crossSize[slots[r].LocalRank]
	}
	return slots
}

// isIP accepts IPv4 and IPv6 addresses, including IPv6 zones ("fe80::1%eth0").
func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}
