package hosts

import (
	"strings"
	"testing"
)

func FuzzParseHosts(f *testing.F) {
	for _, s := range []string{"localhost:4", "a:1,b:2", "[::1]:4", "::1", "host:", ":4", "[fe80::1%eth0]:2", "a:1,,b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		hs, err := ParseHosts(spec)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, h := range hs {
			if h.Name == "" || h.Slots < 1 || seen[h.Name] {
				t.Fatalf("ParseHosts(%q) accepted %+v", spec, hs)
			}
			seen[h.Name] = true
			back, err := ParseHost(h.String())
			if err != nil || back != h {
				t.Fatalf("%+v does not round-trip through %q: %+v, %v", h, h.String(), back, err)
			}
		}
		np := min(TotalSlots(hs), 1000)
		slots, err := Assign(hs, np)
		if err != nil || len(slots) != np {
			t.Fatalf("Assign of %d slots: %d, %v", np, len(slots), err)
		}
	})
}

func FuzzParseHostfile(f *testing.F) {
	f.Add("node1 slots=4\n# c\nnode2:2\n[::1]\n")
	f.Add("a slots=\n")
	f.Fuzz(func(t *testing.T, text string) {
		hs, err := ParseHostfile(strings.NewReader(text))
		if err != nil {
			return
		}
		for _, h := range hs {
			if h.Name == "" || h.Slots < 1 {
				t.Fatalf("accepted %+v", h)
			}
		}
	})
}
