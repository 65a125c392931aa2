package launch

import (
	"slices"
	"testing"

	"github.com/gorovod/gorovod/internal/env"
)

func TestWithCPUBinding(t *testing.T) {
	place := func(rank, size string) []string {
		return []string{"A=1", env.BindTo + "=core", env.LocalRank + "=" + rank, env.LocalSize + "=" + size}
	}
	for _, tc := range []struct {
		name    string
		env     []string
		allowed []int
		want    string // "": no list added
	}{
		{"first of two", place("0", "2"), []int{0, 1, 2, 3}, "0,1"},
		{"second of two", place("1", "2"), []int{0, 1, 2, 3}, "2,3"},
		{"uneven share", place("2", "3"), []int{4, 5, 6, 7}, "6"},
		{"alone", place("0", "1"), []int{0, 1}, ""},
		{"outnumbered cores", place("0", "3"), []int{0, 1}, ""},
		{"bind-to none", append(place("0", "2"), env.BindTo+"=none"), []int{0, 1}, ""},
		{"not asked", []string{env.LocalRank + "=0", env.LocalSize + "=2"}, []int{0, 1}, ""},
		{"user's list", append(place("0", "2"), env.CPUList+"=7"), []int{0, 1}, ""},
		{"no place", []string{env.BindTo + "=core"}, []int{0, 1}, ""},
		{"no affinity", place("0", "2"), nil, ""},
	} {
		got := WithCPUBinding(slices.Clone(tc.env), tc.allowed)
		added := ""
		if len(got) > len(tc.env) {
			added = got[len(got)-1]
		}
		if want := env.CPUList + "=" + tc.want; (tc.want == "" && added != "") || (tc.want != "" && added != want) {
			t.Errorf("%s: added %q, want %q", tc.name, added, tc.want)
		}
	}
}
