package elastic

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/gorovod/gorovod/internal/hosts"
)

var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func TestParseHostLines(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []hosts.Host
		wantErr bool
	}{
		{"a\nb:4\n", []hosts.Host{{Name: "a", Slots: 2}, {Name: "b", Slots: 4}}, false},
		{"# comment\n\n  c:1  \n", []hosts.Host{{Name: "c", Slots: 1}}, false},
		{"[::1]:3\n::1\n", nil, true}, // the same host twice
		{"[::1]\n", []hosts.Host{{Name: "::1", Slots: 2}}, false},
		{"a:x\n", nil, true},
		{"a\na:2\n", nil, true},
		{"", nil, false},
	} {
		got, err := ParseHostLines(tc.in, 2)
		if (err != nil) != tc.wantErr || (!tc.wantErr && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("ParseHostLines(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
		if err != nil && !errors.Is(err, ErrDiscovery) {
			t.Errorf("ParseHostLines(%q): error %v is not ErrDiscovery", tc.in, err)
		}
	}
}

func TestHostManager(t *testing.T) {
	h := func(spec string) []hosts.Host {
		hs, err := ParseHostLines(spec, 1)
		if err != nil {
			t.Fatal(err)
		}
		return hs
	}
	m := NewHostManager()
	steps := []struct {
		found string
		want  HostDiff
		order string
	}{
		{"a:2\nb:2", HostDiff{Added: []string{"a", "b"}}, "a:2,b:2"},
		{"b:2\na:2", HostDiff{}, "a:2,b:2"},
		{"c:1\nb:2\na:2", HostDiff{Added: []string{"c"}}, "a:2,b:2,c:1"},
		{"c:1\nb:4", HostDiff{Removed: []string{"a"}, Resized: []string{"b"}}, "b:4,c:1"},
		{"a:2\nb:4\nc:1", HostDiff{Added: []string{"a"}}, "b:4,c:1,a:2"}, // back, but new
		{"", HostDiff{Removed: []string{"b", "c", "a"}}, "none"},
	}
	for i, s := range steps {
		got := m.Update(h(s.found))
		if !reflect.DeepEqual(got, s.want) || m.String() != s.order {
			t.Fatalf("step %d (%q): diff %+v, hosts %s; want %+v, %s", i, s.found, got, m, s.want, s.order)
		}
	}
	if !NewHostManager().Update(nil).Empty() {
		t.Fatal("empty update of an empty manager is not empty")
	}
}

func TestFailureTrackerTable(t *testing.T) {
	p := FailurePolicy{SlotCooldown: time.Second, HostFailures: 2, Window: 10 * time.Second, CooldownMin: time.Second, CooldownMax: 4 * time.Second}
	a0, a1, b0 := Slot{"a", 0}, Slot{"a", 1}, Slot{"b", 0}
	type check struct {
		at     time.Duration
		slot   Slot
		usable bool
	}
	steps := []struct {
		at       time.Duration
		fail     Slot
		blackl   bool
		cooldown time.Duration
		checks   []check
	}{
		// one failure: only the slot cools down, for SlotCooldown
		{0, a0, false, 0, []check{{0, a0, false}, {0, a1, true}, {999 * time.Millisecond, a0, false}, {time.Second, a0, true}}},
		// a second failure of the host within the window: host out for 1 s
		{2 * time.Second, a1, true, time.Second, []check{{2 * time.Second, a0, false}, {2*time.Second + 999*time.Millisecond, a0, false}, {3 * time.Second, a0, true}, {2 * time.Second, b0, true}}},
		// failures 20 s apart are outside the window: no blacklist
		{30 * time.Second, a0, false, 0, nil},
		{50 * time.Second, a0, false, 0, nil},
		// two close together again: second blacklisting, 2 s
		{51 * time.Second, a1, true, 2 * time.Second, []check{{52 * time.Second, a1, false}, {53 * time.Second, a1, true}}},
		{60 * time.Second, a0, false, 0, nil},
		{60 * time.Second, a0, true, 4 * time.Second, nil},
		{70 * time.Second, a0, false, 0, nil},
		{70 * time.Second, a0, true, 4 * time.Second, []check{{74 * time.Second, a0, true}}}, // clamped at MAX
	}
	tr := NewFailureTracker(p)
	for i, s := range steps {
		v := tr.Failed(at(s.at), s.fail)
		if v.Blacklisted != s.blackl || v.Cooldown != s.cooldown || v.SlotUntil != at(s.at+time.Second) {
			t.Fatalf("step %d: verdict %+v; want blacklisted %v for %v", i, v, s.blackl, s.cooldown)
		}
		for _, c := range s.checks {
			if got := tr.SlotUsable(at(c.at), c.slot); got != c.usable {
				t.Fatalf("step %d: SlotUsable(%v, %v) = %v, want %v", i, c.at, c.slot, got, c.usable)
			}
		}
	}
}

func TestFailureTrackerPermanentAndReadmitted(t *testing.T) {
	tr := NewFailureTracker(FailurePolicy{SlotCooldown: time.Second, CooldownMin: 0})
	tr.Failed(at(0), Slot{"a", 0})
	v := tr.Failed(at(time.Second), Slot{"a", 0})
	if !v.Blacklisted || !v.Permanent || tr.HostUsable(at(24*time.Hour), "a") {
		t.Fatalf("permanent blacklist: verdict %+v, usable a day later: %v", v, tr.HostUsable(at(24*time.Hour), "a"))
	}
	if got := tr.Blacklisted(at(time.Hour)); !reflect.DeepEqual(got, []string{"a"}) {
		t.Fatalf("Blacklisted = %v", got)
	}
	tr = NewFailureTracker(FailurePolicy{SlotCooldown: time.Second, CooldownMin: time.Second, CooldownMax: 4 * time.Second})
	tr.Failed(at(0), Slot{"b", 0})
	tr.Failed(at(0), Slot{"b", 1})
	if next, ok := tr.NextChange(at(0)); !ok || next != at(time.Second) {
		t.Fatalf("NextChange = %v %v, want %v", next, ok, at(time.Second))
	}
	if got := tr.Readmitted(at(500 * time.Millisecond)); got != nil {
		t.Fatalf("Readmitted before the cooldown ended: %v", got)
	}
	if got := tr.Readmitted(at(time.Second)); !reflect.DeepEqual(got, []string{"b"}) {
		t.Fatalf("Readmitted = %v", got)
	}
	if got := tr.Readmitted(at(2 * time.Second)); got != nil {
		t.Fatalf("Readmitted twice: %v", got)
	}
}

func TestParseCooldownRange(t *testing.T) {
	for _, tc := range []struct {
		in       string
		lo, hi   time.Duration
		wantFail bool
	}{
		{"10s,5m", 10 * time.Second, 5 * time.Minute, false},
		{"1s, 4s", time.Second, 4 * time.Second, false},
		{"0", 0, 0, false},
		{"4s,1s", 0, 0, true},
		{"1s", 0, 0, true},
		{"x,1s", 0, 0, true},
		{"0s,1s", 0, 0, true},
	} {
		lo, hi, err := ParseCooldownRange(tc.in)
		if (err != nil) != tc.wantFail || lo != tc.lo || hi != tc.hi {
			t.Errorf("ParseCooldownRange(%q) = %v, %v, %v", tc.in, lo, hi, err)
		}
	}
}

func TestDealRanks(t *testing.T) {
	m := NewHostManager()
	m.Update([]hosts.Host{{Name: "h1", Slots: 4}, {Name: "h2", Slots: 2}})
	w := func(id, host string, idx int, seq uint64) WorkerRef {
		return WorkerRef{ID: id, Slot: Slot{host, idx}, Seq: seq}
	}
	for _, tc := range []struct {
		name    string
		members []WorkerRef
		want    []string
	}{
		{"start order", []WorkerRef{w("d", "h2", 0, 5), w("a", "h1", 0, 1), w("b", "h1", 1, 2)}, []string{"a", "b", "d"}},
		// rank 0 (slot 0) died and was refilled later: the refill is youngest on h1
		{"rank 0 refilled", []WorkerRef{w("b", "h1", 1, 2), w("c", "h1", 2, 3), w("new0", "h1", 0, 9), w("d", "h2", 0, 5)}, []string{"b", "c", "new0", "d"}},
		{"unknown host last", []WorkerRef{w("x", "gone", 0, 0), w("d", "h2", 0, 5)}, []string{"d", "x"}},
	} {
		var got []string
		for _, r := range DealRanks(tc.members, m.Order) {
			got = append(got, r.ID)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: ranks %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSlotsToFill(t *testing.T) {
	known := []hosts.Host{{Name: "h1", Slots: 2}, {Name: "h2", Slots: 2}}
	occ := map[Slot]bool{{"h1", 0}: true}
	cool := map[Slot]bool{{"h2", 0}: true}
	usable := func(s Slot) bool { return !cool[s] }
	if got, want := SlotsToFill(known, occ, usable, 10), []Slot{{"h1", 1}, {"h2", 1}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("SlotsToFill = %v, want %v", got, want)
	}
	if got := SlotsToFill(known, occ, usable, 1); len(got) != 1 || got[0] != (Slot{"h1", 1}) {
		t.Fatalf("SlotsToFill(room 1) = %v", got)
	}
	if got := SlotsToFill(known, occ, usable, 0); got != nil {
		t.Fatalf("SlotsToFill(room 0) = %v", got)
	}
}

func TestMinWatch(t *testing.T) {
	w := MinWatch{Min: 3, Timeout: 3 * time.Second}
	for i, s := range []struct {
		at     time.Duration
		have   int
		expire bool
	}{
		{0, 3, false}, {time.Second, 2, false}, {3*time.Second + 999*time.Millisecond, 2, false},
		{4 * time.Second, 2, true}, {5 * time.Second, 3, false}, {6 * time.Second, 1, false}, {9 * time.Second, 0, true},
	} {
		if got := w.Observe(at(s.at), s.have); got != s.expire {
			t.Fatalf("step %d: Observe(%v, %d) = %v", i, s.at, s.have, got)
		}
	}
	m := NewHostManager()
	m.Update([]hosts.Host{{Name: "h1", Slots: 2}})
	err := w.Err(2, m, []string{"h9"})
	if !errors.Is(err, ErrMinNP) || err.Error() != "elastic: not enough slots: waited 3s for at least 3 workers (--min-np), had 2; hosts seen: h1:2; blacklisted: h9" {
		t.Fatalf("Err = %v", err)
	}
}
