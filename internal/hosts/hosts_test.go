package hosts

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseHosts(t *testing.T) {
	cases := []struct {
		spec string
		want []Host
		err  string // substring of the error; "" = success
	}{
		{"localhost:4", []Host{{"localhost", 4}}, ""},
		{"localhost", []Host{{"localhost", 1}}, ""},
		{"host1:4,host2:2", []Host{{"host1", 4}, {"host2", 2}}, ""},
		{" host1:4 , host2 ", []Host{{"host1", 4}, {"host2", 1}}, ""},
		{"10.0.0.1:8", []Host{{"10.0.0.1", 8}}, ""},
		{"[::1]:4", []Host{{"::1", 4}}, ""},
		{"[::1]", []Host{{"::1", 1}}, ""},
		{"::1", []Host{{"::1", 1}}, ""},
		{"fe80::1%eth0", []Host{{"fe80::1%eth0", 1}}, ""},
		{"[fe80::1]:2,node-b.example.com:3", []Host{{"fe80::1", 2}, {"node-b.example.com", 3}}, ""},
		{"", nil, "empty host list"},
		{"  ", nil, "empty host list"},
		{"host:", nil, "missing slot count"},
		{"host:x", nil, `slot count "x" is not a number`},
		{"host:0", nil, "slot count 0 must be between 1 and 65536"},
		{"host:-2", nil, "slot count -2 must be between 1 and 65536"},
		{":4", nil, "missing host name"},
		{"host1:2,", nil, "empty host entry"},
		{"a:1,,b:1", nil, "empty host entry"},
		{"a:1,a:2", nil, `host "a" listed twice`},
		{"[::1", nil, "missing ']'"},
		{"[::1]4", nil, "unexpected"},
		{"[node]:2", nil, "not an IP address"},
		{"a:b:c", nil, "not host:slots nor an IPv6 address"},
		{"bad/name:2", nil, "contains '/'"},
		{"host:2x", nil, "is not a number"},
		{"host:65537", nil, "slot count 65537 must be between 1 and 65536"},
		{"host:99999999999999999999", nil, "is not a number"},
		{"user@node1:2,localhost:1", []Host{{"user@node1", 2}, {"localhost", 1}}, ""},
		{"[fe80::1%eth0]:2", []Host{{"fe80::1%eth0", 2}}, ""},
		{"localhost:2,127.0.0.1:2,[::1]:2", []Host{{"localhost", 2}, {"127.0.0.1", 2}, {"::1", 2}}, ""},
		{"h;reboot:1", nil, `contains ';'`},
		{"$(id):1", nil, `contains '$'`},
		{"a b:1", nil, `contains ' '`},
		{"[::1]:2,[::1]:3", nil, `host "::1" listed twice`},
		{"host1:4,,", nil, "entry 2 of 3"},
	}
	for _, tc := range cases {
		got, err := ParseHosts(tc.spec)
		if tc.err != "" {
			if err == nil {
				t.Errorf("ParseHosts(%q) = %v, want error containing %q", tc.spec, got, tc.err)
				continue
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseHosts(%q) error %q, want ErrInvalid containing %q", tc.spec, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseHosts(%q): %v", tc.spec, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseHosts(%q) = %v, want %v", tc.spec, got, tc.want)
		}
	}
}

func TestHostString(t *testing.T) {
	for _, tc := range []struct {
		h    Host
		want string
	}{{Host{"a", 2}, "a:2"}, {Host{"::1", 4}, "[::1]:4"}} {
		if got := tc.h.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.h, got, tc.want)
		}
		back, err := ParseHost(tc.want)
		if err != nil || back != tc.h {
			t.Errorf("ParseHost(%q) = %v, %v; want %v", tc.want, back, err, tc.h)
		}
	}
}

func TestParseHostfile(t *testing.T) {
	cases := []struct {
		name, text string
		want       []Host
		err        string
	}{
		{"formats", "# cluster\nnode1 slots=4\n\nnode2:2   # two GPUs\nnode3\n[::1]:3\n::2 slots=2\n",
			[]Host{{"node1", 4}, {"node2", 2}, {"node3", 1}, {"::1", 3}, {"::2", 2}}, ""},
		{"crlf and tabs", "node1\tslots=2\r\nnode2\r\n", []Host{{"node1", 2}, {"node2", 1}}, ""},
		{"empty", "# nothing\n\n", nil, "lists no hosts"},
		{"bad slots", "node1 slots=4\nnode2 slots=x\n", nil, `line 2: invalid host spec: slots="x" is not a number`},
		{"zero slots", "node1 slots=0\n", nil, "line 1: invalid host spec: slots=0 must be between 1 and 65536"},
		{"unknown key", "node1 cpus=4\n", nil, `line 1: invalid host spec: unknown key "cpus" in "cpus=4"`},
		{"no key", "node1 4\n", nil, `line 1: invalid host spec: unexpected "4" (want slots=N or max_slots=N)`},
		{"openmpi keys", "n1 slots=2 max_slots=4\nn2 max_slots=3\nn3 max-slots=2 slots=2\nn4 count=5\nn5 cpu=6\n",
			[]Host{{"n1", 2}, {"n2", 3}, {"n3", 2}, {"n4", 5}, {"n5", 6}}, ""},
		{"slots over max", "n1 slots=4 max_slots=2\n", nil, "line 1: invalid host spec: slots=4 is more than max_slots=2"},
		{"max twice", "n1 max_slots=4 max_slots=2\n", nil, "max_slots given twice"},
		{"bad max", "n1 max_slots=0\n", nil, "max_slots=0 must be between 1 and 65536"},
		{"slots and count", "n1 slots=1 count=2\n", nil, "slot count given twice"},
		{"twice", "node1:2 slots=4\n", nil, "line 1: invalid host spec: slot count given twice"},
		{"twice keys", "node1 slots=2 slots=4\n", nil, "slot count given twice"},
		{"bad entry", "\n\nnode1:\n", nil, "line 3: invalid host spec"},
		{"duplicate", "a\nb\na slots=2\n", nil, `line 3: invalid host spec: host "a" already listed on line 1`},
		{"missing name", "  :4\n", nil, "line 1: invalid host spec: \":4\": missing host name"},
		{"unterminated ipv6", "node1\n[::1 slots=2\n", nil, "line 2: invalid host spec: \"[::1\": missing ']'"},
		{"shell characters", "node1\nnode`2`\n", nil, "line 2: invalid host spec"},
		{"slots without value", "node1 slots=\n", nil, `slots="" is not a number`},
		{"user and ipv6", "root@node1 slots=2\n[::1] slots=3\n", []Host{{"root@node1", 2}, {"::1", 3}}, ""},
	}
	for _, tc := range cases {
		got, err := ParseHostfile(strings.NewReader(tc.text))
		if tc.err != "" {
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: got %v, %v; want ErrInvalid containing %q", tc.name, got, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}

func TestAssign(t *testing.T) {
	got, err := Assign([]Host{{"a", 2}, {"b", 3}}, 4)
	if err != nil {
		t.Fatal(err)
	}
	want := []Slot{
		{Rank: 0, Host: "a", LocalRank: 0, LocalSize: 2, CrossRank: 0, CrossSize: 2},
		{Rank: 1, Host: "a", LocalRank: 1, LocalSize: 2, CrossRank: 0, CrossSize: 2},
		{Rank: 2, Host: "b", LocalRank: 0, LocalSize: 2, CrossRank: 1, CrossSize: 2},
		{Rank: 3, Host: "b", LocalRank: 1, LocalSize: 2, CrossRank: 1, CrossSize: 2},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Assign = %+v\nwant %+v", got, want)
	}

	// Uneven hosts: local rank 2 exists only on b, so its cross group is b alone.
	got, err = Assign([]Host{{"a", 2}, {"b", 3}}, 5)
	if err != nil {
		t.Fatal(err)
	}
	if s := got[4]; s.Host != "b" || s.LocalRank != 2 || s.LocalSize != 3 || s.CrossRank != 0 || s.CrossSize != 1 {
		t.Fatalf("rank 4 = %+v", s)
	}
	if s := got[2]; s.CrossRank != 1 || s.CrossSize != 2 || s.LocalSize != 3 {
		t.Fatalf("rank 2 = %+v", s)
	}

	for _, tc := range []struct {
		hosts []Host
		np    int
		err   string
	}{
		{[]Host{{"localhost", 4}}, 5, "5 processes requested but only 4 slots available"},
		{[]Host{{"localhost", 4}}, 0, "0 processes requested"},
		{[]Host{{"localhost", 4}}, -1, "-1 processes requested"},
		{nil, 1, "no hosts"},
		{[]Host{{"a", 0}}, 0, "need at least 1"},
		{[]Host{{"a", 1}, {"b", 0}}, 1, `host "b" has 0 slots`},
	} {
		if _, err := Assign(tc.hosts, tc.np); err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Assign(%v, %d) error %v, want %q", tc.hosts, tc.np, err, tc.err)
		}
	}
}

func TestLayoutInterleavedHosts(t *testing.T) {
	// A launcher that places ranks round robin still gets consistent local ranks.
	got := Layout([]string{"x", "y", "x", "y", "x"})
	want := []Slot{
		{Rank: 0, Host: "x", LocalRank: 0, LocalSize: 3, CrossRank: 0, CrossSize: 2},
		{Rank: 1, Host: "y", LocalRank: 0, LocalSize: 2, CrossRank: 1, CrossSize: 2},
		{Rank: 2, Host: "x", LocalRank: 1, LocalSize: 3, CrossRank: 0, CrossSize: 2},
		{Rank: 3, Host: "y", LocalRank: 1, LocalSize: 2, CrossRank: 1, CrossSize: 2},
		{Rank: 4, Host: "x", LocalRank: 2, LocalSize: 3, CrossRank: 0, CrossSize: 1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Layout = %+v\nwant %+v", got, want)
	}
}
